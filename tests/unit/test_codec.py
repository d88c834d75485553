"""The wire contract: Avro in the Confluent wire format, without a registry (schema id 0) or with an
in-memory stand-in for one. Every command and event kind round-trips, the schemas and the dataclasses
cannot drift apart, and anything that is not a valid message becomes a CodecError with a DLQ code."""

from __future__ import annotations

import dataclasses
import io
import struct
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app import identity
from app.codec import (
    COMMAND_ENVELOPE,
    EVENT_ENVELOPE,
    CodecError,
    CommandCodec,
    EventCodec,
    load_schema,
)
from app.domain import commands as c
from app.domain.commands import COMMAND_TYPES, CommandBase
from app.domain.events import EVENT_TYPES, EventBase
from app.domain.ledger import decide, evolve
from app.domain.state import WalletState

NOW_MS = 1_700_000_000_000
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
COMMANDS_TOPIC = "wallet.commands"
EVENTS_TOPIC = "wallet.events"


@pytest.fixture(scope="module")
def command_codec() -> CommandCodec:
    return CommandCodec(None, COMMANDS_TOPIC)


@pytest.fixture(scope="module")
def event_codec() -> EventCodec:
    return EventCodec(None, EVENTS_TOPIC)


# --- values of every kind ---------------------------------------------------------------------------------


def one_command_of_each_kind() -> list[CommandBase]:
    """Hand-built commands, one or more per kind, with every optional field set away from its default."""
    envelope = {"wallet_id": "w1", "timestamp_ms": NOW_MS}
    return [
        c.OpenWallet(command_id="c-open", **envelope, owner_id="alice", currency="EUR", overdraft_limit_minor=500),
        c.Deposit(command_id="c-dep", **envelope, amount_minor=15075, currency="EUR", reference="inv-1",
                  description="salary \u00e9\u4e2d"),
        c.Withdraw(command_id="c-wd", **envelope, amount_minor=1, currency="EUR", reference="r", description="d"),
        c.Transfer(command_id="t-1", **envelope, destination_wallet_id="w2", amount_minor=2000, currency="EUR",
                   reference="rent"),
        c.TransferCredit(command_id=identity.credit_command_id("w1", "t-1", NOW_MS), wallet_id="w2",
                         timestamp_ms=NOW_MS, transfer_id="t-1", source_wallet_id="w1", amount_minor=2000,
                         currency="EUR"),
        c.TransferRefund(command_id=identity.refund_command_id("w1", "t-1", NOW_MS), **envelope, transfer_id="t-1",
                         destination_wallet_id="w2", amount_minor=2000, currency="EUR", reason_code="WALLET_NOT_FOUND"),
        c.PlaceHold(command_id="c-hold", **envelope, hold_id="h1", amount_minor=300, currency="EUR",
                    expires_at_ms=NOW_MS + 60_000),
        c.CaptureHold(command_id="c-cap-part", **envelope, hold_id="h1", amount_minor=100),
        c.CaptureHold(command_id="c-cap-all", **envelope, hold_id="h1", amount_minor=None),
        c.ReleaseHold(command_id=identity.expiry_command_id("w1", "h1", NOW_MS + 60_000), **envelope, hold_id="h1",
                      reason=c.EXPIRED_REASON),
        c.Freeze(command_id="c-freeze", **envelope, reason="fraud review"),
        c.Unfreeze(command_id="c-unfreeze", **envelope),
        c.Close(command_id="c-close", **envelope),
    ]


class _Ledger:
    """Decides and evolves commands on in-memory wallets, collecting the real events they yield."""

    def __init__(self) -> None:
        self.states: dict[str, WalletState] = {}
        self.events: list[EventBase] = []
        self._sent = 0

    def send(self, command_type: type[CommandBase], wallet_id: str, **fields: Any) -> EventBase:
        self._sent += 1
        command = command_type(command_id=f"cmd-{self._sent}", wallet_id=wallet_id, timestamp_ms=NOW_MS, **fields)
        [event] = decide(self.states.get(wallet_id), command, NOW_MS)  # type: ignore[arg-type]
        after = evolve(self.states.get(wallet_id), event)
        if after is not None:
            self.states[wallet_id] = after
        self.events.append(event)
        return event


