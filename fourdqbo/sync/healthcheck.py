"""Dead-man's-switch pings (HEALTHCHECK_URL): `/start`, the bare URL on success, `/fail`.

A ping that fails is logged and forgotten: monitoring must never fail a sync run.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def ping(url: str, outcome: str) -> None:
    """outcome: "start", "success" or "fail"."""
    if not url:
        return
    import httpx

    target = url.rstrip("/") + {"start": "/start", "success": "", "fail": "/fail"}[outcome]
    try:
        httpx.get(target, timeout=5.0)
    except httpx.HTTPError as exc:
        log.warning("healthcheck ping %s failed: %s", outcome, type(exc).__name__)
