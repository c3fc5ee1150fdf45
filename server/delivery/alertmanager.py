"""Alertmanager, API v2: an occurrence is one Alertmanager alert, an acknowledgement is a
silence of that occurrence.

The alert's labels are ``alertname`` (the rule), ``subject``, ``severity`` (the level),
``service="infrawatch"``, ``instance`` (the instance that fired it) and ``occurrence`` (the
alert's id): the last one makes each occurrence its own alert, so that a silence matching it
never silences a later return of the same condition. While firing it is pushed again every
resend interval with ``endsAt`` four intervals ahead (as Prometheus does: an infrawatch that
stops leaves nothing firing forever); resolved, with ``endsAt`` = the resolution time. A level
change ends the alert at its old severity and starts it at the new one (the label set changes).

An acknowledgement creates a silence with matchers ``alertname``, ``subject`` and
``occurrence`` (all equal), ``createdBy`` the operator, ``comment`` the note; it is expired
(``DELETE /api/v2/silence/{id}``) when the occurrence resolves. Before creating one, the
silences of the occurrence are looked up, so a retried acknowledgement creates no second one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson

from server.delivery.models import Delivery
from server.delivery.session import Session

# A silence must end: long enough to outlast an occurrence, which expires it when it resolves.
SILENCE_DAYS = 30
# endsAt while firing: this many resend intervals ahead.
RESEND_HORIZON = 4


class DeliveryError(Exception):
    """An attempt failed; ``permanent`` when retrying the same request cannot succeed."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Alertmanager:
    def __init__(
        self,
        session: Session,
        url: str,
        *,
        timeout: float,
        resend_interval: float,
        dashboard_url: str | None,
    ) -> None:
        self._session = session
        self._base = url.rstrip("/") + "/api/v2"
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._horizon = timedelta(seconds=RESEND_HORIZON * resend_interval)
        self._dashboard = dashboard_url

    async def deliver(self, delivery: Delivery) -> None:
        payload = delivery.payload
        alert = payload["alert"]
        kind = delivery.kind
        if kind in ("fired", "acknowledged"):
            if alert["state"] == "firing":
                await self.push([self.alert(payload)])
            if kind == "acknowledged" and alert["state"] == "firing":
                await self.silence(payload)
        elif kind == "level_changed":
            old = self.alert(payload, severity=payload["previous_level"], ends=_at(payload["at"]))
            await self.push([old, self.alert(payload)])
        elif kind == "resolved":
            await self.push([self.alert(payload)])
            await self.unsilence(alert["id"])

    async def resend(self, payloads: list[dict[str, Any]]) -> None:
        if payloads:
            await self.push([self.alert(p) for p in payloads])

    def alert(
        self,
        payload: dict[str, Any],
        *,
        severity: str | None = None,
        ends: datetime | None = None,
    ) -> dict[str, Any]:
        alert = payload["alert"]
        if ends is None:
            resolved = alert["resolved_at"]
            ends = _at(resolved) if resolved else datetime.now(UTC) + self._horizon
        body: dict[str, Any] = {
            "labels": {
                "alertname": alert["rule"],
                "subject": alert["subject"],
                "severity": severity or alert["level"],
                "service": "infrawatch",
                "instance": payload["instance"],
                "occurrence": alert["id"],
            },
            "annotations": {
                "summary": alert["message"],
                "value": _figure(alert["value"]),
                "threshold": _figure(alert["threshold"]),
            },
            "startsAt": alert["first_fired_at"],
            "endsAt": ends.isoformat(),
        }
        if self._dashboard:
            link = f"{self._dashboard.rstrip('/')}/#alert-{alert['id']}"
            body["annotations"]["dashboard"] = link
            body["generatorURL"] = link
        return body

    async def push(self, alerts: list[dict[str, Any]]) -> None:
        await self._request("POST", "/alerts", alerts)

    async def silence(self, payload: dict[str, Any]) -> str:
        alert = payload["alert"]
        for found in await self.silences(alert["id"]):
            if found["status"]["state"] in ("active", "pending"):
                return str(found["id"])  # made by an earlier attempt
        now = datetime.now(UTC)
        note = alert["note"] or (
            f"acknowledged in infrawatch: {alert['rule']} on {alert['subject']}"
        )
        body = {
            "matchers": [
                _equal("alertname", alert["rule"]),
                _equal("subject", alert["subject"]),
                _equal("occurrence", alert["id"]),
            ],
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(days=SILENCE_DAYS)).isoformat(),
            "createdBy": alert["acknowledged_by"] or "infrawatch",
            "comment": note,
        }
        answer = await self._request("POST", "/silences", body)
        return str(answer["silenceID"])

    async def silences(self, occurrence: str) -> list[dict[str, Any]]:
        found = await self._request(
            "GET", "/silences", params={"filter": f'occurrence="{occurrence}"'}
        )
        return list(found or [])

    async def unsilence(self, occurrence: str) -> None:
        for found in await self.silences(occurrence):
            if found["status"]["state"] != "expired":
                await self._request("DELETE", f"/silence/{found['id']}", allow_missing=True)

    async def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, str] | None = None,
        allow_missing: bool = False,
    ) -> Any:
        data = orjson.dumps(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else None
        try:
            async with self._session.client.request(
                method,
                self._base + path,
                data=data,
                params=params,
                headers=headers,
                timeout=self._timeout,
            ) as resp:
                text = await resp.read()
                if resp.status == 404 and allow_missing:
                    return None
                if resp.status >= 400:
                    said = text[:200].decode(errors="replace")
                    raise DeliveryError(
                        f"{method} {path}: HTTP {resp.status}: {said}",
                        permanent=400 <= resp.status < 500 and resp.status not in (408, 429),
                    )
                return orjson.loads(text) if text.strip() else None
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            raise DeliveryError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc


def _equal(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value, "isRegex": False, "isEqual": True}


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _figure(value: float | None) -> str:
    return "" if value is None else f"{value:g}"
