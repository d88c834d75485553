"""The processor's positions record (agents/input_positions.py): what a transaction writes is what a new
owner reads back."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from agents.input_positions import PositionsRecordUnreadable, decode_positions, encode_positions, position_key

TOPICS = ("wallet.commands", "wallet.transfer-legs", "bench-x-1a2b3c.commands")


@given(st.integers(0, 1023), st.dictionaries(st.sampled_from(TOPICS), st.integers(0, 2**63 - 1), min_size=1))
def test_positions_round_trip_for_any_partition_and_offsets(partition: int, offsets: dict[str, int]) -> None:
    positions = {TopicPartition(topic, partition): offset for topic, offset in offsets.items()}
    assert decode_positions(encode_positions(positions), partition) == positions


def test_the_record_is_keyed_by_partition_and_reads_as_plain_json() -> None:
    positions = {TopicPartition("wallet.transfer-legs", 3): 7, TopicPartition("wallet.commands", 3): 120}
    assert position_key(3) == b"3"
    assert encode_positions(positions) == b'{"wallet.commands":120,"wallet.transfer-legs":7}'


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1, 2]", b'{"wallet.commands": "7"}', b'{"wallet.commands": -1}',
                                 b'{"wallet.commands": 1.5}', b'{"wallet.commands": true}', None])
def test_a_malformed_positions_record_is_refused_by_name(raw) -> None:
    with pytest.raises(PositionsRecordUnreadable, match="partition 2"):
        decode_positions(raw, 2)
