"""Kafka's murmur2 hash of a record key: how Java clients, aiokafka and librdkafka's `murmur2_random` choose a
key's partition (`partition = (murmur2(key) & 0x7FFFFFFF) % partitions`, app/kafka.py `partition_for`).

The same function as aiokafka's `aiokafka.partitioner.murmur2` (tests/unit/test_murmur2.py compares them on
any bytes), written so that it means the same compiled with the C types of app/murmur2.pxd (`h` and `k`
unsigned 32-bit: every product is taken modulo 2**32, which the masks do interpreted). It runs compiled
(setup.py): the processor hashes every command's wallet id it has not seen yet to check its partition, and
the interpreted loop cost about 6 us per key.
"""

from __future__ import annotations

_SEED = 0x9747B28C
_M = 0x5BD1E995  # the mixing constant
_MASK = 0xFFFFFFFF  # 32 bits


def murmur2(data: bytes) -> int:
    """Murmur2 (32 bits, Kafka's seed) of `data`."""
    raw = data if type(data) is bytes else bytes(data)  # a bytearray or memoryview: the bytes it holds
    length = len(raw)
    h = (_SEED ^ length) & _MASK
    end = length - length % 4
    for i in range(0, end, 4):
        k = raw[i]
        k |= raw[i + 1] << 8
        k |= raw[i + 2] << 16
        k |= raw[i + 3] << 24
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    extra = length % 4
    if extra >= 3:
        h ^= raw[end + 2] << 16
    if extra >= 2:
        h ^= raw[end + 1] << 8
    if extra >= 1:
        h ^= raw[end]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h
