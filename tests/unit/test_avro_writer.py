"""The fast writer (app/avro_writer.py) writes exactly the bytes fastavro writes, or declines.

For every command and event kind and any value the schema holds (longs to both ends of 64 bits, any text, the
optional amount absent or present), the codec's encode (fast writer first) gives the same bytes as fastavro
alone; for a value the schema cannot hold, both refuse it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain import commands as c
from app.domain.commands import COMMAND_TYPES
from app.domain.events import EVENT_TYPES
from bench.codec_bench import codecs
from tests.unit.test_codec import _instances, one_command_of_each_kind, one_event_of_each_kind


EVENTS_GENERAL, COMMANDS_GENERAL = codecs("fastavro")  # writing (and reading) through fastavro only
# Per build of the writer (as loaded, and the same source interpreted: what runs where the compiled build is
# missing, tests/unit/test_compiled.py): (its event codec, its command codec).
BUILDS = {build: codecs(build) for build in ("loaded", "source")}
EVENTS, COMMANDS = BUILDS["loaded"]


def _pair(obj: Any, build: str) -> tuple[Any, Any]:
    """(the fast codec of `build` for `obj`'s schema, the same codec writing through fastavro only)."""
    events, commands = BUILDS[build]
    return (commands, COMMANDS_GENERAL) if type(obj) in COMMAND_TYPES else (events, EVENTS_GENERAL)


def _outcome(codec: Any, obj: Any) -> tuple[str, Any]:
    try:
        return "bytes", codec.encode(obj)
    except Exception as error:  # fastavro raises several types for a value the schema cannot hold
        return "error", type(error).__name__


@pytest.mark.parametrize("obj", one_event_of_each_kind() + one_command_of_each_kind(),
                         ids=lambda obj: type(obj).__name__)
@pytest.mark.parametrize("build", BUILDS)
def test_every_kind_is_written_as_fastavro_writes_it(obj: Any, build: str) -> None:
    fast, general = _pair(obj, build)
    buffer = bytearray()
    assert fast._own_writer.write(obj, buffer)
    assert fast.encode(obj) == general.encode(obj)


@pytest.mark.parametrize("build", BUILDS)
@settings(max_examples=400, deadline=None)
@given(obj=st.one_of([_instances(cls) for cls in EVENT_TYPES + COMMAND_TYPES]))
def test_any_value_is_written_as_fastavro_writes_it(obj: Any, build: str) -> None:
    fast, general = _pair(obj, build)
    assert fast.encode(obj) == general.encode(obj)


class _Int(int):
    """An int that is not exactly an `int`: declined, as a `bool` is."""


def _capture(**values: Any) -> c.CaptureHold:
    fields = {"command_id": "c1", "wallet_id": "w1", "timestamp_ms": 1, "hold_id": "h1", "amount_minor": None}
    return c.CaptureHold(**{**fields, **values})


@pytest.mark.parametrize("amount", [None, 0, 1, -1, 63, -64, 64, 2**62, -(2**62) - 1, 2**63 - 1, -(2**63)])
@pytest.mark.parametrize("build", BUILDS)
def test_the_optional_amount_is_written_absent_or_present_at_both_ends(amount: int | None, build: str) -> None:
    commands = BUILDS[build][1]
    command = _capture(amount_minor=amount)
    assert commands._own_writer.write(command, bytearray())  # written by the fast writer, not handed on
    assert commands.encode(command) == COMMANDS_GENERAL.encode(command)


@pytest.mark.parametrize(("name", "values"), [
    ("long above 64 bits", {"amount_minor": 2**63}),
    ("long below 64 bits", {"amount_minor": -(2**63) - 1}),
    ("bool for a long", {"timestamp_ms": True}),
    ("text for a long", {"timestamp_ms": "1"}),
    ("None for a string", {"hold_id": None}),
    ("bytes for a string", {"hold_id": b"h1"}),
    ("lone surrogate", {"hold_id": "\ud800"}),
    ("int subclass for a long", {"timestamp_ms": _Int(1)}),
])
@pytest.mark.parametrize("build", BUILDS)
def test_a_value_the_schema_cannot_hold_is_declined_and_refused_as_fastavro_refuses_it(name: str,
                                                                                         values: dict,
                                                                                         build: str) -> None:
    commands = BUILDS[build][1]
    command = _capture(**values)
    assert not commands._own_writer.write(command, bytearray())
    assert _outcome(commands, command) == _outcome(COMMANDS_GENERAL, command)