def one_event_of_each_kind() -> list[EventBase]:
    """Events decided on real states: a wallet's whole life plus a rejection and a refused credit leg."""
    ledger = _Ledger()
    ledger.send(c.OpenWallet, "w1", owner_id="alice", currency="EUR", overdraft_limit_minor=500)
    ledger.send(c.Deposit, "w1", amount_minor=10_000, currency="EUR", reference="inv-1", description="salary")
    ledger.send(c.Withdraw, "w1", amount_minor=1_000, currency="EUR", reference="atm", description="cash")
    ledger.send(c.Transfer, "w1", destination_wallet_id="w2", amount_minor=2_000, currency="EUR", reference="rent")
    ledger.send(c.TransferRefund, "w1", transfer_id="cmd-4", destination_wallet_id="w2", amount_minor=2_000,
                currency="EUR", reason_code="WALLET_NOT_FOUND")
    ledger.send(c.TransferCredit, "w1", transfer_id="t-9", source_wallet_id="w3", amount_minor=500, currency="EUR")
    ledger.send(c.PlaceHold, "w1", hold_id="h1", amount_minor=300, currency="EUR", expires_at_ms=NOW_MS + 60_000)
    ledger.send(c.CaptureHold, "w1", hold_id="h1", amount_minor=100)
    ledger.send(c.PlaceHold, "w1", hold_id="h2", amount_minor=400, currency="EUR", expires_at_ms=NOW_MS + 60_000)
    ledger.send(c.ReleaseHold, "w1", hold_id="h2", reason="not needed")
    ledger.send(c.Freeze, "w1", reason="review")
    ledger.send(c.Unfreeze, "w1")
    ledger.send(c.Withdraw, "w1", amount_minor=10**8, currency="EUR")  # rejected: more than available
    ledger.send(c.Withdraw, "w1", amount_minor=ledger.states["w1"].balance_minor, currency="EUR")
    ledger.send(c.Close, "w1")
    ledger.send(c.TransferCredit, "w-missing", transfer_id="t-7", source_wallet_id="w1", amount_minor=5,
                currency="EUR")
    return ledger.events


def test_fixtures_cover_every_command_and_event_kind() -> None:
    assert {type(command) for command in one_command_of_each_kind()} == set(COMMAND_TYPES)
    assert {type(event) for event in one_event_of_each_kind()} == set(EVENT_TYPES)


# --- round trips ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", one_command_of_each_kind(), ids=lambda cmd: cmd.command_id)
def test_every_command_kind_round_trips_through_the_wire_format(command_codec: CommandCodec,
                                                                command: CommandBase) -> None:
    assert command_codec.decode(command_codec.encode(command)) == command


@pytest.mark.parametrize("event", one_event_of_each_kind(), ids=lambda event: type(event).__name__)
def test_every_event_kind_round_trips_through_the_wire_format(event_codec: EventCodec, event: EventBase) -> None:
    assert event_codec.decode(event_codec.encode(event)) == event


def test_capture_hold_without_amount_round_trips_as_none(command_codec: CommandCodec) -> None:
    command = c.CaptureHold(command_id="c", wallet_id="w1", timestamp_ms=NOW_MS, hold_id="h1")
    decoded = command_codec.decode(command_codec.encode(command))
    assert decoded == command
    assert decoded.amount_minor is None


def _value_strategy(annotation: str) -> st.SearchStrategy[Any]:
    longs = st.integers(min_value=LONG_MIN, max_value=LONG_MAX)
    return {"str": st.text(max_size=20), "int": longs, "int | None": st.none() | longs}[annotation]


def _instances(cls: type) -> st.SearchStrategy[Any]:
    return st.builds(cls, **{f.name: _value_strategy(str(f.type)) for f in dataclasses.fields(cls)})


