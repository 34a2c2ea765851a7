"""The rule every test on a real Redis follows: it runs when C{REDIS_URL}
is set, is skipped (saying how to get Redis) without it, and fails under
C{CI=true} when C{REDIS_URL} is unset."""

from __future__ import annotations

import os
from typing import Any

REDIS_URL = os.environ.get("REDIS_URL")
IN_CI = os.environ.get("CI") == "true"


def redis_skip(what: str) -> str | None:
    """The C{skip} reason of a Redis test case (C{None}: it runs or fails)."""
    if REDIS_URL or IN_CI:
        return None
    return (f"set REDIS_URL (e.g. REDIS_URL=redis://127.0.0.1:6379/0) and start "
            f"redis-server to run the {what}")


def require_redis_url(test: Any, what: str) -> str:
    """C{REDIS_URL}, or fail C{test} (under CI, where it must be set)."""
    if not REDIS_URL:
        test.fail(f"CI=true but REDIS_URL is unset: the {what} must run in CI")
    return REDIS_URL or ""
