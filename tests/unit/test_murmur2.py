"""app/murmur2.py is Kafka's murmur2: the same value as aiokafka's on any bytes, compiled and interpreted."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from app import murmur2 as loaded
from app.kafka import partition_for
from bench.codec_bench import interpreted

BUILDS = {"loaded": loaded.murmur2, "source": interpreted("app.murmur2").murmur2}


@pytest.mark.parametrize("build", BUILDS)
@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=80))
def test_any_bytes_hash_as_aiokafka_hashes_them(build: str, data: bytes) -> None:
    assert BUILDS[build](data) == aiokafka_murmur2(data)


@pytest.mark.parametrize("build", BUILDS)
def test_every_length_and_every_byte_value_hash_as_aiokafka_hashes_them(build: str) -> None:
    """Each tail length (0 to 3 bytes after the last 4), and bytes above 0x7F in every position of a block."""
    for length in range(0, 12):
        for fill in (0x00, 0x7F, 0x80, 0xFF):
            data = bytes([fill]) * length
            assert BUILDS[build](data) == aiokafka_murmur2(data)
    data = bytes(range(256))
    assert BUILDS[build](data) == aiokafka_murmur2(data)


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("form", [bytearray, memoryview])
def test_a_bytes_like_key_hashes_as_its_bytes(build: str, form: type) -> None:
    assert BUILDS[build](form(b"wallet-42")) == aiokafka_murmur2(b"wallet-42")


# The Java client's own test vectors (org.apache.kafka.common.utils.UtilsTest.testMurmur2): key -> Java's int.
JAVA_VECTORS = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
                b"a-little-bit-longer-string": -1486304829,
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971, b"abc": 479470107}


@pytest.mark.parametrize("build", BUILDS)
def test_the_java_clients_test_vectors(build: str) -> None:
    for key, java_int in JAVA_VECTORS.items():
        assert BUILDS[build](key) == java_int & 0xFFFFFFFF


def test_a_keys_partition_is_the_java_clients() -> None:
    """The DefaultPartitioner's `toPositive(murmur2(key)) % partitions`."""
    for key, java_int in JAVA_VECTORS.items():
        assert partition_for(key, 12) == (java_int & 0x7FFFFFFF) % 12
