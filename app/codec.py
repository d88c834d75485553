"""The wire contract in code: Avro (schemas/*.avsc) in the Confluent wire format, via a schema registry.

A message value is `0x00 | schema id (4 bytes, big endian) | Avro binary`. Writers register the
schema under `<topic>-value` (BACKWARD compatibility) and stamp its id; readers resolve any id the
registry knows, so producers that run an older or newer compatible schema are read correctly.

Domain objects map 1:1 onto the Avro records: the union branch is named after the dataclass and its
fields are the dataclass fields minus the envelope fields.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import struct
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable

import fastavro

from app import metrics
from app.domain import commands as domain_commands
from app.domain import events as domain_events

log = logging.getLogger("wallet.registry")

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
NAMESPACE = "wallet.v1"
MAGIC_BYTE = 0
HEADER = struct.Struct(">bI")
COMMAND_ENVELOPE = ("command_id", "wallet_id", "timestamp_ms")
EVENT_ENVELOPE = ("wallet_id", "command_id", "timestamp_ms", "version", "balance_after_minor",
                  "available_after_minor", "held_after_minor", "hash")
# An unknown schema id is asked of the registry at most once per this many seconds, so a burst of
# garbage with random ids cannot turn into a burst of registry calls.
UNKNOWN_SCHEMA_RETRY_S = 30.0
# Bound of the remembered unknown ids (the fuzz test sends thousands of them).
UNKNOWN_SCHEMA_CACHE_MAX = 10_000


class RegistryUnavailable(Exception):
    """The registry did not answer (down, slow, 5xx): a transient fault, never a reason to DLQ a message.

    Operator action: bring the schema registry back (`wallet stack status`); consumers wait and resume.
    """


class CodecError(Exception):
    """A message could not be decoded; `code` is the DLQ reason (`error.code` header)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def load_schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())


def _types_by_name(module: Any, names: Iterable[str]) -> dict[str, type]:
    return {name: getattr(module, name) for name in names}


def _branch_names(schema: dict[str, Any]) -> list[str]:
    body = next(f for f in schema["fields"] if f["name"] == "body")
    return [branch["name"] for branch in body["type"]]


class SchemaRegistry:
    """A thin, cached client of a Confluent-compatible registry (Apicurio's ccompat API locally).

    Calls are blocking (confluent-kafka's client); they happen at start-up and on the first sight of a
    schema id, never per message. Consumers on an event loop call `await ensure(values)` before decoding a
    batch: it resolves unknown ids in a thread, and while the registry is unreachable it waits with
    backoff (never answering "unknown"), so a registry fault is transient, not poison. Only the registry's
    own "not found" makes an id unknown (`UNKNOWN_SCHEMA`).
    """

    def __init__(self, url: str, *, request_timeout_s: float = 10.0, backoff_initial_s: float = 0.1,
                 backoff_max_s: float = 5.0) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        self.url = url
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._client = SchemaRegistryClient({"url": url, "timeout": request_timeout_s})
        self._parsed: dict[int, Any] = {}
        self._unknown: OrderedDict[int, float] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def for_settings(cls, settings) -> "SchemaRegistry":
        """A client of `settings.registry_url` with the settings' timeout and backoff."""
        return cls(settings.registry_url, request_timeout_s=settings.registry_request_timeout_s,
                   backoff_initial_s=settings.registry_backoff_initial_ms / 1000,
                   backoff_max_s=settings.registry_backoff_max_ms / 1000)

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        from confluent_kafka.schema_registry import Schema

        from confluent_kafka.schema_registry.error import SchemaRegistryError

        schema_id = self._client.register_schema(subject, Schema(json.dumps(schema), "AVRO"))
        try:
            self._client.set_compatibility(subject, "BACKWARD")
        except SchemaRegistryError as exc:
            # Another process set it at the same moment (Apicurio answers 409): fine if it is what we want.
            if exc.http_status_code != 409 or self._client.get_compatibility(subject) != "BACKWARD":
                raise
        self._parsed[schema_id] = fastavro.parse_schema(schema)
        return schema_id

    def parsed(self, schema_id: int) -> Any | None:
        """The parsed writer schema of `schema_id`, or None when the registry says it does not know it.

        Raises RegistryUnavailable when the registry cannot be asked (a blocking call: on an event loop,
        `ensure` first so this is a cache hit)."""
        found = self._parsed.get(schema_id)
        if found is not None:
            return found
        with self._lock:
            asked_at = self._unknown.get(schema_id)
            if asked_at is not None and time.monotonic() - asked_at < UNKNOWN_SCHEMA_RETRY_S:
                return None
            parsed = self._fetch(schema_id)
            if parsed is None:
                self._unknown[schema_id] = time.monotonic()
                self._unknown.move_to_end(schema_id)
                while len(self._unknown) > UNKNOWN_SCHEMA_CACHE_MAX:
                    self._unknown.popitem(last=False)
                return None
            self._parsed[schema_id] = parsed
            return parsed

    def _fetch(self, schema_id: int) -> Any | None:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            text = self._client.get_schema(schema_id).schema_str
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                return None  # the registry's definite answer: no such id
            raise RegistryUnavailable(f"registry answered {exc.http_status_code}: {exc}") from exc
        except Exception as exc:  # connection refused, timeout, DNS: the registry could not be asked
            raise RegistryUnavailable(f"registry unreachable: {type(exc).__name__}: {exc}") from exc
        try:
            return fastavro.parse_schema(json.loads(text))
        except Exception:  # not an Avro schema we can parse: a message written with it is poison
            return None

    def missing(self, values: Iterable[bytes | None]) -> set[int]:
        """Schema ids named by wire headers in `values` that are neither cached nor recently unknown."""
        ids = set()
        for value in values:
            if value is not None and len(value) >= HEADER.size and value[0] == MAGIC_BYTE:
                schema_id = HEADER.unpack_from(value)[1]
                if schema_id not in self._parsed and schema_id not in self._unknown:
                    ids.add(schema_id)
        return ids

    async def ensure(self, values: Iterable[bytes | None]) -> None:
        """Resolve every schema id `values` name, off the event loop; while the registry is unreachable,
        wait and retry with exponential backoff (bounded by backoff_max_s), until each id is cached or
        definitely unknown. Cancellable (a SIGTERM still stops the worker)."""
        missing = self.missing(values)
        backoff_s = self.backoff_initial_s
        while missing:
            try:
                for schema_id in sorted(missing):
                    await asyncio.to_thread(self.parsed, schema_id)
                    missing.discard(schema_id)
            except RegistryUnavailable as exc:
                metrics.registry_fetch_failures_total.inc()
                metrics.registry_waiting.set(1)
                log.warning("schema registry unavailable; waiting", extra={
                    "registry": self.url, "schema_ids": sorted(missing), "retry_in_s": backoff_s, "error": str(exc)})
                await asyncio.sleep(backoff_s)
                backoff_s = min(self.backoff_max_s, backoff_s * 2)
        metrics.registry_waiting.set(0)


