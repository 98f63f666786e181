"""systemd readiness and watchdog notifications, without libsystemd.

The service manager passes ``$NOTIFY_SOCKET`` (a filesystem path, or ``@name`` for the
abstract namespace). Each notification is one datagram of ``KEY=VALUE`` lines. When the
variable is unset (running by hand, in tests, under another supervisor) every function here
is a no-op that returns ``False``, so callers never need to check.

Callers may rely on:

- ``ready()`` once the API socket accepts connections;
- ``watchdog()`` from the loop that does the real work, every ``watchdog_interval()``
  seconds (already half of ``WatchdogSec=``, so one late ping is not fatal);
- ``status(text)`` for a one-line human status (``systemctl status`` shows it);
- ``stopping()`` when a clean shutdown begins.

A send failure is swallowed and reported as ``False``: a lost notification must never take
the dispenser down (systemd's watchdog will notice a real hang anyway).
"""

from __future__ import annotations

import os
import socket

__all__ = ["notify", "ready", "status", "stopping", "watchdog", "watchdog_interval"]


def _address(raw: str) -> str | bytes:
    if raw.startswith("@"):
        # Abstract namespace: the leading byte is NUL instead of '@'.
        return b"\0" + raw[1:].encode()
    return raw


def notify(message: str) -> bool:
    """Send one notification datagram; return whether it was sent."""
    raw = os.environ.get("NOTIFY_SOCKET")
    if not raw:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(_address(raw))
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


def ready() -> bool:
    """Tell the service manager that start-up has finished."""
    return notify("READY=1")


def status(text: str) -> bool:
    """Publish a one-line status (newlines are folded to spaces)."""
    return notify("STATUS=" + " ".join(text.splitlines()))


def watchdog() -> bool:
    """Keep-alive ping for ``WatchdogSec=``."""
    return notify("WATCHDOG=1")


def stopping() -> bool:
    """Tell the service manager that a clean shutdown has begun."""
    return notify("STOPPING=1")


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings, or ``None`` when no watchdog applies to us.

    Half of ``WATCHDOG_USEC`` (the full timeout, from ``WatchdogSec=``), as systemd
    recommends. When ``WATCHDOG_PID`` is set and is not our pid, the watchdog belongs to
    another process (e.g. a wrapper).
    """
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    return value / 2_000_000
