"""Who may call a route: Bearer key, scope, and the key's rate limit (with its one Redis round trip)."""

from __future__ import annotations

from aiohttp import web

from web.auth import Principal
from web.context import API_KEYS, RATE_LIMITER
from web.problems import ProblemError
from web.ratelimit import Passage

READ, WRITE, ADMIN = "wallets:read", "wallets:write", "admin"
PRINCIPAL = web.RequestKey("principal", Principal)


async def authorize(request: web.Request, scope: str, *, limit_now: bool = True) -> Principal:
    """The caller's principal, or 401 / 403 (`admin` grants every scope); then the rate limit (429) unless
    `limit_now` is False, when the route calls `pass_gate` itself to fold its own Redis work into it."""
    principal = request.app[API_KEYS].authenticate(request.headers.get("Authorization"))
    if principal is None:
        raise ProblemError(401, "UNAUTHORIZED", "Missing or unknown API key",
                           "send Authorization: Bearer <key>", {"WWW-Authenticate": "Bearer"})
    if scope not in principal.scopes and ADMIN not in principal.scopes:
        raise ProblemError(403, "FORBIDDEN", "Missing scope", f"this route needs the {scope} scope")
    request[PRINCIPAL] = principal
    if limit_now:
        await pass_gate(request)
    return principal


async def pass_gate(request: web.Request, **asks: object) -> Passage:
    """The rate limit of the caller's key (429 when over it), plus the Redis reads/claims in `asks`
    (see `RateLimiter.pass_`), in one round trip."""
    passage = await request.app[RATE_LIMITER].pass_(request[PRINCIPAL].key_id, **asks)
    if passage.retry_after_s:
        raise ProblemError(429, "RATE_LIMITED", "Too many requests",
                           f"this key is over its rate limit; retry in {passage.retry_after_s} s",
                           {"Retry-After": str(passage.retry_after_s)})
    return passage
