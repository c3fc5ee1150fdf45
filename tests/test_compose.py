"""compose/: Prometheus config and rules pass promtool, the rule tests pass, the dashboards and
rules name only families we document, the compose file hangs together, Alertmanager's config
passes amtool and the example webhook receiver checks signatures."""

from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import pytest

from server.delivery.alertmanager import DeliveryError
from server.delivery.models import Delivery
from server.delivery.session import Session
from server.delivery.webhook import Webhook
from tests.stack import RedisServer, free_port
from tests.waiting import until_accepted

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose"
PROMETHEUS = COMPOSE / "prometheus"
DASHBOARDS = sorted((COMPOSE / "grafana" / "dashboards").glob("*.json"))
# Families of the exporters and of Prometheus itself that dashboards and rules may use.
FOREIGN = {
    "up",
    "pg_up",
    "redis_memory_used_bytes",
    "redis_memory_max_bytes",
    "redis_connected_clients",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
}
_OURS = re.compile(r"\binfrawatch[_:][a-z0-9_:]+")
_FOREIGN = re.compile(r"\b(up|pg_[a-z_]+|redis_[a-z_]+|process_[a-z_]+)\s*[{\[)]")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
    )


def yaml(path: Path) -> Any:
    """YAML through the yq command (Debian package ``yq``): no YAML library in the venv."""
    done = subprocess.run(["yq", "-c", ".", str(path)], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def documented_families() -> dict[str, str]:
    text = (ROOT / "docs" / "observability.md").read_text()
    rows = re.findall(r"^\| `(infrawatch_[a-z_]+)` \| (counter|gauge|histogram) \|", text, re.M)
    return dict(rows)


def recorded_names() -> set[str]:
    return set(re.findall(r"record: (\S+)", (PROMETHEUS / "alerts.yml").read_text()))


def our_names(expr: str) -> set[str]:
    """Family names of ours in a PromQL expression (histogram series folded to the family)."""
    names = set()
    for name in _OURS.findall(expr):
        if ":" not in name:
            name = re.sub(r"_(bucket|count|sum)$", "", name)
        names.add(name)
    return names


def dashboard_exprs() -> dict[str, list[str]]:
    exprs: dict[str, list[str]] = {}
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        exprs[path.stem] = [t["expr"] for p in board["panels"] for t in p["targets"]]
    return exprs


# --- promtool ---


def test_promtool_check_config() -> None:
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_check_rules() -> None:
    done = promtool("check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"SUCCESS: \d+ rules found", done.stdout)


def test_promtool_test_rules() -> None:
    done = promtool("test", "rules", "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_of_the_rules_has_a_unit_test() -> None:
    alerts = set(re.findall(r"- alert: (\w+)", (PROMETHEUS / "alerts.yml").read_text()))
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS / "alerts_test.yml").read_text()))
    assert len(alerts) >= 10
    assert alerts - tested == set()


# --- names: docs, rules and dashboards agree ---


def test_rules_name_only_documented_families() -> None:
    known = set(documented_families()) | recorded_names()
    text = (PROMETHEUS / "alerts.yml").read_text()
    exprs = re.findall(r"expr: \|?\s*((?:.|\n)*?)(?=\n\s+(?:for|labels|- record|- alert):)", text)
    assert exprs
    for expr in exprs:
        assert our_names(expr) <= known, expr
        assert set(_FOREIGN.findall(expr)) <= FOREIGN, expr


def test_dashboards_are_grafana_json_naming_documented_families() -> None:
    families = documented_families()
    assert len(families) == 68  # the documented families (docs/observability.md)
    known = set(families) | recorded_names()
    assert {p.stem for p in DASHBOARDS} == {
        "overview",
        "breakers",
        "cache",
        "pools-replicas",
        "redis-health",
        "partitions",
        "watched-postgres",
    }
    used: set[str] = set()
    uids = set()
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        uids.add(board["uid"])
        assert board["title"] and board["schemaVersion"] >= 36
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), path.name
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == "prometheus"
            assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
            for target in panel["targets"]:
                names = our_names(target["expr"])
                assert names <= known, (path.name, target["expr"])
                assert set(_FOREIGN.findall(target["expr"])) <= FOREIGN, target["expr"]
                used |= names
    assert len(uids) == len(DASHBOARDS)
    # Every documented family is on some dashboard.
    assert set(families) - used == set()