@settings(max_examples=150, deadline=None)
@given(command=st.one_of([_instances(cls) for cls in COMMAND_TYPES]))
def test_any_command_whose_values_fit_the_schema_round_trips(command: CommandBase) -> None:
    codec = CommandCodec(None, COMMANDS_TOPIC)
    assert codec.decode(codec.encode(command)) == command


@settings(max_examples=150, deadline=None)
@given(event=st.one_of([_instances(cls) for cls in EVENT_TYPES]))
def test_any_event_whose_values_fit_the_schema_round_trips(event: EventBase) -> None:
    codec = EventCodec(None, EVENTS_TOPIC)
    assert codec.decode(codec.encode(event)) == event


# --- schema and domain cannot drift -----------------------------------------------------------------------

AVRO_TYPE_OF_ANNOTATION = {"str": "string", "int": "long", "int | None": ["null", "long"]}
NO_DEFAULT = object()


def _branches(schema_name: str) -> dict[str, dict[str, Any]]:
    body = next(f for f in load_schema(schema_name)["fields"] if f["name"] == "body")
    return {branch["name"]: branch for branch in body["type"]}


def _dataclass_default(field: dataclasses.Field[Any]) -> object:
    return NO_DEFAULT if field.default is dataclasses.MISSING else field.default


@pytest.mark.parametrize(
    ("schema_name", "base", "envelope"),
    [("wallet_command", CommandBase, COMMAND_ENVELOPE), ("wallet_event", EventBase, EVENT_ENVELOPE)],
)
def test_schema_envelope_is_exactly_the_base_dataclass_fields(schema_name: str, base: type,
                                                              envelope: tuple[str, ...]) -> None:
    schema_fields = [f for f in load_schema(schema_name)["fields"] if f["name"] != "body"]
    base_fields = dataclasses.fields(base)
    assert [f["name"] for f in schema_fields] == [f.name for f in base_fields] == list(envelope)
    assert [f["type"] for f in schema_fields] == [AVRO_TYPE_OF_ANNOTATION[str(f.type)] for f in base_fields]


@pytest.mark.parametrize(("schema_name", "types"), [("wallet_command", COMMAND_TYPES), ("wallet_event", EVENT_TYPES)])
def test_schema_union_has_one_branch_per_domain_kind_and_no_other(schema_name: str, types: tuple[type, ...]) -> None:
    assert sorted(_branches(schema_name)) == sorted(t.__name__ for t in types)


@pytest.mark.parametrize(
    ("schema_name", "cls", "envelope"),
    [("wallet_command", cls, COMMAND_ENVELOPE) for cls in COMMAND_TYPES]
    + [("wallet_event", cls, EVENT_ENVELOPE) for cls in EVENT_TYPES],
    ids=lambda value: value.__name__ if isinstance(value, type) else None,
)
def test_schema_branch_has_exactly_the_dataclass_fields_minus_the_envelope(schema_name: str, cls: type,
                                                                           envelope: tuple[str, ...]) -> None:
    branch = _branches(schema_name)[cls.__name__]
    body_fields = [f for f in dataclasses.fields(cls) if f.name not in envelope]
    assert [f["name"] for f in branch["fields"]] == [f.name for f in body_fields]
    assert [f["type"] for f in branch["fields"]] == [AVRO_TYPE_OF_ANNOTATION[str(f.type)] for f in body_fields]
    # Where the domain has a default, the schema has the same one (a reader fills it in for old writers).
    for schema_field, field in zip(branch["fields"], body_fields):
        if _dataclass_default(field) is not NO_DEFAULT:
            assert schema_field.get("default", NO_DEFAULT) == _dataclass_default(field), field.name


# --- the wire header --------------------------------------------------------------------------------------


