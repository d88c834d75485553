"""Money at the HTTP edge: decimal strings in, integers of minor units inside, decimal strings out."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.money import AMOUNT_MINOR_MAX, CURRENCY_EXPONENTS
from web.amounts import AmountInvalid, format_minor, parse_amount

CURRENCIES = ["EUR", "JPY", "BHD"]


@pytest.mark.parametrize(
    ("text", "currency", "amount_minor"),
    [
        ("150.75", "EUR", 15075),
        ("0.01", "EUR", 1),
        ("1", "EUR", 100),
        ("150.7", "EUR", 15070),
        ("0.1", "EUR", 10),
        ("1000000.00", "EUR", 100_000_000),
        ("1", "JPY", 1),
        ("150", "JPY", 150),
        ("1", "BHD", 1000),
        ("0.001", "BHD", 1),
        ("1.234", "BHD", 1234),
        ("1.2", "BHD", 1200),
    ],
)
def test_parse_of_a_plain_positive_decimal_gives_minor_units(text: str, currency: str, amount_minor: int) -> None:
    assert parse_amount(text, currency) == amount_minor


@pytest.mark.parametrize(
    ("text", "currency"),
    [
        ("0", "EUR"),
        ("0.00", "EUR"),
        ("0.000", "BHD"),
        ("0", "JPY"),
        ("-1", "EUR"),
        ("+1", "EUR"),
        ("1e3", "EUR"),
        ("1E3", "EUR"),
        (" 1", "EUR"),
        ("1 ", "EUR"),
        ("1\n", "EUR"),
        ("1.234", "EUR"),
        ("1.5", "JPY"),
        ("1.0", "JPY"),
        ("1.2345", "BHD"),
        ("01", "EUR"),
        ("00.5", "EUR"),
        ("", "EUR"),
        (".5", "EUR"),
        ("1.", "EUR"),
        ("1,50", "EUR"),
        ("1_000", "EUR"),
        ("NaN", "EUR"),
        ("Infinity", "EUR"),
        ("\u0661", "EUR"),  # ARABIC-INDIC DIGIT ONE: int() would accept it
        ("\uff11", "EUR"),  # FULLWIDTH DIGIT ONE
    ],
)
def test_parse_of_anything_but_a_plain_positive_decimal_is_rejected(text: str, currency: str) -> None:
    with pytest.raises(AmountInvalid):
        parse_amount(text, currency)


@pytest.mark.parametrize("value", [150, 150.75, 0.1, Decimal("150.75"), None, b"150.75", ["1"], True])
def test_parse_of_a_non_string_is_rejected(value: object) -> None:
    with pytest.raises(AmountInvalid):
        parse_amount(value, "EUR")


def test_amount_invalid_is_a_value_error() -> None:
    assert issubclass(AmountInvalid, ValueError)


@pytest.mark.parametrize(
    ("amount_minor", "currency", "text"),
    [
        (15075, "EUR", "150.75"),
        (1, "EUR", "0.01"),
        (100, "EUR", "1.00"),
        (0, "EUR", "0.00"),
        (-5, "EUR", "-0.05"),
        (-15075, "EUR", "-150.75"),
        (-100, "EUR", "-1.00"),
        (100, "JPY", "100"),
        (0, "JPY", "0"),
        (-100, "JPY", "-100"),
        (1, "BHD", "0.001"),
        (1234, "BHD", "1.234"),
        (-1, "BHD", "-0.001"),
        (0, "BHD", "0.000"),
        (AMOUNT_MINOR_MAX, "EUR", "92233720368547758.07"),
        (-AMOUNT_MINOR_MAX - 1, "EUR", "-92233720368547758.08"),
    ],
)
def test_format_writes_exactly_the_currency_digits_with_a_leading_minus_for_negatives(
    amount_minor: int, currency: str, text: str
) -> None:
    assert format_minor(amount_minor, currency) == text


@st.composite
def valid_amount_texts(draw: st.DrawFn) -> tuple[str, str]:
    """A currency and a plain positive decimal in it: no leading zeros, at most the currency's digits."""
    currency = draw(st.sampled_from(CURRENCIES))
    exponent = CURRENCY_EXPONENTS[currency]
    units = draw(st.integers(min_value=0, max_value=10**15))
    fraction = draw(st.text(alphabet="0123456789", max_size=exponent))
    text = f"{units}.{fraction}" if fraction else str(units)
    if Decimal(text) == 0:
        text = "1" if not fraction else f"{units}.{fraction[:-1]}1"
    return text, currency


@settings(max_examples=300, deadline=None)
@given(valid=valid_amount_texts())
def test_format_of_a_parsed_amount_is_the_same_decimal_written_with_all_currency_digits(valid: tuple[str, str]) -> None:
    text, currency = valid
    formatted = format_minor(parse_amount(text, currency), currency)
    assert Decimal(formatted) == Decimal(text)
    exponent = CURRENCY_EXPONENTS[currency]
    assert formatted == (f"{Decimal(text):.{exponent}f}")


@settings(max_examples=300, deadline=None)
@given(currency=st.sampled_from(CURRENCIES), amount_minor=st.integers(min_value=1, max_value=10**18 - 1))
def test_parse_of_a_formatted_positive_amount_gives_it_back(currency: str, amount_minor: int) -> None:
    assert parse_amount(format_minor(amount_minor, currency), currency) == amount_minor


@settings(max_examples=100, deadline=None)
@given(currency=st.sampled_from(CURRENCIES), amount_minor=st.integers(max_value=0))
def test_parse_of_a_formatted_zero_or_negative_amount_is_rejected(currency: str, amount_minor: int) -> None:
    with pytest.raises(AmountInvalid):
        parse_amount(format_minor(amount_minor, currency), currency)


@pytest.mark.parametrize(
    "text, currency",
    [("92233720368547758.08", "EUR"), ("99999999999999999.99", "EUR"), ("999999999999999999", "BHD")],
)
def test_parse_of_an_amount_above_the_avro_long_is_rejected(text: str, currency: str) -> None:
    with pytest.raises(AmountInvalid):
        parse_amount(text, currency)
