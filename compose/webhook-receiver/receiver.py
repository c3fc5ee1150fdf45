"""An example receiver of infrawatch's signed alert webhooks (standard library only).

POST /hook: infrawatch's events. The signature is checked as docs/delivery.md says: the
HMAC-SHA256 under WEBHOOK_SECRET of "<X-Infrawatch-Timestamp>." + the raw body, compared in
constant time, with the timestamp within REPLAY_WINDOW seconds. A repeated event id is
answered 200 and not handled twice (the id is the idempotency key). Anything refused is
answered 401 (infrawatch then retries; fix the secret and it gets through).

POST /alertmanager: Alertmanager's own webhook notifications (the stack's pager), logged.

Each accepted event is printed as one JSON line: wire it to your chat or ticket system here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import threading
import time
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ["WEBHOOK_SECRET"].encode()
REPLAY_WINDOW = int(os.environ.get("REPLAY_WINDOW", "300"))
MAX_BODY = 1_048_576
SEEN_LIMIT = 100_000
seen: OrderedDict[str, None] = OrderedDict()
seen_lock = threading.Lock()  # requests run on threads of their own


def verified(timestamp: str, signature: str, raw: bytes) -> bool:
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > REPLAY_WINDOW:
        return False
    expected = hmac.new(SECRET, timestamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(signature, "sha256=" + expected)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.answer(413)
            return
        raw = self.rfile.read(length)
        if self.path == "/alertmanager":
            print(json.dumps({"alertmanager": json.loads(raw)}), flush=True)
            self.answer(200)
            return
        if self.path != "/hook":
            self.answer(404)
            return
        timestamp = self.headers.get("X-Infrawatch-Timestamp", "")
        signature = self.headers.get("X-Infrawatch-Signature", "")
        if not verified(timestamp, signature, raw):
            self.answer(401)
            return
        event = json.loads(raw)
        with seen_lock:
            first = event["id"] not in seen
            seen[event["id"]] = None
            if len(seen) > SEEN_LIMIT:
                seen.popitem(last=False)
        if first:
            alert = event["alert"]
            line = {"event": event["kind"], "id": event["id"], "alert": alert["fingerprint"]}
            line |= {"level": alert["level"], "message": alert["message"]}
            print(json.dumps(line), flush=True)
        self.answer(200)

    def answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8000"))
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