class InMemoryRegistry:
    """Stands in for the schema registry: hands out `first_id` on register and knows what it registered."""

    def __init__(self, first_id: int) -> None:
        self._next_id = first_id
        self.schemas: dict[int, Any] = {}
        self.subjects: list[str] = []

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        schema_id = self._next_id
        self._next_id += 1
        self.subjects.append(subject)
        self.schemas[schema_id] = fastavro.parse_schema(schema)
        return schema_id

    def add(self, schema_id: int, schema: dict[str, Any]) -> None:
        self.schemas[schema_id] = fastavro.parse_schema(schema)

    def parsed(self, schema_id: int) -> Any | None:
        return self.schemas.get(schema_id)


def test_message_starts_with_magic_byte_zero_and_schema_id_zero_without_registry(command_codec: CommandCodec) -> None:
    encoded = command_codec.encode(one_command_of_each_kind()[0])
    assert encoded[:5] == b"\x00\x00\x00\x00\x00"


def test_schema_id_in_header_is_four_bytes_big_endian_after_the_magic_byte() -> None:
    registry = InMemoryRegistry(first_id=0x01020304)
    codec = CommandCodec(registry, COMMANDS_TOPIC)  # type: ignore[arg-type]
    command = one_command_of_each_kind()[1]
    encoded = codec.encode(command)
    assert encoded[:5] == b"\x00\x01\x02\x03\x04"
    assert registry.subjects == [f"{COMMANDS_TOPIC}-value"]
    assert codec.decode(encoded) == command


def test_body_after_the_header_is_plain_avro_of_the_envelope_record(command_codec: CommandCodec) -> None:
    command = c.Deposit(command_id="c1", wallet_id="w1", timestamp_ms=NOW_MS, amount_minor=5, currency="EUR")
    record = fastavro.schemaless_reader(io.BytesIO(command_codec.encode(command)[5:]),
                                        fastavro.parse_schema(load_schema("wallet_command")),
                                        return_record_name=True)
    assert record == {"command_id": "c1", "wallet_id": "w1", "timestamp_ms": NOW_MS,
                      "body": ("wallet.v1.Deposit", {"amount_minor": 5, "currency": "EUR", "reference": "",
                                                     "description": ""})}


def test_message_of_an_older_writer_schema_known_to_the_registry_is_read_with_defaults() -> None:
    # An older producer's Deposit had no description; BACKWARD compatibility fills in the default.
    older = load_schema("wallet_command")
    body = next(f for f in older["fields"] if f["name"] == "body")
    deposit = next(branch for branch in body["type"] if branch["name"] == "Deposit")
    deposit["fields"] = [f for f in deposit["fields"] if f["name"] != "description"]
    registry = InMemoryRegistry(first_id=10)
    registry.add(7, older)
    codec = CommandCodec(registry, COMMANDS_TOPIC)  # type: ignore[arg-type]
    out = io.BytesIO()
    out.write(struct.pack(">bI", 0, 7))
    fastavro.schemaless_writer(out, fastavro.parse_schema(older), {
        "command_id": "c1", "wallet_id": "w1", "timestamp_ms": NOW_MS,
        "body": ("wallet.v1.Deposit", {"amount_minor": 5, "currency": "EUR", "reference": "r"}),
    })
    assert codec.decode(out.getvalue()) == c.Deposit(command_id="c1", wallet_id="w1", timestamp_ms=NOW_MS,
                                                     amount_minor=5, currency="EUR", reference="r", description="")


# --- what is not a message --------------------------------------------------------------------------------


def _code_of(codec: CommandCodec | EventCodec, value: bytes | None) -> str:
    with pytest.raises(CodecError) as raised:
        codec.decode(value)
    return raised.value.code


@pytest.mark.parametrize("value", [None, b"", b"\x00", b"\x00\x00\x00\x00"], ids=["none", "0", "1", "4"])
def test_decode_of_a_message_shorter_than_the_header_is_rejected_as_truncated(command_codec: CommandCodec,
                                                                              value: bytes | None) -> None:
    assert _code_of(command_codec, value) == "TRUNCATED"


