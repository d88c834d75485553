"""The fast reader of events and commands (app/avro_reader.py) reads exactly what fastavro reads, or declines.

On any bytes after a valid header, the codec's decode (fast reader first) gives the same outcome as a decode
through fastavro alone: the same object of the same type, or the same CodecError."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.avro_reader import FlatRecordReader
from app.codec import COMMAND_SCHEMA, CodecError, EventCodec, HEADER, load_schema
from app.domain import commands as c
from app.domain.commands import COMMAND_TYPES
from app.domain.events import EVENT_TYPES
from bench.codec_bench import codecs
from tests.unit.test_codec import _instances, one_command_of_each_kind, one_event_of_each_kind

WIRE_HEADER = b"\x00\x00\x00\x00\x00"  # magic byte 0, schema id 0 (no registry)


GENERAL, COMMANDS_GENERAL = codecs("fastavro")  # reading (and writing) through fastavro only
# Per build of the reader (as loaded, and the same source interpreted: what runs where the compiled build is
# missing, tests/unit/test_compiled.py): its event codec and its command codec.
BUILDS = {build: codecs(build) for build in ("loaded", "source")}
FAST, COMMANDS = BUILDS["loaded"]


def _outcome(codec: EventCodec, value: bytes) -> tuple[str, Any]:
    try:
        decoded = codec.decode(value)
    except CodecError as error:
        return "error", error.code
    return type(decoded).__name__, dataclasses.astuple(decoded)


def _zigzag_varint(number: int) -> bytes:
    encoded = (number << 1) ^ (number >> 63)
    out = bytearray()
    while encoded > 0x7F:
        out.append(encoded & 0x7F | 0x80)
        encoded >>= 7
    out.append(encoded)
    return bytes(out)


# Per schema: its fast codec, the same codec reading through fastavro only, one message of each kind, and the
# strategy of any message it holds.
# Both builds of the reader (as loaded, and from its source).
SCHEMAS = {
    f"{name}, {build}": (fast, general, objs, strategy)
    for build, (events, commands) in BUILDS.items()
    for name, fast, general, objs, strategy in [
        ("events", events, GENERAL, one_event_of_each_kind(), st.one_of([_instances(cls) for cls in EVENT_TYPES])),
        ("commands", commands, COMMANDS_GENERAL, one_command_of_each_kind(),
         st.one_of([_instances(cls) for cls in COMMAND_TYPES]))]
}
EACH_KIND = [(name, obj) for name, (_, _, objs, _) in SCHEMAS.items() for obj in objs]


def _read_as_fastavro_reads(schema: str, obj: Any) -> None:
    fast, general, _, _ = SCHEMAS[schema]
    value = fast.encode(obj)
    read = fast._own_reader.read(value, HEADER.size)
    assert type(read) is type(obj) and read == obj == general.decode(value)


@pytest.mark.parametrize(("schema", "obj"), EACH_KIND, ids=lambda x: x if isinstance(x, str) else type(x).__name__)
def test_every_kind_is_read_by_the_fast_reader_as_fastavro_reads_it(schema: str, obj: Any) -> None:
    _read_as_fastavro_reads(schema, obj)


@pytest.mark.parametrize("schema", SCHEMAS)
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_message_is_read_by_the_fast_reader_as_fastavro_reads_it(schema: str, data: st.DataObject) -> None:
    """Any value the schema holds: longs to both ends of 64 bits, any text, the optional amount or none."""
    _read_as_fastavro_reads(schema, data.draw(SCHEMAS[schema][3]))


@pytest.mark.parametrize("schema", SCHEMAS)
@settings(max_examples=500, deadline=None)
@given(data=st.data())
def test_a_damaged_message_decodes_as_fastavro_decodes_it(schema: str, data: st.DataObject) -> None:
    """A byte changed, bytes cut off or appended: the same message, the same other message, or the same error."""
    fast, general, objs, _ = SCHEMAS[schema]
    value = bytearray(fast.encode(data.draw(st.sampled_from(objs))))
    damage = data.draw(st.sampled_from(["change", "cut", "append"]))
    if damage == "change":
        value[data.draw(st.integers(HEADER.size, len(value) - 1))] = data.draw(st.integers(0, 255))
    elif damage == "cut":
        del value[data.draw(st.integers(HEADER.size, len(value) - 1)):]
    else:
        value += data.draw(st.binary(min_size=1, max_size=8))
    assert _outcome(fast, bytes(value)) == _outcome(general, bytes(value))


@pytest.mark.parametrize("schema", SCHEMAS)
@settings(max_examples=500, deadline=None)
@given(body=st.binary(max_size=120))
def test_any_body_decodes_as_fastavro_decodes_it(schema: str, body: bytes) -> None:
    fast, general, _, _ = SCHEMAS[schema]
    assert _outcome(fast, WIRE_HEADER + body) == _outcome(general, WIRE_HEADER + body)


def _opened(wallet_id: bytes = b"\x04w1", index: bytes = b"\x00", tail: bytes = b"\x02o\x06EUR\x00") -> bytes:
    """A WalletOpened body, parts replaceable: wallet_id, command_id, 5 longs, hash, union index, fields."""
    return WIRE_HEADER + wallet_id + b"\x02c" + b"\x02" * 5 + b"\x02h" + index + tail


@pytest.mark.parametrize(("name", "value"), [
    ("clean", _opened()),
    ("varint over ten bytes", _opened(index=b"\x80" * 10 + b"\x00")),
    ("varint over 64 bits", _opened(index=b"\xff" * 9 + b"\x7f")),
    ("varint one bit over 64 bits", _opened(index=b"\x80" * 9 + b"\x02")),
    ("negative string length", _opened(wallet_id=_zigzag_varint(-1) + b"w1")),
    ("string length beyond the end", _opened(tail=b"\x02o\x06EU")),
    ("union index negative", _opened(index=_zigzag_varint(-1))),
    ("union index beyond the kinds", _opened(index=_zigzag_varint(len(EVENT_TYPES)))),
    ("invalid UTF-8", _opened(wallet_id=b"\x04\xff\xfe")),
    ("cut off", _opened()[:-1]),
])
@pytest.mark.parametrize("build", BUILDS)
def test_the_fast_reader_declines_anything_but_a_clean_encoding(name: str, value: bytes, build: str) -> None:
    fast = BUILDS[build][0]
    read = fast._own_reader.read(value, HEADER.size)
    assert (read is not None) == (name == "clean")
    assert _outcome(fast, value) == _outcome(GENERAL, value)


def test_a_schema_of_another_shape_gets_no_fast_reader() -> None:
    """A field of a type the reader does not read (here an int) leaves the codec to fastavro alone."""
    schema = load_schema(COMMAND_SCHEMA)
    schema["fields"][-1]["type"][0]["fields"][0]["type"] = "int"
    assert FlatRecordReader.for_schema(schema, {t.__name__: t for t in c.COMMAND_TYPES}) is None


def _capture(amount: bytes) -> bytes:
    """A CaptureHold body: command_id, wallet_id, timestamp, its union index, hold_id, then `amount`."""
    kinds = [branch["name"] for branch in load_schema(COMMAND_SCHEMA)["fields"][-1]["type"]]
    index = _zigzag_varint(kinds.index("CaptureHold"))
    return WIRE_HEADER + b"\x02c\x04w1\x02" + index + b"\x04h1" + amount


@pytest.mark.parametrize(("name", "amount", "read"), [
    ("absent", b"\x00", None),
    ("present", b"\x02" + _zigzag_varint(250), 250),
    ("present, negative", b"\x02" + _zigzag_varint(-(2**63)), -(2**63)),
    ("union index 2", b"\x04\x02", "declined"),
    ("union index negative", _zigzag_varint(-1) + b"\x02", "declined"),
    ("union index as a long varint", b"\x80\x00", "declined"),
    ("cut off after the index", b"\x02", "declined"),
])
@pytest.mark.parametrize("build", BUILDS)
def test_the_optional_amount_is_read_absent_or_present_and_anything_else_declined(name: str, amount: bytes,
                                                                                  read: object, build: str) -> None:
    commands = BUILDS[build][1]
    value = _capture(amount)
    found = commands._own_reader.read(value, HEADER.size)
    if read == "declined":
        assert found is None
    else:
        assert type(found) is c.CaptureHold and found.amount_minor == read
    assert _outcome(commands, value) == _outcome(COMMANDS_GENERAL, value)


@pytest.mark.parametrize("build", BUILDS)
def test_a_long_is_read_at_both_ends_of_its_range(build: str) -> None:
    fast = BUILDS[build][0]
    for number in (-(2**63), -(2**63) + 1, -(2**62), -1, 0, 1, 63, 64, 2**62, 2**63 - 1):
        value = _opened(tail=b"\x02o\x06EUR" + _zigzag_varint(number))
        assert fast._own_reader.read(value, HEADER.size).overdraft_limit_minor == number
        assert _outcome(fast, value) == _outcome(GENERAL, value)


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("form", [bytearray, memoryview])
def test_a_message_in_any_bytes_like_form_is_read_as_its_bytes(build: str, form: type) -> None:
    """Kafka clients hand over `bytes`; a caller holding a bytearray or memoryview gets the same object."""
    events, commands = BUILDS[build]
    for fast, obj in [(events, obj) for obj in one_event_of_each_kind()] + [
            (commands, obj) for obj in one_command_of_each_kind()]:
        value = fast.encode(obj)
        assert fast._own_reader.read(form(value), HEADER.size) == obj
        assert fast.decode(form(value)) == obj
