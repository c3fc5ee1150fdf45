"""``RpcClient``: a small JSON-RPC 2.0 client for infrawatch (and any JSON-RPC 2.0 server).

    async with RpcClient("http://127.0.0.1:8080", token="...") as rpc:
        health = await rpc.call("monitoring.unifiedHealth")
        stats, lag = await rpc.batch([("monitoring.cacheStats", None), ("database.info", None)])

An error answer raises ``RpcCallError`` carrying the JSON-RPC number, the message and ``data``
(whose ``code`` is the tRPC code name, e.g. ``UNAUTHORIZED``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import aiohttp
import orjson


class RpcCallError(Exception):
    def __init__(self, number: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} ({number})")
        self.number = number
        self.message = message
        self.data = data

    @property
    def code(self) -> str | None:
        """The tRPC code name (``NOT_FOUND``, ``UNAUTHORIZED``...) when the server sent one."""
        return self.data.get("code") if isinstance(self.data, dict) else None


class RpcClient:
    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._url = base_url.rstrip("/") + "/rpc"
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._owns_session = session is None
        self._ids = itertools.count(1)

    async def __aenter__(self) -> RpcClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _request(self, method: str, params: Any) -> dict[str, Any]:
        request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": next(self._ids)}
        if params is not None:
            request["params"] = params
        return request

    async def _post(self, payload: Any) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.post(
            self._url, data=orjson.dumps(payload), headers=self._headers, timeout=self._timeout
        ) as resp:
            body = await resp.read()
            if resp.status == 204:
                return None
            try:
                return orjson.loads(body)
            except orjson.JSONDecodeError:
                raise RpcCallError(
                    -32700, f"HTTP {resp.status}: the server did not answer JSON"
                ) from None

    @staticmethod
    def _result(answer: Any) -> Any:
        if not isinstance(answer, dict):
            raise RpcCallError(-32603, "the server sent something that is not a JSON-RPC answer")
        if "error" in answer:
            err = answer["error"]
            raise RpcCallError(err.get("code", -32603), err.get("message", ""), err.get("data"))
        return answer.get("result")

    async def call(self, method: str, params: Any = None) -> Any:
        return self._result(await self._post(self._request(method, params)))

    async def notify(self, method: str, params: Any = None) -> None:
        request: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            request["params"] = params
        await self._post(request)

    async def batch(self, calls: Sequence[tuple[str, Any]]) -> list[Any]:
        """Results in the order of ``calls``; an error member comes back as ``RpcCallError``."""
        requests = [self._request(method, params) for method, params in calls]
        answers = await self._post(requests)
        if isinstance(answers, dict):  # the whole batch was refused
            self._result(answers)
        by_id = {a.get("id"): a for a in answers or []}
        out: list[Any] = []
        for request in requests:
            try:
                out.append(self._result(by_id.get(request["id"])))
            except RpcCallError as exc:
                out.append(exc)
        return out