@pytest.mark.parametrize("magic", [1, 0x7F, 0x80, 0xFF])
def test_decode_of_wrong_magic_byte_is_rejected_with_bad_magic_byte(command_codec: CommandCodec, magic: int) -> None:
    valid = command_codec.encode(one_command_of_each_kind()[0])
    assert _code_of(command_codec, bytes([magic]) + valid[1:]) == "BAD_MAGIC_BYTE"


@pytest.mark.parametrize("schema_id", [1, 0x00010000, 0xFFFFFFFF])
def test_decode_of_another_schema_id_without_registry_is_rejected_as_unknown_schema(command_codec: CommandCodec,
                                                                                    schema_id: int) -> None:
    valid = command_codec.encode(one_command_of_each_kind()[0])
    assert _code_of(command_codec, struct.pack(">bI", 0, schema_id) + valid[5:]) == "UNKNOWN_SCHEMA"


def test_decode_of_a_schema_id_the_registry_does_not_know_is_rejected_as_unknown_schema() -> None:
    codec = EventCodec(InMemoryRegistry(first_id=3), EVENTS_TOPIC)  # type: ignore[arg-type]
    valid = codec.encode(one_event_of_each_kind()[0])
    assert _code_of(codec, struct.pack(">bI", 0, 4) + valid[5:]) == "UNKNOWN_SCHEMA"


def test_decode_of_a_header_without_body_is_rejected_as_undecodable(command_codec: CommandCodec) -> None:
    assert _code_of(command_codec, b"\x00\x00\x00\x00\x00") == "UNDECODABLE"


def test_decode_of_a_cut_off_body_is_rejected_as_undecodable(event_codec: EventCodec) -> None:
    valid = event_codec.encode(one_event_of_each_kind()[1])
    assert _code_of(event_codec, valid[:-3]) == "UNDECODABLE"


def test_decode_of_a_union_index_beyond_the_kinds_is_rejected_as_undecodable(command_codec: CommandCodec) -> None:
    out = io.BytesIO()
    out.write(b"\x00\x00\x00\x00\x00")
    fastavro.schemaless_writer(out, {"type": "record", "name": "R", "fields": [
        {"name": "command_id", "type": "string"}, {"name": "wallet_id", "type": "string"},
        {"name": "timestamp_ms", "type": "long"}, {"name": "branch", "type": "long"}]},
        {"command_id": "c", "wallet_id": "w", "timestamp_ms": 1, "branch": len(COMMAND_TYPES)})
    assert _code_of(command_codec, out.getvalue()) == "UNDECODABLE"


def test_codec_error_carries_its_code_and_detail() -> None:
    error = CodecError("TRUNCATED", "too short")
    assert (error.code, error.detail, str(error)) == ("TRUNCATED", "too short", "TRUNCATED: too short")


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=80))
def test_random_body_after_a_valid_header_decodes_to_a_command_or_raises_undecodable(body: bytes) -> None:
    codec = CommandCodec(None, COMMANDS_TOPIC)
    try:
        decoded = codec.decode(b"\x00\x00\x00\x00\x00" + body)
    except CodecError as error:
        assert error.code == "UNDECODABLE"
    else:
        assert type(decoded) in COMMAND_TYPES


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=80))
def test_random_body_after_a_valid_header_decodes_to_an_event_or_raises_undecodable(body: bytes) -> None:
    codec = EventCodec(None, EVENTS_TOPIC)
    try:
        decoded = codec.decode(b"\x00\x00\x00\x00\x00" + body)
    except CodecError as error:
        assert error.code == "UNDECODABLE"
    else:
        assert type(decoded) in EVENT_TYPES


@settings(max_examples=200, deadline=None)
@given(value=st.binary(max_size=40))
def test_any_bytes_decode_to_a_command_or_raise_codec_error(value: bytes) -> None:
    codec = CommandCodec(None, COMMANDS_TOPIC)
    try:
        decoded = codec.decode(value)
    except CodecError as error:
        assert error.code in {"TRUNCATED", "BAD_MAGIC_BYTE", "UNKNOWN_SCHEMA", "UNDECODABLE"}
    else:
        assert type(decoded) in COMMAND_TYPES
