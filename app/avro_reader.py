"""A reader of one schema's Avro binary straight into domain objects, for the hot readers of events and commands.

The event and command schemas are a record of `string` and `long` fields whose last field, `body`, is a union
of records (one per kind) of `string`, `long` and `["null", "long"]` fields (the command schema's optional
amount). For a message written with the reader's own schema,
`FlatRecordReader.read` decodes those fields and builds the event through its kind's builder
(app/domain/frozen.py): no dict per message, no `**kwargs` merge, no `__init__` per field. It is a fast path
only: it returns None for anything that is not a clean encoding (a cut-off body, a varint over ten bytes or
64 bits, a negative or overlong string length, a union index outside the kinds or an optional field's union
index other than a one-byte 0 or 1, invalid UTF-8), and the
codec then decodes the message with fastavro, which decides what such bytes are (app/codec.py). On every clean
encoding both give the same object (tests/unit/test_avro_reader.py compares them on any bytes).

It runs compiled: setup.py builds it with Cython and the C types of app/avro_reader.pxd (the same source, about
3 times as fast). Interpreted, where no C compiler was found, it reads the same; the tests run both forms.
"""

from __future__ import annotations

from typing import Any, Callable

from app.domain.frozen import builder

# An Avro long is at most 10 bytes of varint (7 bits each) and 64 bits once read.
_VARINT_SHIFT_MAX = 63
# Field kinds of a flat record: the only types this reader (and app/avro_writer.py) reads and writes.
LONG, STRING, OPTIONAL_LONG = 0, 1, 2
_KIND_OF_TYPE = {"long": LONG, "string": STRING, ("null", "long"): OPTIONAL_LONG}


def field_kinds(fields: list[dict[str, Any]]) -> tuple[int, ...] | None:
    """Per field of a record schema, its kind; None when a field is of any other type."""
    kinds = []
    for field in fields:
        kind = _KIND_OF_TYPE.get(tuple(field["type"]) if isinstance(field["type"], list) else field["type"])
        if kind is None:
            return None
        kinds.append(kind)
    return tuple(kinds)


def _read_fields(value: bytes, pos: int, kinds: tuple[int, ...], out: list[Any]) -> int:
    """Append the fields of `kinds` read from `value` at `pos` to `out`; the position after them. Returns -1
    on anything but a clean encoding; raises IndexError on a cut-off body, UnicodeDecodeError on bad text.

    Written so that it means the same compiled with the C types of app/avro_reader.pxd (`byte` and `number`
    unsigned 64-bit, `signed` 64-bit): no intermediate value needs more than 64 bits."""
    for index in range(len(kinds)):
        kind = kinds[index]
        if kind == OPTIONAL_LONG:  # a union of null (branch 0) and long (branch 1, zig-zag 2)
            byte = value[pos]
            pos += 1
            if byte == 0:
                out.append(None)
                continue
            if byte != 2:
                return -1
        byte = value[pos]
        pos += 1
        number = byte
        if byte & 0x80:  # more bytes follow (a 1-byte varint is every small number and every short string)
            number = byte & 0x7F
            shift = 7
            while True:
                byte = value[pos]
                pos += 1
                if shift == _VARINT_SHIFT_MAX and byte & 0x7E:
                    return -1  # bits past the 64th: not a long
                number |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    break
                shift += 7
                if shift > _VARINT_SHIFT_MAX:
                    return -1  # an eleventh byte
        signed = (number >> 1) ^ -(number & 1)  # zig-zag: 0, -1, 1, -2, ...
        if kind == STRING:
            if signed < 0 or signed > len(value) - pos:
                return -1
            end = pos + signed
            out.append(value[pos:end].decode("utf-8"))
            pos = end
        else:
            out.append(signed)
    return pos


class FlatRecordReader:
    """Reads messages of one schema of the event log's shape into domain objects (see the module)."""

    def __init__(self, envelope: tuple[int, ...], branches: list[tuple[Callable[..., Any], tuple[int, ...]]]):
        self._envelope = envelope
        self._branches = branches

    @classmethod
    def for_schema(cls, schema: dict[str, Any], types: dict[str, type]) -> FlatRecordReader | None:
        """A reader of `schema` (the writer's, as JSON) building `types` (union branch name -> class, fields
        named as in the schema); None when the schema is not of the shape this reader reads."""
        fields = schema["fields"]
        envelope = field_kinds(fields[:-1])
        union = fields[-1]["type"] if fields else None
        if envelope is None or not isinstance(union, list):
            return None
        envelope_names = [field["name"] for field in fields[:-1]]
        branches = []
        for branch in union:
            if not isinstance(branch, dict) or branch.get("type") != "record" or branch["name"] not in types:
                return None
            kinds = field_kinds(branch["fields"])
            if kinds is None:
                return None
            names = envelope_names + [field["name"] for field in branch["fields"]]
            branches.append((builder(types[branch["name"]], positional=names), kinds))
        return cls(envelope, branches)

    def read(self, value: bytes, pos: int) -> Any | None:
        """The object encoded in `value` from `pos` (after the wire header); None when the bytes are not a clean
        encoding of this schema (decode them the general way). Bytes after the record are ignored, as
        fastavro ignores them."""
        if type(value) is not bytes:
            value = bytes(value)  # a bytearray or memoryview: read as the bytes it holds (the loop takes bytes)
        fields: list[Any] = []
        try:
            pos = _read_fields(value, pos, self._envelope, fields)
            if pos < 0:
                return None
            index: list[int] = []
            pos = _read_fields(value, pos, (LONG,), index)
            if pos < 0 or not 0 <= index[0] < len(self._branches):
                return None
            build, kinds = self._branches[index[0]]
            if _read_fields(value, pos, kinds, fields) < 0:
                return None
        except (IndexError, UnicodeDecodeError):
            return None
        return build(*fields)
