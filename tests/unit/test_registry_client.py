"""The registry client's pure parts: schema ids read from wire headers, and decoding that never does I/O.

A schema id nobody resolved is a caller's bug (SchemaNotResolved), never a DLQ reason; what the registry
answers, and what happens while it does not, is tested on the real registry
(tests/integration/test_registry_client.py, test_registry_faults.py, tests/system/test_registry_outage.py).
"""

from __future__ import annotations

import struct

import pytest

from app.codec import CodecError, CommandCodec, SchemaNotResolved, SchemaRegistry, schema_ids
from app.domain import commands as c
from app.settings import Settings, SettingsError

# Nothing listens here: constructing the client must not touch the network.
NOWHERE = "http://127.0.0.1:9/apis/ccompat/v7"


def _header(schema_id: int, magic: int = 0) -> bytes:
    return bytes([magic]) + struct.pack(">I", schema_id)


def test_schema_ids_are_the_distinct_ids_of_the_wire_headers() -> None:
    values = [_header(7) + b"body", _header(7) + b"other", _header(0x01020304), _header(9)]
    assert schema_ids(values) == {7, 0x01020304, 9}


@pytest.mark.parametrize("value", [None, b"", b"\x00", b"\x00\x00\x00\x00"], ids=["none", "0", "1", "4"])
def test_a_value_shorter_than_the_header_names_no_schema_id(value: bytes | None) -> None:
    assert schema_ids([value]) == set()


@pytest.mark.parametrize("magic", [1, 0x7F, 0x80, 0xFF])
def test_a_value_with_another_magic_byte_names_no_schema_id(magic: int) -> None:
    assert schema_ids([_header(5, magic) + b"x"]) == set()


def test_the_header_alone_names_its_schema_id() -> None:
    assert schema_ids([_header(12)]) == {12}


def test_a_fresh_client_asks_for_every_id_it_has_not_read() -> None:
    registry = SchemaRegistry(NOWHERE)
    assert registry.missing([_header(1), _header(2) + b"x", _header(3), None, b"\x01junk"]) == {1, 2, 3}


def test_the_client_takes_its_timeout_and_backoff_from_the_settings() -> None:
    settings = Settings(registry_url=NOWHERE, registry_request_timeout_s=0.5, registry_backoff_initial_ms=10,
                        registry_backoff_max_ms=200)
    registry = SchemaRegistry.for_settings(settings)
    assert (registry.url, registry.request_timeout_s, registry.backoff_initial_s, registry.backoff_max_s) == (
        NOWHERE, 0.5, 0.01, 0.2)


def test_decoding_an_id_nobody_resolved_raises_schema_not_resolved_and_is_never_poison() -> None:
    codec = CommandCodec(None, "wallet.commands")
    codec.registry = SchemaRegistry(NOWHERE)  # own schema id 0; reading through a client that resolved nothing
    close = c.Close(command_id="c1", wallet_id="w1", timestamp_ms=1)
    valid = codec.encode(close)
    with pytest.raises(SchemaNotResolved) as raised:
        codec.decode(_header(77) + valid[5:])
    assert not isinstance(raised.value, CodecError)
    assert codec.decode(valid) == close  # its own id: no registry needed


@pytest.mark.parametrize("name", ["registry_request_timeout_s", "registry_backoff_initial_ms",
                                  "registry_backoff_max_ms"])
def test_registry_timeout_and_backoff_must_be_positive(name: str) -> None:
    with pytest.raises(SettingsError, match=name.upper()):
        Settings(**{name: 0})
