"""A writer of domain objects straight into one schema's Avro binary: events, transfer legs, the API's commands.

The counterpart of app/avro_reader.py, for the same shape of schema: a record of `string` and `long` fields
whose last field, `body`, is a union of records (one per kind) of `string`, `long` and `["null", "long"]`
fields (the command schema's optional amount). Every decided command is encoded once as its outcome event
(and a transfer once more as its leg), every HTTP write once as its command; fastavro spent about 17 us on
an event, mostly walking the schema as dicts. `FlatRecordWriter.write` walks precomputed field kinds instead
and appends varints and UTF-8 bytes to one buffer.

It is a fast path only: for a value that is not an `int` in the 64-bit range of a long or not a `str` that
encodes to UTF-8, it declines (returns False) and the codec encodes the object with fastavro, which raises what
it raises for such a value. Whatever it writes is byte for byte what fastavro writes
(tests/unit/test_avro_writer.py compares them on every kind over the whole range of values and on any text).

It runs compiled: setup.py builds it with Cython and the C types of app/avro_writer.pxd (the same source, about
2.3 times as fast). Interpreted, where no C compiler was found, it writes the same; the tests run both forms.
"""

from __future__ import annotations

import operator
from typing import Any

from app.avro_reader import OPTIONAL_LONG, STRING, field_kinds

_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1


def _append_long(out: bytearray, value: int) -> None:
    """Avro's zig-zag varint of a long already known to be in range."""
    number = (value << 1) ^ (value >> 63)
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)


def _append_fields(out: bytearray, values: tuple[Any, ...], kinds: tuple[int, ...]) -> bool:
    """Append `values` as fields of `kinds`; False on a value that does not fit its kind.

    Written so that it means the same compiled with the C types of app/avro_writer.pxd (`number` and `size`
    unsigned 64-bit): a long is range-checked as a Python int before its zig-zag form (never negative, below
    2**64) is taken into one."""
    for index in range(len(kinds)):
        value = values[index]
        kind = kinds[index]
        if kind == STRING:
            if type(value) is not str:
                return False
            try:
                data = value.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate
                return False
            size = len(data)
            if size < 64:  # one byte: most ids, codes and texts
                out.append(size << 1)
            else:
                _append_long(out, size)
            out += data
            continue
        if kind == OPTIONAL_LONG:
            if value is None:
                out.append(0)  # union branch 0, null
                continue
            out.append(2)  # union branch 1 (zig-zag 2), then the long
        if type(value) is not int or not _LONG_MIN <= value <= _LONG_MAX:
            return False
        number = (value << 1) ^ (value >> 63)  # _append_long, inlined: the hottest loop of the writer
        while number > 0x7F:
            out.append((number & 0x7F) | 0x80)
            number >>= 7
        out.append(number)
    return True


def _getter(names: list[str]):
    """One C call that returns the values of `names` as a tuple (attrgetter of one name returns the value)."""
    if not names:
        return lambda obj: ()
    if len(names) == 1:
        get = operator.attrgetter(names[0])
        return lambda obj: (get(obj),)
    return operator.attrgetter(*names)


class FlatRecordWriter:
    """Writes objects of the kinds of one schema of the event log's shape (see the module)."""

    def __init__(self, envelope: tuple[int, ...], envelope_of,
                 branches: dict[type, tuple[bytes, tuple[int, ...], Any]]) -> None:
        self._envelope = envelope
        self._envelope_of = envelope_of
        self._branches = branches

    @classmethod
    def for_schema(cls, schema: dict[str, Any], types: dict[str, type]) -> FlatRecordWriter | None:
        """A writer of `schema` (as JSON) for `types` (union branch name -> class, fields named as in the
        schema); None when the schema is not of the shape this writer writes."""
        fields = schema["fields"]
        envelope = field_kinds(fields[:-1])
        union = fields[-1]["type"] if fields else None
        if envelope is None or not isinstance(union, list):
            return None
        branches = {}
        for index, branch in enumerate(union):
            if not isinstance(branch, dict) or branch.get("type") != "record" or branch["name"] not in types:
                return None
            kinds = field_kinds(branch["fields"])
            if kinds is None:
                return None
            index_bytes = bytearray()
            _append_long(index_bytes, index)
            branches[types[branch["name"]]] = (bytes(index_bytes), kinds,
                                              _getter([field["name"] for field in branch["fields"]]))
        return cls(envelope, _getter([field["name"] for field in fields[:-1]]), branches)

    def write(self, obj: Any, out: bytearray) -> bool:
        """Append the encoding of `obj` to `out`; False (with `out` in any state) when this writer cannot
        encode it: encode it the general way."""
        branch = self._branches.get(type(obj))
        if branch is None:
            return False
        index, kinds, values_of = branch
        if not _append_fields(out, self._envelope_of(obj), self._envelope):
            return False
        out += index
        return _append_fields(out, values_of(obj), kinds)
