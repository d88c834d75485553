"""A namespace of its own on the shared local stack, for a test or a benchmark.

Nothing done in a namespace reaches the live ledger (the `wallet.*` topics, the `wallet` MySQL database,
Redis database 0) or another namespace:
- `isolated_settings` names what Kafka and the processor see after one id, `<folder>-<name>-<6 hex>`:
  the topics (`<id>.commands`, ...), the app id behind consumer groups and transactional ids, the
  processor's state folder `<state_dir>/<folder>/<name>-<hex>`, free ports and API keys. It creates nothing.
- `prepare_topics` creates the topics and registers their schemas (what `wallet init` does for the live ones).
- `with_database` gives the namespace a MySQL database of its own on the local primary, created and migrated.
  The local replica applies it (and reads go there too) unless its name starts with `bench_`
  (ops/local/stack.py REPLICA_IGNORED_DATABASE_PREFIX): benchmarks keep the replica off the 2 cores.
- `with_redis_database` points it at a fixed Redis database number (tests/integration's modules own 9 and 10);
  `claim_redis_database` takes the first free number of REDIS_DATABASES_CLAIMED instead, marked with a
  claim key naming the claiming process, so two benchmarks (or a benchmark and its test) on one stack
  never share one. A claim whose process no longer runs on this host is taken over.
- `discard` undoes it: drops the database, flushes and releases a claimed Redis database, deletes the
  topics and the state folder. Registry subjects stay: one small entry per topic, and removing them
  could race a concurrent reader of the same schema id.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import time
import uuid
from dataclasses import replace

from app.settings import Settings
from wallet.errors import EntryPointError

# Redis databases (of the default 16) handed out by `claim_redis_database`: a test session holds one while it
# runs, each benchmark one. 0 is the live read model; 9 and 10 belong to tests/integration/test_read_models.py
# and test_stuck_in_transit.py.
REDIS_DATABASES_CLAIMED = (*range(1, 9), *range(11, 16))
# The key that marks a claimed database: "<host>:<pid>:<app id>" of the claiming process.
REDIS_CLAIM_KEY = "isolation:claimed-by"
# Bound of every Redis call made here (the server is local).
REDIS_TIMEOUT_S = 5.0
# A topic just created is listed by the broker's metadata within moments, even on a loaded machine.
TOPICS_VISIBLE_TIMEOUT_S = 30.0
TOPICS_VISIBLE_POLL_S = 0.2
# Bound of the topic deletion's answer from the broker.
TOPICS_DELETE_TIMEOUT_S = 30.0
# The settings of every namespace `isolated_settings` named in this process, oldest first: a test session
# removes their topics and state folders at its end (tests/conftest.py), since a test that fails or is
# interrupted does not.
NAMED: list[Settings] = []
# API keys of a namespace: one per scope set, every route reachable.
API_KEYS = "test-read=wallets:read,test-write=wallets:read+wallets:write,test-admin=admin"


class IsolationError(EntryPointError, RuntimeError):
    """A namespace could not be set up or torn down.

    Operator action: read the message; for "every Redis database claimed", see which processes the claim
    keys name (`redis-cli -n N get isolation:claimed-by`) and stop them, or flush a stale database.
    """


# Listening ports of namespaces are taken below the kernel's ephemeral range (net.ipv4.ip_local_port_range,
# 32768-60999 by default): a port from that range can be taken by an outgoing connection between the check
# and the worker's bind, and a busy machine (thousands of connections in TIME_WAIT) has few runs of free ports
# there. Below it, nothing takes a port but a listener.
LISTEN_PORTS_FROM = 10_000
EPHEMERAL_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"
EPHEMERAL_FROM_DEFAULT = 32_768
FREE_PORT_TRIES = 1_000


def _ephemeral_from() -> int:
    try:
        with open(EPHEMERAL_RANGE_FILE) as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return EPHEMERAL_FROM_DEFAULT


def free_port() -> int:
    """A TCP port on 127.0.0.1, below the ephemeral range, that nothing listens on at the moment of the call."""
    return free_port_block(1)


# Worker slots a namespace may run (`--instance 0..N-1` listen on worker_web_port + slot).
WORKER_SLOTS_MAX = 16


def free_port_block(count: int = WORKER_SLOTS_MAX) -> int:
    """The first of `count` consecutive TCP ports on 127.0.0.1, below the ephemeral range, that nothing
    listens on now."""
    rng = random.Random()
    upper = max(LISTEN_PORTS_FROM + count, _ephemeral_from()) - count
    for _ in range(FREE_PORT_TRIES):
        base = rng.randrange(LISTEN_PORTS_FROM, upper)
        try:
            for port in range(base, base + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise OSError(f"no {count} consecutive free ports on 127.0.0.1 between {LISTEN_PORTS_FROM} and {upper + count}")


def isolated_settings(base: Settings, name: str, *, folder: str = "tests", **overrides: object) -> Settings:
    """`base` with topics, consumer groups, transactional ids, processor state, ports and API keys of their
    own (named `<folder>-<name>-<6 hex>`); `overrides` win over all of these. The read model stays `base`'s
    until `with_database` / `with_redis_database` / `claim_redis_database`."""
    tag = f"{name}-{uuid.uuid4().hex[:6]}"
    namespace = f"{folder}-{tag}"
    # Worker slots listen on worker_web_port + slot: a block of free ports, the sinks on its last one, the API
    # on a port outside it.
    block = free_port_block()
    http_port = free_port()
    while block <= http_port < block + WORKER_SLOTS_MAX:
        http_port = free_port()
    fields: dict[str, object] = dict(
        app_id=namespace, commands_topic=f"{namespace}.commands", transfer_legs_topic=f"{namespace}.transfer-legs",
        events_topic=f"{namespace}.events", processor_offsets_topic=f"{namespace}.processor-offsets",
        dlq_topic=f"{namespace}.commands.dlq", reply_topic=f"{namespace}.replies",
        sink_dlq_topic=f"{namespace}.events.sink-dlq", state_dir=base.state_dir / folder / tag, http_port=http_port,
        worker_web_port=block, sinks_web_port=block + WORKER_SLOTS_MAX - 1, api_keys=API_KEYS)
    fields.update(overrides)
    NAMED.append(replace(base, **fields))
    return NAMED[-1]


def prepare_topics(settings: Settings) -> Settings:
    """Create the namespace's topics, wait until the broker lists them, register their schemas."""
    from app.topics import TopicMissing, check_partitions, create_topics
    from wallet.bootstrap import register_schemas

    create_topics(settings)
    deadline = time.monotonic() + TOPICS_VISIBLE_TIMEOUT_S
    while True:  # the broker's metadata cache may publish new topics a moment later
        try:
            check_partitions(settings)
            break
        except TopicMissing:
            if time.monotonic() > deadline:
                raise
            time.sleep(TOPICS_VISIBLE_POLL_S)
    register_schemas(settings)
    return settings


