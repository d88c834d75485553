"""Strict validation of what clients send: JSON bodies, path and query parameters, headers.

Every failure is a `ProblemError` (400 unless said otherwise) that names the field; nothing the client
sent is echoed back unbounded.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, Callable

from aiohttp import web

from app import identity
from app.domain.money import UnknownCurrency, currency_exponent
from app.intake import HOLD_ID_RE, TEXT_LENGTH_MAX, WALLET_ID_RE
from web.amounts import AmountInvalid, parse_amount
from web.problems import ProblemError

CURRENCY_RE = re.compile(r"[A-Z]{3}")
# Longest value quoted back in an error detail.
_ECHO_CHARS_MAX = 40


def invalid(detail: str, code: str = "VALIDATION_FAILED") -> ProblemError:
    return ProblemError(400, code, "Invalid request", detail)


def _echo(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _ECHO_CHARS_MAX else text[:_ECHO_CHARS_MAX] + "..."


async def json_body(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    """The request's JSON object; `optional` allows an empty body (read as `{}`)."""
    raw = await request.read()  # bounded by the app's client_max_size (413 beyond it)
    if not raw.strip():
        if optional:
            return {}
        raise invalid("a JSON object body is required", "MALFORMED_JSON")
    if request.content_type != "application/json":
        raise ProblemError(415, "UNSUPPORTED_MEDIA_TYPE", "Unsupported media type",
                           "send the body as Content-Type: application/json")
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid("the body is not valid JSON", "MALFORMED_JSON") from exc
    if not isinstance(body, dict):
        raise invalid("the body must be a JSON object", "MALFORMED_JSON")
    return body


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def fields(body: dict[str, Any], required: dict[str, Callable[[str, Any], Any]],
           optional: dict[str, Callable[[str, Any], Any]]) -> dict[str, Any]:
    """Check `body` has every required field, no unknown field, and each value passes its checker;
    return the checked values (optional fields absent or null are left out)."""
    unknown = sorted(set(body) - set(required) - set(optional))
    if unknown:
        raise invalid(f"unknown field(s): {', '.join(_echo(name) for name in unknown[:5])}")
    values = {}
    for name, check in required.items():
        if body.get(name) is None:
            raise invalid(f"{name} is required")
        values[name] = check(name, body[name])
    for name, check in optional.items():
        if body.get(name) is not None:
            values[name] = check(name, body[name])
    return values


def string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise invalid(f"{name} must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate (JSON "\ud800") is no text any store can keep
        raise invalid(f"{name} is not valid Unicode text") from exc
    return value


def pattern(regex: re.Pattern[str]) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        if regex.fullmatch(string(name, value)) is None:
            raise invalid(f"{name} must match {regex.pattern}")
        return value
    return check


wallet_id = pattern(WALLET_ID_RE)
hold_id = pattern(HOLD_ID_RE)


def text(name: str, value: Any) -> str:
    if len(string(name, value)) > TEXT_LENGTH_MAX:
        raise invalid(f"{name} is longer than {TEXT_LENGTH_MAX} characters")
    return value


def owner_id(name: str, value: Any) -> str:
    if not text(name, value).strip():
        raise invalid(f"{name} must not be empty")
    return value


def currency(name: str, value: Any) -> str:
    if CURRENCY_RE.fullmatch(string(name, value)) is None:
        raise invalid(f"{name} must be an ISO 4217 code such as EUR")
    try:
        currency_exponent(value)
    except UnknownCurrency as exc:
        raise invalid(f"{name} {_echo(value)} is not a supported currency") from exc
    return value


def integer(low: int, high: int) -> Callable[[str, Any], int]:
    def check(name: str, value: Any) -> int:
        if type(value) is not int or not low <= value <= high:  # bool is an int subclass: refused too
            raise invalid(f"{name} must be an integer from {low} to {high}")
        return value
    return check


def amount_text(name: str, value: Any) -> str:
    """An amount field's raw value: a string (a JSON number would invite binary floating point)."""
    if not isinstance(value, str):
        raise invalid(f"{name} must be a decimal string such as \"150.75\", not a JSON number", "INVALID_AMOUNT")
    return value


def amount_minor(text_value: Any, currency_code: str, *, name: str = "amount", max_minor: int,
                 allow_zero: bool = False) -> int:
    """A decimal amount string of `currency_code` as minor units.

    400 INVALID_AMOUNT for a malformed string, too many digits or a non-positive amount; 422
    LIMIT_EXCEEDED above the per-command maximum `max_minor`.
    """
    if allow_zero and isinstance(text_value, str) and re.fullmatch(r"0(\.0+)?", text_value):
        if len(text_value.partition(".")[2]) > currency_exponent(currency_code):
            raise invalid(f"{currency_code} has {currency_exponent(currency_code)} decimal digits", "INVALID_AMOUNT")
        return 0
    try:
        value = parse_amount(text_value, currency_code)
    except AmountInvalid as exc:
        raise invalid(f"{name}: {exc}", "INVALID_AMOUNT") from exc
    if value > max_minor:
        raise ProblemError(422, "LIMIT_EXCEEDED", "Amount over the limit",
                           f"{name} is above the per-command maximum")
    return value


def query_int(request: web.Request, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"[0-9]{1,12}", raw) or not low <= int(raw) <= high:
        raise invalid(f"{name} must be an integer from {low} to {high}")
    return int(raw)


def query_choice(request: web.Request, name: str, choices: tuple[str, ...]) -> str:
    raw = request.query.get(name, choices[0])
    if raw not in choices:
        raise invalid(f"{name} must be one of {', '.join(choices)}")
    return raw


def query_time_ms(request: web.Request, name: str) -> int | None:
    """An RFC 3339 time with its offset (`2026-11-25T10:00:00Z`) as ms since the Unix epoch."""
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise invalid(f"{name} must be an RFC 3339 time such as 2026-11-25T10:00:00Z") from exc
    if parsed.tzinfo is None:
        raise invalid(f"{name} must carry a time zone offset (Z or +01:00)")
    timestamp = parsed.timestamp()
    if not 0 <= timestamp < 2**53 / 1000:
        raise invalid(f"{name} is out of range")
    return int(round(timestamp * 1000))


def _id(name: str, value: str, regex: re.Pattern[str], code: str) -> str:
    if regex.fullmatch(value) is None:
        raise invalid(f"{name} must match {regex.pattern}", code)
    return value


def path_id(request: web.Request, name: str, regex: re.Pattern[str], code: str) -> str:
    return _id(name, request.match_info[name], regex, code)


def query_id(request: web.Request, name: str, regex: re.Pattern[str], code: str) -> str | None:
    """An optional id in the query string, checked like a path id."""
    value = request.query.get(name)
    return None if value is None else _id(name, value, regex, code)


def idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and identity.is_reserved(key):
        raise invalid(f"Idempotency-Keys starting with {identity.RESERVED_PREFIX!r} are reserved for the ledger's "
                      "own commands", identity.RESERVED_COMMAND_ID)
    if key is not None and identity.IDEMPOTENCY_KEY_RE.fullmatch(key) is None:
        raise invalid(f"Idempotency-Key must match {identity.IDEMPOTENCY_KEY_RE.pattern}", "INVALID_IDEMPOTENCY_KEY")
    return key
