"""``rpc.discover`` is a valid OpenRPC document: checked against the OpenRPC meta-schema, as
published on npm (``@open-rpc/meta-schema``, pinned in ``tests/openrpc_schema``), with
jsonschema, formats included (``servers[0].url`` must be an absolute URI)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp.test_utils import TestClient
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from server.app import create_app
from server.appkeys import ROUTER
from server.config import Settings
from server.rpc.router import Context

SCHEMA_DIR = Path(__file__).resolve().parent / "openrpc_schema"
NODE = shutil.which("node")
NPM = shutil.which("npm")
NPM_INSTALL_TIMEOUT = 180

pytestmark = pytest.mark.skipif(
    NODE is None or NPM is None, reason="node and npm are not installed: no OpenRPC meta-schema"
)


@pytest.fixture(scope="session")
def meta_schema() -> dict[str, Any]:
    """``npm install`` of the pinned package, then its schema as JSON (the package is a CommonJS
    module exporting the schema object)."""
    assert NPM is not None and NODE is not None
    done = subprocess.run(
        [NPM, "install", "--no-audit", "--no-fund"],
        cwd=SCHEMA_DIR,
        capture_output=True,
        text=True,
        timeout=NPM_INSTALL_TIMEOUT,
    )
    if done.returncode != 0:
        pytest.fail(f"npm install failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    printed = subprocess.run(
        [
            NODE,
            "-e",
            'process.stdout.write(JSON.stringify(require("@open-rpc/meta-schema").default))',
        ],
        cwd=SCHEMA_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    schema: dict[str, Any] = json.loads(printed.stdout)
    return schema


# The meta-schema names its dialect ("https://meta.json-schema.tools", a draft-07 superset) as
# its $schema and as the schema of every JSON Schema in the document (params, results,
# components). No network here: that URL resolves to the draft-07 meta-schema jsonschema ships.
DIALECT = "https://meta.json-schema.tools"
REGISTRY: Registry[Any] = Registry().with_resource(
    DIALECT,
    Resource.from_contents(jsonschema.Draft7Validator.META_SCHEMA, default_specification=DRAFT7),
)


def validate(document: Any, schema: dict[str, Any]) -> None:
    validator = jsonschema.Draft7Validator(
        schema, registry=REGISTRY, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])


async def _discover(client: TestClient, **headers: str) -> Any:
    body = {"jsonrpc": "2.0", "method": "rpc.discover", "id": 1}
    return (await (await client.post("/rpc", json=body, headers=headers)).json())["result"]


async def test_discover_validates_against_the_openrpc_meta_schema(
    aiohttp_client: Any, meta_schema: dict[str, Any]
) -> None:
    app = create_app(Settings(alert_evaluation_enabled=False))
    client = await aiohttp_client(app)
    document = await _discover(client)
    validate(document, meta_schema)
    assert len(document["methods"]) > 15
    assert document["servers"][0]["url"] == f"http://{client.host}:{client.port}/rpc"
    named = await _discover(client, Host="Monitor.Example:8443")
    assert named["servers"][0]["url"] == "http://monitor.example:8443/rpc"
    validate(named, meta_schema)
    # A Host that cannot be part of a URI: the listening socket's own address instead.
    odd = await _discover(client, Host="not a host")
    assert odd["servers"][0]["url"] == f"http://{client.host}:{client.port}/rpc"
    # In-process (no request, no address).
    internal = await app[ROUTER].call("rpc.discover", None, Context())
    validate(internal, meta_schema)


async def test_discover_answers_only_allowed_hosts(
    aiohttp_client: Any, meta_schema: dict[str, Any]
) -> None:
    client = await aiohttp_client(
        create_app(Settings(alert_evaluation_enabled=False, allowed_hosts="monitor.example"))
    )
    document = await _discover(client, Host="monitor.example")
    assert document["servers"][0]["url"] == "http://monitor.example/rpc"
    validate(document, meta_schema)
    refused = await client.post(
        "/rpc",
        json={"jsonrpc": "2.0", "method": "rpc.discover", "id": 1},
        headers={"Host": "evil.example"},
    )
    assert refused.status == 400


def test_the_check_catches_what_main_answered(meta_schema: dict[str, Any]) -> None:
    # The document as it was before: a relative server URL fails the meta-schema's "uri" format.
    with pytest.raises(AssertionError, match="uri"):
        validate(
            {"openrpc": "1.3.2", "info": {"title": "t", "version": "1"}, "methods": [],
             "servers": [{"name": "s", "url": "/rpc"}]},
            meta_schema,
        )  # fmt: skip
