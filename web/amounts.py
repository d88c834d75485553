"""Money at the HTTP edge: decimal strings in, decimal strings out, integers of minor units inside."""

from __future__ import annotations

import re

from app.domain.money import AMOUNT_MINOR_MAX, currency_exponent
from web.errors import WebError

# 19 integer digits cover every Avro long in a 0-digit currency; the bound check does the rest.
_AMOUNT_RE = re.compile(r"(0|[1-9][0-9]{0,18})(?:\.([0-9]+))?")


class AmountInvalid(WebError, ValueError):
    """The amount string is not a positive decimal with at most the currency's digits."""


def format_minor(amount_minor: int, currency: str) -> str:
    """`15075, "EUR"` -> `"150.75"`; `-5, "EUR"` -> `"-0.05"`; `100, "JPY"` -> `"100"`."""
    exponent = currency_exponent(currency)
    sign = "-" if amount_minor < 0 else ""
    units, minor = divmod(abs(amount_minor), 10**exponent)
    return f"{sign}{units}.{minor:0{exponent}d}" if exponent else f"{sign}{units}"


def parse_amount(text: object, currency: str) -> int:
    """`"150.75", "EUR"` -> `15075`. Rejects signs, exponents, spaces and extra digits."""
    if not isinstance(text, str):
        raise AmountInvalid("amount must be a decimal string such as \"150.75\"")
    match = _AMOUNT_RE.fullmatch(text)
    if match is None:
        raise AmountInvalid(f"amount {text!r} is not a plain positive decimal")
    exponent = currency_exponent(currency)
    fraction = match.group(2) or ""
    if len(fraction) > exponent:
        raise AmountInvalid(f"{currency} has {exponent} decimal digits; {text!r} has {len(fraction)}")
    amount_minor = int(match.group(1)) * 10**exponent + int(fraction.ljust(exponent, "0") or "0")
    if amount_minor <= 0:
        raise AmountInvalid("amount must be greater than zero")
    if amount_minor > AMOUNT_MINOR_MAX:
        raise AmountInvalid(f"amount {text!r} is too large")
    return amount_minor
