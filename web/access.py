"""Who may call a route: Bearer key, scope, and the key's rate limit (with its one Redis round trip).

Every request that names a valid key is charged once to that key's rate limit, whatever its answer: a body
refused with 400, an unknown wallet (404), a currency mismatch (422) cost the caller as much as a write
that goes through, so a key over its limit gets 429 and no further work. The charge is owed from
`authorize` on and paid, once, by the first of:
- the route's gate call (`pass_gate`), which folds it into the Redis work the route needs anyway (a wallet
  read, an Idempotency-Key claim): a valid request still makes one round trip;
- `pay_before_lookup`, before the route looks a wallet up in the stores (Redis, the owning table, MySQL);
- a refusal (`meter_refusals`): a request refused by validation pays before the refusal is sent, and a
  caller over its limit gets 429 instead. Validation before it is local work on a bounded body; nothing
  reaches a store before the charge.
"""

from __future__ import annotations

from aiohttp import web

from web.auth import Principal
from web.context import API_KEYS, RATE_LIMITER
from web.problems import ProblemError
from web.ratelimit import Passage

READ, WRITE, ADMIN = "wallets:read", "wallets:write", "admin"
PRINCIPAL = web.RequestKey("principal", Principal)
# True from `authorize` until the request's rate-limit charge is paid (see the module docstring).
CHARGE_OWED = web.RequestKey("charge_owed", bool)


async def authorize(request: web.Request, scope: str, *, limit_now: bool = True) -> Principal:
    """The caller's principal, or 401 / 403 (`admin` grants every scope); then the rate limit (429) unless
    `limit_now` is False, when the route calls `pass_gate` itself to fold its own Redis work into it (the
    charge is owed until then, and paid by a refusal or a store lookup if either comes first)."""
    principal = request.app[API_KEYS].authenticate(request.headers.get("Authorization"))
    if principal is None:
        raise ProblemError(401, "UNAUTHORIZED", "Missing or unknown API key",
                           "send Authorization: Bearer <key>", {"WWW-Authenticate": "Bearer"})
    if scope not in principal.scopes and ADMIN not in principal.scopes:
        raise ProblemError(403, "FORBIDDEN", "Missing scope", f"this route needs the {scope} scope")
    request[PRINCIPAL] = principal
    request[CHARGE_OWED] = True
    if limit_now:
        await pass_gate(request)
    return principal


async def pass_gate(request: web.Request, **asks: object) -> Passage:
    """The request's rate-limit charge if still owed (429 when over the limit), plus the Redis reads/claims
    in `asks` (see `RateLimiter.pass_`), in one round trip. A request is never charged twice."""
    charge = request.get(CHARGE_OWED, False)
    request[CHARGE_OWED] = False
    passage = await request.app[RATE_LIMITER].pass_(request[PRINCIPAL].key_id, charge=charge, **asks)
    if passage.retry_after_s:
        raise ProblemError(429, "RATE_LIMITED", "Too many requests",
                           f"this key is over its rate limit; retry in {passage.retry_after_s} s",
                           {"Retry-After": str(passage.retry_after_s)})
    return passage


async def pay_before_lookup(request: web.Request, **asks: object) -> Passage | None:
    """Before a store lookup: pay the request's charge if still owed (429 when over the limit), with `asks`
    (e.g. the wallet's Redis hash) in the same round trip. None when the charge was already paid."""
    if not request.get(CHARGE_OWED, False):
        return None
    return await pass_gate(request, **asks)


@web.middleware
async def meter_refusals(request: web.Request, handler) -> web.StreamResponse:
    """A request refused before it paid its charge (malformed body, bad parameter, body too large) pays it
    now: the refusal counts against the key, and a key over its limit gets 429 instead."""
    try:
        return await handler(request)
    except (ProblemError, web.HTTPException):
        if request.get(CHARGE_OWED, False):
            await pass_gate(request)
        raise