def database_name(settings: Settings) -> str:
    """The database `settings.mysql_dsn` names."""
    return settings.mysql_dsn.split("?", 1)[0].rsplit("/", 1)[1]


def with_database(settings: Settings, suffix: str = "") -> Settings:
    """`settings` on a new, migrated MySQL database named after the namespace (plus `suffix`), with reads of
    the replica pointed at its copy there, or at the primary when the replica ignores it."""
    from ops.local import stack
    from wallet.bootstrap import migrate

    database = (settings.app_id + suffix).replace("-", "_")
    dsn = stack.create_database(settings, database, drop=True)
    replica_dsn = ""
    if settings.mysql_replica_port and stack.replicated(database):
        credentials = dsn.split("://", 1)[1].split("@", 1)[0]
        replica_dsn = f"mysql+aiomysql://{credentials}@127.0.0.1:{settings.mysql_replica_port}/{database}"
    out = replace(settings, mysql_dsn=dsn, mysql_replica_dsn=replica_dsn)
    migrate(out)
    return out


def drop_database(settings: Settings) -> None:
    """Drop the namespace's own database (never another: its name must start with the namespace's)."""
    from ops.local import stack

    if not _owns_database(settings):
        raise IsolationError(f"refusing to drop {database_name(settings)}: not a database of namespace "
                             f"{settings.app_id}")
    stack.drop_database(settings, database_name(settings))


def _owns_database(settings: Settings) -> bool:
    return not _is_live(settings) and database_name(settings).startswith(settings.app_id.replace("-", "_"))


def _is_live(settings: Settings) -> bool:
    """Whether `settings` are the live ledger's (this environment's app id), which nothing here may remove."""
    return settings.app_id == Settings.from_env().app_id


def _redis_url(settings: Settings, number: int) -> str:
    return settings.redis_url.rsplit("/", 1)[0] + f"/{number}"


def with_redis_database(settings: Settings, number: int) -> Settings:
    """`settings` on Redis database `number` of the same server (nothing is flushed or claimed)."""
    return replace(settings, redis_url=_redis_url(settings, number))


def _claim_owner(settings: Settings) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{settings.app_id}"


