"""`builder(cls)` (app/domain/frozen.py) builds exactly what `cls(...)` builds, without the frozen `__init__`."""

from __future__ import annotations

import dataclasses

import pytest

from app.domain import commands as c
from app.domain import events as e
from app.domain.effects import MoneyEffect
from app.domain.frozen import builder
from app.domain.state import Hold, WalletState


def _arguments(cls: type) -> dict[str, object]:
    """A value per field: a distinct int for int fields, a distinct string otherwise."""
    values: dict[str, object] = {}
    for number, field in enumerate(dataclasses.fields(cls)):
        values[field.name] = number * 7 - 20 if field.type in ("int", "int | None") else f"{field.name}-é-{number}"
    return values


@pytest.mark.parametrize("cls", [*e.EVENT_TYPES, *c.COMMAND_TYPES, *c.INTERNAL_COMMAND_TYPES, WalletState, Hold,
                                 MoneyEffect], ids=lambda cls: cls.__name__)
def test_a_built_value_equals_the_constructed_one_and_stays_frozen(cls: type) -> None:
    arguments = _arguments(cls)
    built, constructed = builder(cls)(**arguments), cls(**arguments)
    assert type(built) is cls
    assert built == constructed and hash(built) == hash(constructed)
    assert dataclasses.astuple(built) == dataclasses.astuple(constructed)
    name = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(built, name, 1)


def test_defaults_apply_as_in_the_constructor() -> None:
    assert builder(MoneyEffect)(balance_minor=5) == MoneyEffect(balance_minor=5)
    assert builder(c.Deposit)(command_id="d", wallet_id="w", timestamp_ms=1, amount_minor=2, currency="EUR") == \
        c.Deposit(command_id="d", wallet_id="w", timestamp_ms=1, amount_minor=2, currency="EUR")
    arguments = _arguments(WalletState)
    del arguments["holds"]
    assert builder(WalletState)(**arguments).holds == ()


def test_arguments_are_checked_as_the_constructor_checks_them() -> None:
    arguments = _arguments(e.Deposited)
    build = builder(e.Deposited)
    with pytest.raises(TypeError):
        build(**{**arguments, "unknown": 1})
    del arguments["currency"]
    with pytest.raises(TypeError):
        build(**arguments)
    with pytest.raises(TypeError):  # keyword-only, as the class
        build(*_arguments(e.Deposited).values())


def test_a_class_it_cannot_build_exactly_is_refused() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        amount_minor: int

        def __post_init__(self) -> None:
            raise ValueError("checked")

    @dataclasses.dataclass(slots=True)
    class Mutable:
        amount_minor: int

    @dataclasses.dataclass(frozen=True)
    class WithoutSlots:
        amount_minor: int

    for cls in (Checked, Mutable, WithoutSlots):
        with pytest.raises(TypeError):
            builder(cls)
