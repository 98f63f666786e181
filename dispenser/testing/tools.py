"""System tools the tests use as independent peers (mbpoll, socat, systemd-analyze).

Tests that need one call ``require_tool``: on a developer machine without the tool they
skip with a visible reason; under CI (``CI=true``) a missing tool is a failure, never a
skip.
"""

from __future__ import annotations

import os
import shutil

import pytest

__all__ = ["free_port", "require_tool", "under_ci"]


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_tool(name: str) -> str:
    """Return the path of a system tool, or skip (fail under CI) when it is missing."""
    path = shutil.which(name)
    if path is None:
        message = f"system tool {name!r} is not installed (.ci/run installs it)"
        if under_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