def _claim_alive(owner: str) -> bool:
    """Whether the process a claim names may still run (one on another host is assumed to)."""
    host, pid, _ = owner.split(":", 2)
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_redis_database(settings: Settings) -> Settings:
    """`settings` on the first Redis database of REDIS_DATABASES_CLAIMED not held by a running process,
    flushed and marked as this process's in one transaction (so two claimers never both get it)."""
    import redis

    held: list[str] = []
    for number in REDIS_DATABASES_CLAIMED:
        url = _redis_url(settings, number)
        client = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S)
        try:
            with client.pipeline() as pipe:
                pipe.watch(REDIS_CLAIM_KEY)
                current = pipe.get(REDIS_CLAIM_KEY)
                if current is not None and _claim_alive(current.decode()):
                    held.append(f"{number} by {current.decode()}")
                    continue
                pipe.multi()
                pipe.flushdb()
                pipe.set(REDIS_CLAIM_KEY, _claim_owner(settings))
                pipe.execute()
                return replace(settings, redis_url=url)
        except redis.WatchError:  # claimed by another process between our read and our write
            held.append(f"{number} (claimed meanwhile)")
        finally:
            client.close()
    raise IsolationError(f"every Redis database of {REDIS_DATABASES_CLAIMED} is claimed: {', '.join(held)}")


def release_redis_database(settings: Settings) -> bool:
    """Flush the Redis database `settings` claimed (dropping the claim with it); False when it is not
    this process's claim, which is then left alone."""
    import redis

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=REDIS_TIMEOUT_S,
                                  socket_connect_timeout=REDIS_TIMEOUT_S)
    try:
        with client.pipeline() as pipe:
            pipe.watch(REDIS_CLAIM_KEY)
            current = pipe.get(REDIS_CLAIM_KEY)
            if current is None or current.decode() != _claim_owner(settings):
                return False
            pipe.multi()
            pipe.flushdb()
            pipe.execute()
            return True
    except redis.WatchError:
        return False
    finally:
        client.close()


def delete_topics(settings: Settings) -> None:
    """Delete the namespace's topics (every one of `app.topics.topic_specs`; missing ones are fine)."""
    from confluent_kafka.admin import AdminClient

    from app.topics import topic_specs

    names = [spec.name for spec in topic_specs(settings)]
    if _is_live(settings) or any(not name.startswith(f"{settings.app_id}.") for name in names):
        raise IsolationError(f"refusing to delete {names}: not all topics of namespace {settings.app_id}")
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    for name, future in admin.delete_topics(names, operation_timeout=TOPICS_DELETE_TIMEOUT_S).items():
        try:
            future.result()
        except Exception as exc:  # the broker's error type; an absent topic is already gone
            if "UNKNOWN_TOPIC_OR_PART" not in str(exc):
                raise


def delete_namespaces_topics(base: Settings, namespaces: list[Settings],
                             extra: list[str] | tuple[str, ...] = ()) -> int:
    """Delete every topic of the broker named `<app id>.<anything>` for one of `namespaces` (never a live
    topic), and the topics named in `extra` (a test's own topics); return how many were deleted."""
    from confluent_kafka.admin import AdminClient

    from app.topics import topic_specs

    prefixes = tuple(f"{namespace.app_id}." for namespace in namespaces if not _is_live(namespace))
    live = {spec.name for spec in topic_specs(Settings.from_env())}
    admin = AdminClient({"bootstrap.servers": base.kafka_bootstrap})
    listed = admin.list_topics(timeout=TOPICS_DELETE_TIMEOUT_S).topics
    names = [name for name in listed if (prefixes and name.startswith(prefixes)) or name in extra]
    names = [name for name in names if name not in live]
    for future in (admin.delete_topics(names, operation_timeout=TOPICS_DELETE_TIMEOUT_S).values() if names else ()):
        try:
            future.result()
        except Exception as exc:  # the broker's error type; an absent topic is already gone
            if "UNKNOWN_TOPIC_OR_PART" not in str(exc):
                raise
    return len(names)


def discard(settings: Settings, *, database: bool = False, redis_claimed: bool = False,
            topics: bool = True, state: bool = True) -> None:
    """Remove what the namespace created, each part when asked: its database (when `settings` point at one
    of the namespace's: set-up may have failed before), its claimed Redis database, its topics, its state
    folder. Every part is tried; the first failure is raised after the others."""
    steps = []
    if database and _owns_database(settings):
        steps.append(lambda: drop_database(settings))
    if redis_claimed:
        steps.append(lambda: release_redis_database(settings))
    if topics:
        steps.append(lambda: delete_topics(settings))
    if state:
        steps.append(lambda: shutil.rmtree(settings.state_dir, ignore_errors=True))
    failures: list[Exception] = []
    for step in steps:
        try:
            step()
        except Exception as exc:  # a service's error: the remaining parts are still removed
            failures.append(exc)
    if failures:
        raise IsolationError(f"namespace {settings.app_id} only partly removed: {failures}") from failures[0]
