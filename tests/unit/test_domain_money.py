"""Currencies, exponents and per-command limits."""

from __future__ import annotations

import pytest

from app.domain.errors import DomainError, LimitsInvalid, UnknownCurrency
from app.domain.limits import DEFAULT_LIMITS, Limits
from app.domain.money import AMOUNT_MINOR_MAX, CURRENCY_EXPONENTS, currency_exponent


@pytest.mark.parametrize(
    ("currency", "exponent"),
    [("EUR", 2), ("USD", 2), ("GBP", 2), ("CHF", 2), ("JPY", 0), ("KRW", 0), ("BHD", 3), ("KWD", 3), ("JOD", 3)],
)
def test_currency_exponent_is_the_iso_4217_minor_unit(currency: str, exponent: int) -> None:
    assert currency_exponent(currency) == exponent
    assert CURRENCY_EXPONENTS[currency] == exponent


@pytest.mark.parametrize("currency", ["XXX", "eur", "", "EURO", None, 978])
def test_unknown_currency_raises_a_domain_error(currency: object) -> None:
    with pytest.raises(UnknownCurrency) as raised:
        currency_exponent(currency)  # type: ignore[arg-type]
    assert isinstance(raised.value, DomainError)


def test_amount_minor_max_is_the_avro_long_bound() -> None:
    assert AMOUNT_MINOR_MAX == 2**63 - 1


@pytest.mark.parametrize(
    ("currency", "amount_max_minor"), [("EUR", 100_000_000), ("JPY", 1_000_000), ("BHD", 1_000_000_000)]
)
def test_default_per_command_maximum_is_one_million_major_units(currency: str, amount_max_minor: int) -> None:
    assert DEFAULT_LIMITS.amount_max_minor(currency) == amount_max_minor


def test_default_limits_are_the_documented_ones() -> None:
    assert DEFAULT_LIMITS == Limits(amount_max_major=1_000_000, holds_open_max=100, balance_max_minor=2**62)


def test_limits_per_command_maximum_of_unknown_currency_raises() -> None:
    with pytest.raises(UnknownCurrency):
        DEFAULT_LIMITS.amount_max_minor("XXX")


@pytest.mark.parametrize(
    "overrides",
    [
        {"amount_max_major": 0},
        {"amount_max_major": -1},
        {"amount_max_major": True},
        {"holds_open_max": 0},
        {"balance_max_minor": 2**63},
        {"amount_max_major": 2**63 // 1000 + 1},  # would not fit an Avro long in BHD fils
    ],
)
def test_limits_that_cannot_be_enforced_are_refused(overrides: dict[str, int]) -> None:
    with pytest.raises(LimitsInvalid):
        Limits(**overrides)
