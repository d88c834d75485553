"""The wire contract in code: Avro (schemas/*.avsc) in the Confluent wire format, via a schema registry.

A message value is `0x00 | schema id (4 bytes, big endian) | Avro binary`. Writers register the
schema under `<topic>-value` (BACKWARD compatibility) and stamp its id; readers resolve any id the
registry knows, so producers that run an older or newer compatible schema are read correctly.

Readers resolve the ids of a batch asynchronously before decoding it (`await codec.ensure(values)`), and
decoding is then pure CPU on a cache. A registry that is down or slow is waited for, never taken for an
answer: only its "not found" makes a message `UNKNOWN_SCHEMA` poison.

Domain objects map 1:1 onto the Avro records: the union branch is named after the dataclass and its
fields are the dataclass fields minus the envelope fields. Decoded objects are built without their frozen
dataclass `__init__` (app/domain/frozen.py), and events and commands of the codec's own schema are read by a
reader compiled from it (app/avro_reader.py), falling back to fastavro for anything but a clean encoding.
Commands and events are written by a writer compiled from the schema (app/avro_writer.py), falling back to
fastavro for a value the schema cannot hold: the same bytes either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import operator
import struct
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable

import fastavro

from app import metrics
from app.avro_reader import FlatRecordReader
from app.avro_writer import FlatRecordWriter
from app.domain import commands as domain_commands
from app.domain import events as domain_events
from app.domain.frozen import builder
from app.errors import FoundationError
from app.settings import Settings

log = logging.getLogger("wallet.registry")

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
NAMESPACE = "wallet.v1"
# The Avro schemas (schemas/<name>.avsc) of the command and event topics.
COMMAND_SCHEMA = "wallet_command"
EVENT_SCHEMA = "wallet_event"
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
# Requests to the registry in flight at once while resolving one batch's new ids (a batch of garbage may name
# thousands): enough to overlap round trips, few enough not to flood the registry.
FETCHES_IN_FLIGHT_MAX = 8
# The registry's error codes for "no schema with this id": Confluent answers 40403 (schema not found),
# Apicurio's ccompat API 40401 (its ids are artifacts: subject not found). Both come with HTTP 404; a 404
# without one of them (a proxy's page, a URL with a wrong path) is a fault, not an answer.
SCHEMA_NOT_FOUND_CODES = (40401, 40403)
# Schema ids named in one log line about waiting for the registry.
LOGGED_IDS_MAX = 10


class RegistryUnavailable(FoundationError):
    """The registry gave no definite answer (unreachable, slower than the request timeout, an error status): a
    transient fault, never a reason to DLQ a message. `kind` is the `error` label of
    `wallet_registry_fetch_failures_total`: `connection`, `timeout` or `status`.

    Operator action: bring the schema registry back (`wallet stack status`); consumers wait and resume.
    """

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


class SchemaNotResolved(FoundationError, RuntimeError):
    """A message was decoded before `ensure` resolved its schema id: a bug of the caller, which must await
    `ensure` for a batch before decoding it (decoding does no I/O). Never a DLQ reason: the message is not
    known to be bad.

    Operator action: none; the worker exits and its supervisor restarts it. Report the trace.
    """


class CodecError(FoundationError):
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


def schema_ids(values: Iterable[bytes | None]) -> set[int]:
    """The schema ids named by the wire headers of `values`; a value too short for the header or with another
    magic byte names none (it is poison whatever the registry says)."""
    heads = {value[:HEADER.size] for value in values if value}  # per message: one slice (the hot path)
    return {HEADER.unpack(head)[1] for head in heads if len(head) == HEADER.size and head[0] == MAGIC_BYTE}


class _Waiting:
    """`wallet_registry_waiting` for a whole process: 1 while any of its readers waits for the registry (the
    processor's batch, a standby, a sink, the API's reply listener), whatever the others do meanwhile."""

    def __init__(self) -> None:
        self._count = 0

    def __enter__(self) -> None:
        self._count += 1
        metrics.registry_waiting.set(1)

    def __exit__(self, *exc: object) -> None:
        self._count -= 1
        if self._count == 0:
            metrics.registry_waiting.set(0)


_WAITING = _Waiting()


class SchemaRegistry:
    """A cached client of a Confluent-compatible registry (Apicurio's ccompat API locally).

    Registering is blocking (confluent-kafka's client) and happens at start-up, in a thread. Reading a schema
    by id is asynchronous (aiohttp) and happens once per id, before a batch is decoded: `await ensure(values)`
    returns when every id the values name is either cached or definitely unknown (the registry answered
    "not found"), waiting with bounded exponential backoff for as long as the registry is unreachable, slow or
    answering errors. Decoding is then pure CPU on the cache (`parsed`). So a registry fault delays messages
    of a new schema id and never makes them poison: only the registry's own "not found" does
    (`UNKNOWN_SCHEMA`). Every wait is cancellable at once (a SIGTERM stops the worker promptly).
    """

    def __init__(self, url: str, *, request_timeout_s: float = Settings.registry_request_timeout_s,
                 backoff_initial_s: float = Settings.registry_backoff_initial_ms / 1000,
                 backoff_max_s: float = Settings.registry_backoff_max_ms / 1000) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        self.url = url
        self.request_timeout_s = request_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._client = SchemaRegistryClient({"url": url, "timeout": request_timeout_s})
        self._parsed: dict[int, Any] = {}
        self._registered: dict[tuple[str, str], int] = {}  # (subject, schema JSON) -> id, from `register_waiting`
        self._unknown: OrderedDict[int, float] = OrderedDict()  # id -> when the registry said it has none
        self._lock = threading.Lock()  # the sinks decode in a thread of their own

    @classmethod
    def for_settings(cls, settings: Settings) -> "SchemaRegistry":
        """A client of `settings.registry_url` with the settings' timeout and backoff."""
        return cls(settings.registry_url, request_timeout_s=settings.registry_request_timeout_s,
                   backoff_initial_s=settings.registry_backoff_initial_ms / 1000,
                   backoff_max_s=settings.registry_backoff_max_ms / 1000)

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        """Register `schema` under `subject` (BACKWARD compatibility) and return its id. Blocking, unless
        `register_waiting` registered it already (then no I/O)."""
        from confluent_kafka.schema_registry import Schema

        from confluent_kafka.schema_registry.error import SchemaRegistryError

        schema_id = self._registered.get((subject, json.dumps(schema)))
        if schema_id is None:
            schema_id = self._client.register_schema(subject, Schema(json.dumps(schema), "AVRO"))
            try:
                self._client.set_compatibility(subject, "BACKWARD")
            except SchemaRegistryError as exc:
                # Another process set it at the same moment (Apicurio answers 409): fine if it is what we want.
                if exc.http_status_code != 409 or self._client.get_compatibility(subject) != "BACKWARD":
                    raise
        self._parsed[schema_id] = fastavro.parse_schema(schema)
        return schema_id

    async def register_waiting(self, subjects: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Register each `(subject, schema)` (BACKWARD compatibility) over HTTP, waiting while the registry is
        unreachable, slow or answering 5xx, as `ensure` waits (backoff, `wallet_registry_waiting`,
        `wallet_registry_fetch_failures_total`, a rate-limited log line), cancellably. A worker calls it at
        start-up, before its codecs `register` (blocking, in a thread): they then find their ids here, so a
        worker started during a registry outage waits for it instead of exiting. A definite refusal (an
        incompatible or invalid schema: 4xx) is left to `register`, which raises it."""
        import aiohttp

        pending = {(subject, json.dumps(schema)) for subject, schema in subjects} - self._registered.keys()
        backoff_s = self.backoff_initial_s
        with contextlib.ExitStack() as waiting:
            waited_since: float | None = None
            while pending:
                fault: RegistryUnavailable | None = None
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.request_timeout_s)) as session:
                    for subject, text in sorted(pending):
                        try:
                            schema_id = await self._register_once(session, subject, text)
                        except RegistryUnavailable as exc:
                            fault = exc
                            metrics.registry_fetch_failures_total.labels(exc.kind).inc()
                            break
                        if schema_id is not None:
                            self._registered[(subject, text)] = schema_id
                        pending.discard((subject, text))
                if fault is None:
                    break
                if waited_since is None:
                    waited_since = time.monotonic()
                    waiting.enter_context(_WAITING)
                log.warning("schema registry unavailable at start-up; waiting", extra={
                    "registry": self.url, "subjects": sorted(subject for subject, _ in pending)[:LOGGED_IDS_MAX],
                    "retry_in_s": backoff_s, "waiting_s": round(time.monotonic() - waited_since, 1),
                    "error": str(fault)})
                await asyncio.sleep(backoff_s)
                backoff_s = min(self.backoff_max_s, backoff_s * 2)
            if waited_since is not None:
                log.info("schema registry answering again", extra={
                    "registry": self.url, "waited_s": round(time.monotonic() - waited_since, 1)})

    async def _register_once(self, session: Any, subject: str, text: str) -> int | None:
        """One registration of the schema `text` under `subject` plus its BACKWARD compatibility: the id, or
        None on a definite refusal (4xx other than a concurrent compatibility write). Raises
        RegistryUnavailable when the answer is not definite."""
        base = self.url.rstrip("/")
        status, answer = await self._request(session, "POST", f"{base}/subjects/{subject}/versions",
                                             {"schema": text, "schemaType": "AVRO"})
        if status != 200 or not isinstance(answer, dict) or not isinstance(answer.get("id"), int):
            return None
        schema_id = answer["id"]
        status, _ = await self._request(session, "PUT", f"{base}/config/{subject}", {"compatibility": "BACKWARD"})
        if status == 409:  # another process set it at the same moment (Apicurio): fine if it is what we want
            status, answer = await self._request(session, "GET", f"{base}/config/{subject}", None)
            if status != 200 or not isinstance(answer, dict) or answer.get("compatibilityLevel") != "BACKWARD":
                return None
        elif status != 200:
            return None
        return schema_id

    async def _request(self, session: Any, method: str, url: str, body: Any) -> tuple[int, Any]:
        """One registry request: (status, decoded JSON or None). Raises RegistryUnavailable on no answer, a
        timeout or a 5xx (not definite: ask again later)."""
        import aiohttp

        try:
            async with session.request(method, url, json=body,
                                       headers={"Accept": "application/vnd.schemaregistry.v1+json"}) as resp:
                raw = await resp.read()
                status = resp.status
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors too
            raise RegistryUnavailable("timeout", f"no answer within {self.request_timeout_s} s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise RegistryUnavailable("connection", f"{type(exc).__name__}: {exc}") from exc
        if status >= 500:
            raise RegistryUnavailable("status", f"HTTP {status} for {method} {url}: {raw[:200]!r}")
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, None

    def parsed(self, schema_id: int) -> Any | None:
        """The parsed writer schema of `schema_id` from the cache, or None when the registry said it does not
        know it. No I/O: raises SchemaNotResolved for an id `ensure` has not resolved."""
        found = self._parsed.get(schema_id)
        if found is not None:
            return found
        with self._lock:
            if schema_id in self._unknown:
                return None
        raise SchemaNotResolved(f"schema id {schema_id} was decoded before `ensure` resolved it")

    def missing(self, values: Iterable[bytes | None]) -> set[int]:
        """Schema ids named by wire headers in `values` to ask the registry about: not cached, and not
        answered "not found" in the last UNKNOWN_SCHEMA_RETRY_S (an id may be registered after a message
        named it)."""
        ids = schema_ids(values)
        if ids <= self._parsed.keys():  # the usual batch: nothing new
            return set()
        now = time.monotonic()
        with self._lock:
            return {schema_id for schema_id in ids if schema_id not in self._parsed
                    and now - self._unknown.get(schema_id, -UNKNOWN_SCHEMA_RETRY_S) >= UNKNOWN_SCHEMA_RETRY_S}

    async def ensure(self, values: Iterable[bytes | None]) -> None:
        """Return once every schema id `values` name is cached or definitely unknown (decoding it is then
        `UNKNOWN_SCHEMA`). While the registry is unreachable, slower than `request_timeout_s` or answering
        anything but a schema or its "not found", wait (`backoff_initial_s`, doubling up to `backoff_max_s`,
        seconds) and ask again, for as long as it takes: counted in `wallet_registry_fetch_failures_total`,
        shown by `wallet_registry_waiting`, logged (rate-limited, app/logs.py). Cancellable at any point."""
        pending = self.missing(values)
        if not pending:
            return
        backoff_s = self.backoff_initial_s
        with contextlib.ExitStack() as waiting:
            waited_since: float | None = None
            while True:
                faults = await self._fetch_all(pending)
                if not faults:
                    break
                pending = set(faults)
                for fault in faults.values():
                    metrics.registry_fetch_failures_total.labels(fault.kind).inc()
                if waited_since is None:
                    waited_since = time.monotonic()
                    waiting.enter_context(_WAITING)
                log.warning("schema registry unavailable; waiting", extra={
                    "registry": self.url, "schema_ids": sorted(pending)[:LOGGED_IDS_MAX], "retry_in_s": backoff_s,
                    "waiting_s": round(time.monotonic() - waited_since, 1),
                    "error": str(next(iter(faults.values())))})
                await asyncio.sleep(backoff_s)
                backoff_s = min(self.backoff_max_s, backoff_s * 2)
            if waited_since is not None:
                log.info("schema registry answering again", extra={
                    "registry": self.url, "waited_s": round(time.monotonic() - waited_since, 1)})

    async def _fetch_all(self, ids: set[int]) -> dict[int, RegistryUnavailable]:
        """Ask the registry about each of `ids`, at most FETCHES_IN_FLIGHT_MAX at once, and settle what it
        answers; the faults by id."""
        import aiohttp

        gate = asyncio.Semaphore(FETCHES_IN_FLIGHT_MAX)
        faults: dict[int, RegistryUnavailable] = {}

        async def fetch(session: aiohttp.ClientSession, schema_id: int) -> None:
            async with gate:
                try:
                    self._settle(schema_id, await self._fetch(session, schema_id))
                except RegistryUnavailable as fault:
                    faults[schema_id] = fault

        # A session per round: rounds are rare (a new id, or a retry), and one never outlives its event loop.
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.request_timeout_s)) as session:
            await asyncio.gather(*(fetch(session, schema_id) for schema_id in sorted(ids)))
        return faults

    async def _fetch(self, session: Any, schema_id: int) -> Any | None:
        """One request for `schema_id`: its parsed schema, or None when the registry says it has none (or one
        this reader cannot use: not Avro). Raises RegistryUnavailable when the answer is not definite."""
        status, answer = await self._request(session, "GET", f"{self.url.rstrip('/')}/schemas/ids/{schema_id}", None)
        if status == 404 and isinstance(answer, dict) and answer.get("error_code") in SCHEMA_NOT_FOUND_CODES:
            return None  # the registry's definite answer: no such id
        if status != 200 or not isinstance(answer, dict) or not isinstance(answer.get("schema"), str):
            raise RegistryUnavailable("status", f"HTTP {status} for schema id {schema_id}: {str(answer)[:200]}")
        if answer.get("schemaType", "AVRO") != "AVRO":
            return None
        try:
            return fastavro.parse_schema(json.loads(answer["schema"]))
        except Exception:  # the registry holds it, and it is not an Avro schema we can parse: poison
            return None

    def _settle(self, schema_id: int, parsed: Any | None) -> None:
        if parsed is not None:
            self._parsed[schema_id] = parsed
            return
        with self._lock:
            self._unknown[schema_id] = time.monotonic()
            self._unknown.move_to_end(schema_id)
            while len(self._unknown) > UNKNOWN_SCHEMA_CACHE_MAX:
                self._unknown.popitem(last=False)


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
        # Per kind: its union branch name, its body field names and one C call that reads them off an object.
        self._branches = {cls: (f"{NAMESPACE}.{name}", self._body_fields[name],
                                operator.attrgetter(*self._body_fields[name]) if self._body_fields[name] else None)
                          for name, cls in self.types.items()}
        self._envelope_of = operator.attrgetter(*envelope)
        # Per union branch: the kind's builder (its instance without the frozen dataclass's __init__).
        self._builds = {name: builder(cls) for name, cls in self.types.items()}
        self._builds_by_branch = {f"{NAMESPACE}.{name}": build for name, build in self._builds.items()}
        # Messages of our own schema are read and written without fastavro where the schema allows (both do).
        self._own_reader = FlatRecordReader.for_schema(self.schema, self.types)
        self._own_writer = FlatRecordWriter.for_schema(self.schema, self.types)
        self.registry = registry
        self.subject = subject
        self.schema_id = registry.register(subject, self.schema) if registry is not None else 0
        self._header = HEADER.pack(MAGIC_BYTE, self.schema_id)  # every message this codec writes starts so

    def to_record(self, obj: Any) -> dict[str, Any]:
        branch, names, values_of = self._branches[type(obj)]
        record = dict(zip(self.envelope, self._envelope_of(obj)))
        if values_of is None:
            record["body"] = (branch, {})
        elif len(names) == 1:  # attrgetter of one name returns the value, not a tuple
            record["body"] = (branch, {names[0]: values_of(obj)})
        else:
            record["body"] = (branch, dict(zip(names, values_of(obj))))
        return record

    def from_record(self, record: dict[str, Any]) -> Any:
        # The record is the reader's fresh dict: the envelope fields (exactly, as the reader schema has them)
        # once its body is taken out.
        name, body = record.pop("body")
        build = self._builds_by_branch.get(name) or self._builds[name.rsplit(".", 1)[-1]]
        return build(**record, **body)

    async def ensure(self, values: Iterable[bytes | None]) -> None:
        """Resolve the schema ids `values` name before decoding them (SchemaRegistry.ensure: waits out a
        registry outage), so that decoding is pure CPU; no-op without a registry."""
        if self.registry is not None:
            await self.registry.ensure(values)

    def encode(self, obj: Any) -> bytes:
        if self._own_writer is not None:
            buffer = bytearray(self._header)
            if self._own_writer.write(obj, buffer):
                return bytes(buffer)
        out = io.BytesIO()
        out.write(self._header)
        fastavro.schemaless_writer(out, self.parsed, self.to_record(obj))
        return out.getvalue()

    def decode(self, value: bytes | None) -> Any:
        """Decode a wire message into a domain object; raises CodecError with a DLQ reason code.

        No I/O: a schema id other than this codec's must have been resolved (`ensure`) first, or
        SchemaNotResolved is raised."""
        if value is None or len(value) < HEADER.size:
            raise CodecError("TRUNCATED", "message shorter than the 5-byte wire header")
        magic, schema_id = HEADER.unpack_from(value)
        if magic != MAGIC_BYTE:
            raise CodecError("BAD_MAGIC_BYTE", f"magic byte {magic} is not 0")
        if schema_id == self.schema_id:
            if self._own_reader is not None:
                found = self._own_reader.read(value, HEADER.size)
                if found is not None:
                    return found  # else not a clean encoding: fastavro tells what it is
            # Written with our own schema: no resolution. (fastavro resolves writer against reader whenever a
            # reader schema is passed, even the same one: that doubled the cost of every decode.)
            writer, reader = self.parsed, None
        else:
            writer, reader = (self.registry.parsed(schema_id) if self.registry is not None else None), self.parsed
            if writer is None:
                raise CodecError("UNKNOWN_SCHEMA", f"schema id {schema_id} is not in the registry")
        try:
            record = fastavro.schemaless_reader(io.BytesIO(value[HEADER.size:]), writer, reader,
                                                return_record_name=True)
        except Exception as exc:  # fastavro raises many types on garbage input
            raise CodecError("UNDECODABLE", f"Avro body does not match schema {schema_id}: "
                                            f"{type(exc).__name__}") from exc
        try:
            return self.from_record(record)
        except (KeyError, TypeError, ValueError) as exc:
            raise CodecError("UNDECODABLE", f"record does not map to a {self.subject} kind") from exc


def ledger_schemas(settings: Settings) -> list[tuple[str, dict[str, Any]]]:
    """Every `(subject, schema)` the ledger's codecs register: commands, transfer legs, events."""
    return [(f"{settings.commands_topic}-value", load_schema(COMMAND_SCHEMA)),
            (f"{settings.transfer_legs_topic}-value", load_schema(COMMAND_SCHEMA)),
            (f"{settings.events_topic}-value", load_schema(EVENT_SCHEMA))]


class CommandCodec(_Codec):
    def __init__(self, registry: SchemaRegistry | None, topic: str) -> None:
        super().__init__(registry, f"{topic}-value", COMMAND_SCHEMA, domain_commands, COMMAND_ENVELOPE)


class EventCodec(_Codec):
    def __init__(self, registry: SchemaRegistry | None, topic: str) -> None:
        super().__init__(registry, f"{topic}-value", EVENT_SCHEMA, domain_events, EVENT_ENVELOPE)
