"""Who may call a route: Bearer key, scope, and the key's rate limit."""

from __future__ import annotations

from aiohttp import web

from web.auth import Principal
from web.context import API_KEYS, RATE_LIMITER
from web.problems import ProblemError

READ, WRITE, ADMIN = "wallets:read", "wallets:write", "admin"


async def authorize(request: web.Request, scope: str) -> Principal:
    """The caller's principal, or 401 / 403 / 429 (`admin` grants every scope)."""
    principal = request.app[API_KEYS].authenticate(request.headers.get("Authorization"))
    if principal is None:
        raise ProblemError(401, "UNAUTHORIZED", "Missing or unknown API key",
                           "send Authorization: Bearer <key>", {"WWW-Authenticate": "Bearer"})
    if scope not in principal.scopes and ADMIN not in principal.scopes:
        raise ProblemError(403, "FORBIDDEN", "Missing scope", f"this route needs the {scope} scope")
    retry_after_s = await request.app[RATE_LIMITER].retry_after_s(principal.key_id)
    if retry_after_s:
        raise ProblemError(429, "RATE_LIMITED", "Too many requests",
                           f"this key is over its rate limit; retry in {retry_after_s} s",
                           {"Retry-After": str(retry_after_s)})
    return principal
