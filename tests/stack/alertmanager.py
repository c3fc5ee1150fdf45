"""A real Alertmanager (Debian's ``prometheus-alertmanager``), alone (no cluster), on a free
loopback port, its data in its own directory; ``stop()`` then ``start()`` brings it back on
the same port with its silences (they live in ``--storage.path``).

The config routes every alert to one webhook receiver (``notify_url``, ours in the tests) at
once (``group_wait: 0s``), so a test can see what Alertmanager would page; ``make run`` starts
one without a receiver (its UI shows what infrawatch pushed).
"""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import orjson

from tests.stack.ports import HOST
from tests.stack.process import Process, find_binary, make_dir, write_file
from tests.stack.server import StackServer

BINARY = "prometheus-alertmanager"


def alertmanager_config(notify_url: str | None) -> str:
    """A minimal config: one route, one webhook receiver (none without ``notify_url``: alerts
    then only show in Alertmanager's UI), no waiting."""
    if notify_url is None:
        return (
            "route:\n  receiver: ui\n  group_by: ['alertname', 'subject', 'occurrence']\n"
            "receivers:\n  - name: ui\n"
        )
    return (
        "route:\n"
        "  receiver: pager\n"
        "  group_by: ['alertname', 'subject', 'occurrence']\n"
        "  group_wait: 0s\n"
        "  group_interval: 1s\n"
        "  repeat_interval: 1h\n"
        "receivers:\n"
        "  - name: pager\n"
        "    webhook_configs:\n"
        f"      - url: '{notify_url}'\n"
        "        send_resolved: true\n"
    )


class Alertmanager(StackServer):
    readiness = "answering /-/ready"
    start_timeout = 20.0

    def __init__(
        self, tmp_dir: Path | str, *, notify_url: str | None = None, port: int | None = None
    ) -> None:
        super().__init__(tmp_dir, name="alertmanager", port=port)
        binary = find_binary(BINARY, f"/usr/bin/{BINARY}")
        self.conf_path = self.dir / "alertmanager.yml"
        self.data_dir = make_dir(self.dir / "data")
        self.notify_url = notify_url
        self.process = Process(
            [
                binary,
                f"--config.file={self.conf_path}",
                f"--storage.path={self.data_dir}",
                f"--web.listen-address={HOST}:{self.port}",
                "--cluster.listen-address=",  # alone: no gossip port
                "--log.level=info",
            ],
            cwd=self.dir,
            log_path=self.log_path,
        )

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _prepare(self) -> None:
        write_file(self.conf_path, alertmanager_config(self.notify_url), mode=0o644)

    def _launch(self) -> None:
        self.process.start()

    def ready(self) -> object:
        # An http URL we built (S310 guards against file: and custom schemes).
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:  # noqa: S310
            return resp.status == 200

    def is_running(self) -> bool:
        return self.process.is_running()

    def ensure_alive(self) -> None:
        code = self.process.returncode
        if code is not None:
            raise self.failure(f"{self.name} exited with {code}")

    def _halt(self) -> None:
        self.process.stop()

    def api(self, path: str) -> Any:
        """``GET /api/v2<path>`` (synchronous: for the harness only)."""
        with urllib.request.urlopen(f"{self.url}/api/v2{path}", timeout=5) as resp:  # noqa: S310
            return orjson.loads(resp.read())
