"""Free loopback ports for the servers the stack starts.

Ports come from just below the kernel's ephemeral range: the kernel hands ephemeral ports to
outgoing connections as their source port, so a port picked there could be taken by any client
connection (ours or another test run's) between our check and the server's bind.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

HOST = "127.0.0.1"

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_SPAN = 10_000
# Ports this process handed out, so two servers of one stack never get the same port even
# before either of them has bound it.
_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on at 127.0.0.1, never returned twice by this process."""
    low = _ephemeral_low()
    candidates = random.sample(range(max(1024, low - _SPAN), low), 200)
    for port in candidates:
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    # A crowded range: let the kernel choose, still skipping what we handed out.
    for _ in range(50):
        port = _kernel_port()
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port on 127.0.0.1")


def is_listening(port: int, timeout: float = 0.5) -> bool:
    """True when a TCP connection to 127.0.0.1:port succeeds."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _ephemeral_low() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    # No SO_REUSEADDR: a port in TIME_WAIT counts as taken, which is the safer answer.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _kernel_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port
