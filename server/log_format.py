"""``SafeFormatter``: log lines that cannot leak a password or be forged by a client.

Every message passes ``mask_secrets`` (URL passwords, ``password=`` pairs), and so does every
traceback. Control characters in a message (a JSON-RPC method name holding ``\\n``, a Host
header with ``\\r``) are written as ``\\n``, ``\\x1b``...: one record is one line, and a client
cannot append a fake record or drive a terminal. Tracebacks keep their own line breaks.
"""

from __future__ import annotations

import logging

from server.redaction import mask_secrets

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
_CONTROLS = [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029]
_ESCAPES = {c: f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}" for c in _CONTROLS}
_ESCAPES |= {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}


def escape_controls(text: str) -> str:
    return text.translate(_ESCAPES)


class SafeFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(mask_secrets(record.message))
        return super().formatMessage(record)

    def formatException(self, ei: logging._SysExcInfoType) -> str:
        return mask_secrets(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return mask_secrets(super().formatStack(stack_info))