def test_grafana_provisioning_matches_the_dashboards() -> None:
    source = yaml(COMPOSE / "grafana/provisioning/datasources/prometheus.yml")
    assert [d["uid"] for d in source["datasources"]] == ["prometheus"]
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml(COMPOSE / "grafana/provisioning/dashboards/infrawatch.yml")
    path = provider["providers"][0]["options"]["path"]
    compose = yaml(COMPOSE / "docker-compose.yml")
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{path}:ro" in mounts


# --- the compose file ---


def test_compose_file_hangs_together() -> None:
    compose = yaml(COMPOSE / "docker-compose.yml")
    services: dict[str, Any] = compose["services"]
    assert {
        "infrawatch",
        "postgres-primary",
        "postgres-replica",
        "pgbouncer",
        "redis-master",
        "redis-replica-1",
        "redis-replica-2",
        "sentinel-1",
        "sentinel-2",
        "sentinel-3",
        "prometheus",
        "alertmanager",
        "postgres-exporter-primary",
        "postgres-exporter-replica",
        "pgbouncer-exporter",
        "redis-exporter",
        "grafana",
    } <= set(services)
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (COMPOSE / source).exists(), (name, source)
            else:
                assert source in compose["volumes"], (name, source)
    build = services["infrawatch"]["build"]
    assert (COMPOSE / build["context"] / build["dockerfile"]).is_file()
    # Prometheus scrapes only hosts the compose file defines.
    config = yaml(PROMETHEUS / "prometheus.yml")
    hosts = set()
    for job in config["scrape_configs"]:
        for group in job.get("static_configs", []):
            hosts |= {re.sub(r"^redis://", "", t).split(":")[0] for t in group["targets"]}
    assert hosts - {"localhost"} <= set(services), hosts - set(services)
    # The service's contract variables are set for the stack.
    env = services["infrawatch"]["environment"]
    assert {"DATABASE_URL", "REDIS_SENTINEL_HOSTS", "PGBOUNCER_ADMIN_URL"} <= set(env)
    assert env["REDIS_SENTINEL_HOSTS"].count(",") == 2


def test_pgbouncer_ini_is_transaction_pooling_with_exporter_compatibility() -> None:
    ini = configparser.ConfigParser(inline_comment_prefixes=(";",))
    ini.read(COMPOSE / "pgbouncer" / "pgbouncer.ini")
    settings = ini["pgbouncer"]
    assert settings["pool_mode"] == "transaction"
    assert "extra_float_digits" in settings["ignore_startup_parameters"]
    assert "infrawatch" in settings["stats_users"]
    assert ini["databases"]["app"].startswith("host=postgres-primary")


class ComposeRedis(RedisServer):
    """A harness Redis that loads compose/redis/redis.conf first; the harness's own lines
    (loopback, free port, temporary dir, no persistence) come after it and win.

    The file's text is copied into the server's own config rather than included: the server
    runs as the stack's service account, which cannot read a checkout in a private folder."""

    def conf(self) -> str:
        return (COMPOSE / "redis" / "redis.conf").read_text() + "\n" + super().conf()


def test_redis_conf_runs_in_a_real_redis_server(stack_dir: Path) -> None:
    with ComposeRedis(stack_dir) as server:
        policy = server.cli("CONFIG", "GET", "maxmemory-policy")
        assert policy == {"maxmemory-policy": "volatile-lru"}
        assert server.cli("CONFIG", "GET", "maxmemory") == {"maxmemory": str(256 * 1024 * 1024)}