class _Codec:
    """Encode/decode one envelope record type (commands or events) to and from domain objects."""

    def __init__(self, registry: SchemaRegistry | None, subject: str, schema_name: str,
                 module: Any, envelope: tuple[str, ...]) -> None:
        self.schema = load_schema(schema_name)
        self.parsed = fastavro.parse_schema(self.schema)
        self.types = _types_by_name(module, _branch_names(self.schema))
        self.envelope = envelope
        self._body_fields = {
            name: tuple(f.name for f in dataclasses.fields(cls) if f.name not in envelope)
            for name, cls in self.types.items()
        }
        self.registry = registry
        self.subject = subject
        self.schema_id = registry.register(subject, self.schema) if registry is not None else 0

    def to_record(self, obj: Any) -> dict[str, Any]:
        name = type(obj).__name__
        record = {field: getattr(obj, field) for field in self.envelope}
        record["body"] = (f"{NAMESPACE}.{name}", {f: getattr(obj, f) for f in self._body_fields[name]})
        return record

    def from_record(self, record: dict[str, Any]) -> Any:
        name, body = record["body"]
        cls = self.types[name.rsplit(".", 1)[-1]]
        return cls(**{field: record[field] for field in self.envelope}, **body)

    async def ensure(self, values: Iterable[bytes | None]) -> None:
        """Resolve the schema ids `values` name before decoding them (SchemaRegistry.ensure); no-op without one."""
        if self.registry is not None:
            await self.registry.ensure(values)

    def encode(self, obj: Any) -> bytes:
        out = io.BytesIO()
        out.write(HEADER.pack(MAGIC_BYTE, self.schema_id))
        fastavro.schemaless_writer(out, self.parsed, self.to_record(obj))
        return out.getvalue()

    def decode(self, value: bytes | None) -> Any:
        """Decode a wire message into a domain object; raises CodecError with a DLQ reason code."""
        if value is None or len(value) < HEADER.size:
            raise CodecError("TRUNCATED", "message shorter than the 5-byte wire header")
        magic, schema_id = HEADER.unpack_from(value)
        if magic != MAGIC_BYTE:
            raise CodecError("BAD_MAGIC_BYTE", f"magic byte {magic} is not 0")
        if schema_id == self.schema_id:
            writer = self.parsed
        else:
            writer = self.registry.parsed(schema_id) if self.registry is not None else None
            if writer is None:
                raise CodecError("UNKNOWN_SCHEMA", f"schema id {schema_id} is not in the registry")
        try:
            record = fastavro.schemaless_reader(io.BytesIO(value[HEADER.size:]), writer, self.parsed,
                                                return_record_name=True)
        except Exception as exc:  # fastavro raises many types on garbage input
            raise CodecError("UNDECODABLE", f"Avro body does not match schema {schema_id}: "
                                            f"{type(exc).__name__}") from exc
        try:
            return self.from_record(record)
        except (KeyError, TypeError, ValueError) as exc:
            raise CodecError("UNDECODABLE", f"record does not map to a {self.subject} kind") from exc


class CommandCodec(_Codec):
    def __init__(self, registry: SchemaRegistry | None, topic: str) -> None:
        super().__init__(registry, f"{topic}-value", "wallet_command", domain_commands, COMMAND_ENVELOPE)


class EventCodec(_Codec):
    def __init__(self, registry: SchemaRegistry | None, topic: str) -> None:
        super().__init__(registry, f"{topic}-value", "wallet_event", domain_events, EVENT_ENVELOPE)
