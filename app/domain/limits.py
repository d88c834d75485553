"""Bounds the ledger enforces on every command, as one typed, frozen object."""

from __future__ import annotations

from dataclasses import dataclass

from app.domain.errors import LimitsInvalid
from app.domain.money import AMOUNT_MINOR_MAX, CURRENCY_EXPONENTS, currency_exponent


@dataclass(frozen=True, kw_only=True, slots=True)
class Limits:
    """Business bounds, each with its unit last in its name.

    amount_max_major: largest amount of one command, in major units of its currency
        (1_000_000 → 1,000,000.00 EUR = 100_000_000 minor, 1,000,000 JPY = 1_000_000 minor); bounds the damage
        of one mistaken or malicious command.
    holds_open_max: largest number of open holds on one wallet; bounds the size of the wallet's state record.
    balance_max_minor: largest balance a deposit or credit may produce, in minor units. It sits well below
        `AMOUNT_MINOR_MAX` (2**63 - 1) so that a refund, which is never refused for size, still fits an Avro long.
    """

    amount_max_major: int = 1_000_000
    holds_open_max: int = 100
    balance_max_minor: int = 2**62

    def __post_init__(self) -> None:
        for name in ("amount_max_major", "holds_open_max", "balance_max_minor"):
            value = getattr(self, name)
            # bool is an int subclass; True as a limit is a configuration mistake, not 1.
            if type(value) is not int or value <= 0:
                raise LimitsInvalid(f"{name} must be a positive int, got {value!r}")
        if self.balance_max_minor > AMOUNT_MINOR_MAX:
            raise LimitsInvalid(f"balance_max_minor must be at most {AMOUNT_MINOR_MAX} (Avro long)")
        # The per-command maximum must fit an Avro long in the currency with the most minor digits, or an
        # accepted amount (or overdraft limit) could not be written to the event log.
        exponent_max = max(CURRENCY_EXPONENTS.values())
        if self.amount_max_major * 10**exponent_max > AMOUNT_MINOR_MAX:
            raise LimitsInvalid(f"amount_max_major * 10**{exponent_max} must be at most {AMOUNT_MINOR_MAX} (Avro long)")

    def amount_max_minor(self, currency: str) -> int:
        """Largest amount of one command in minor units of `currency`.

        Raises `UnknownCurrency` for an unknown code.
        """
        return self.amount_max_major * 10 ** currency_exponent(currency)


DEFAULT_LIMITS = Limits()
