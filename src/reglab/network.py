"""One fast network check, so nothing waits on a service that is not there (a blind hub or W&B call takes
20-90 s to fail offline)."""

from __future__ import annotations

import socket


def reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False