@pytest.mark.parametrize("script", ["primary-init.sh", "replica-entrypoint.sh"])
def test_postgres_scripts_are_valid_bash(script: str) -> None:
    done = subprocess.run(
        ["bash", "-n", str(COMPOSE / "postgres" / script)], capture_output=True, timeout=30
    )
    assert done.returncode == 0, done.stderr


# --- Alertmanager and the example webhook receiver ---


def test_amtool_check_config() -> None:
    done = subprocess.run(
        ["amtool", "check-config", str(COMPOSE / "alertmanager" / "alertmanager.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_compose_wires_alert_delivery() -> None:
    services: dict[str, Any] = yaml(COMPOSE / "docker-compose.yml")["services"]
    env = services["infrawatch"]["environment"]
    assert env["ALERTMANAGER_URLS"] == "http://alertmanager:9093"
    assert env["ALERT_WEBHOOK_URLS"] == "http://webhook-receiver:8000/hook"
    assert "ALERT_WEBHOOK_SECRET" in env
    # The election's session lock goes to PostgreSQL itself, not through PgBouncer.
    assert "@postgres-primary:5432/" in env["ALERT_ELECTION_DATABASE_URL"]
    receiver = services["webhook-receiver"]
    assert receiver["environment"]["WEBHOOK_SECRET"] == env["ALERT_WEBHOOK_SECRET"]
    config = yaml(COMPOSE / "alertmanager" / "alertmanager.yml")
    [hook] = config["receivers"][0]["webhook_configs"]
    assert hook["url"] == "http://webhook-receiver:8000/alertmanager"
    assert {"alertname", "subject", "occurrence"} <= set(config["route"]["group_by"])


EXAMPLE_SECRET = "compose-example-secret-0123"


@pytest.fixture
def example_receiver(tmp_path: Path) -> Iterator[tuple[int, TextIO]]:
    """compose/webhook-receiver/receiver.py on a free port: (port, its output)."""
    port = free_port()
    with (tmp_path / "receiver.log").open("w+") as log:
        process = subprocess.Popen(
            [sys.executable, str(COMPOSE / "webhook-receiver" / "receiver.py")],
            env={"WEBHOOK_SECRET": EXAMPLE_SECRET, "PORT": str(port), "PATH": os.environ["PATH"]},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield port, log
        finally:
            process.terminate()
            process.wait(timeout=10)


async def test_the_example_receiver_accepts_signed_events_once_and_refuses_forgeries(
    example_receiver: tuple[int, TextIO],
) -> None:
    port, log = example_receiver
    secret = EXAMPLE_SECRET
    session = Session()
    session.open()
    try:
        url = f"http://127.0.0.1:{port}/hook"
        payload = {
            "id": "0b5c7e4e-1111-4222-8333-444455556666",
            "kind": "fired",
            "at": "2026-01-01T00:00:00+00:00",
            "instance": "web-1",
            "previous_level": None,
            "alert": {"fingerprint": "delta:orders", "level": "warning", "message": "m"},
        }
        delivery = Delivery(1, f"webhook:{url}", "a1", "fired", 0, payload)
        good = Webhook(session, url, secret, timeout=2.0, dashboard_url=None)
        await until_accepted(
            lambda: _delivered(good, delivery), bool, what="the receiver answering"
        )
        await good.deliver(delivery)  # the same event again: accepted, not handled twice
        forged = Webhook(session, url, "not-the-secret-0123456", timeout=2.0, dashboard_url=None)
        with pytest.raises(DeliveryError, match="HTTP 401") as refused:
            await forged.deliver(delivery)
        assert refused.value.permanent
    finally:
        await session.close()
    log.seek(0)
    lines = [json.loads(line) for line in log if line.startswith("{")]
    assert lines == [
        {
            "event": "fired",
            "id": payload["id"],
            "alert": "delta:orders",
            "level": "warning",
            "message": "m",
        }
    ]


async def _delivered(webhook: Webhook, delivery: Delivery) -> bool:
    try:
        await webhook.deliver(delivery)
    except DeliveryError:
        return False
    return True
