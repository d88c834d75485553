"""Currencies and the bounds of an amount.

Amounts are `int` minor units of an ISO 4217 currency (cents for EUR, yen for JPY, fils for BHD). The
exponent says how many minor units make one major unit: 10**exponent. Decimal strings exist only at the
HTTP edge; the domain never sees a float.
"""

from __future__ import annotations

from typing import Final

from app.domain.errors import UnknownCurrency

# ISO 4217 minor-unit digits. A plain dict because other layers (codecs, the OpenAPI document) consume it
# as one; treat it as read-only: changing an exponent would rescale every stored amount of that currency.
CURRENCY_EXPONENTS: Final[dict[str, int]] = {
    # two digits
    "EUR": 2,
    "USD": 2,
    "GBP": 2,
    "CHF": 2,
    "CAD": 2,
    "AUD": 2,
    "SEK": 2,
    "NOK": 2,
    "DKK": 2,
    "PLN": 2,
    "CZK": 2,
    # no minor unit
    "JPY": 0,
    "KRW": 0,
    # three digits
    "BHD": 3,
    "KWD": 3,
    "JOD": 3,
    "OMR": 3,
    "TND": 3,
}

# The largest amount or balance the wire format can carry: Avro `long` is a signed 64-bit integer.
AMOUNT_MINOR_MAX: Final[int] = 2**63 - 1


def is_known_currency(currency: object) -> bool:
    """Whether `currency` is an ISO 4217 code listed in `CURRENCY_EXPONENTS`."""
    return isinstance(currency, str) and currency in CURRENCY_EXPONENTS


def currency_exponent(currency: str) -> int:
    """Number of decimal digits of the currency's minor unit (EUR 2, JPY 0, BHD 3).

    Raises `UnknownCurrency` for a code not in `CURRENCY_EXPONENTS`.
    """
    if not is_known_currency(currency):
        raise UnknownCurrency(currency)
    return CURRENCY_EXPONENTS[currency]
