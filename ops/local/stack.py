"""The local real stack: Kafka (KRaft), Apicurio schema registry, MariaDB and Redis as our own processes.

`wallet stack up|down|status`. Every service runs from the repository's git-ignored folders:
jars in `.cache/`, data, logs and pid files in `.state/`. `up` is idempotent (a service that already
answers is reused and not owned by us), `down` stops only what a pid file says we started.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from app.settings import REPO_ROOT, Settings

CACHE_DIR = REPO_ROOT / ".cache"
KAFKA_LIB_DIR = CACHE_DIR / "kafka" / "lib"
APICURIO_DIR = CACHE_DIR / "apicurio"
APICURIO_ARTIFACT = "io.apicurio:apicurio-registry-app:3.3.3:tar.gz:all"
MAVEN_POM = REPO_ROOT / "ops" / "local" / "maven" / "pom.xml"

# Readiness budgets: the registry is a Quarkus app that starts in 10-40 s on 2 busy cores.
KAFKA_READY_TIMEOUT_S = 90.0
REGISTRY_READY_TIMEOUT_S = 180.0
MARIADB_READY_TIMEOUT_S = 60.0
REDIS_READY_TIMEOUT_S = 20.0
PROMETHEUS_READY_TIMEOUT_S = 30.0
STOP_GRACE_S = 20.0
BINLOG_EXPIRE_S = 24 * 3600
# Heaps are bounded: the machine has 2 cores and everything shares them.
KAFKA_HEAP = "-Xmx768m"
REGISTRY_HEAP = "-Xmx384m"
# Debian packages by a binary each provides: the services, the mariadb client and dump (provisioning, the
# replica's seed), promtool (tests/unit/test_alert_rules.py) and wrk, the HTTP load generator of
# `wallet bench http` (far cheaper per request than a Python client). The test session installs them
# before pytest collects (tests/conftest.py), so no test finds one missing.
APT_PACKAGES = {"mariadbd": "mariadb-server", "mariadb": "mariadb-client", "mariadb-dump": "mariadb-client",
                "redis-server": "redis-server", "prometheus": "prometheus", "promtool": "prometheus", "wrk": "wrk"}
# The local replica's account on the primary (local only: the stack binds to 127.0.0.1).
REPLICATION_USER = "wallet_repl"
REPLICATION_PASSWORD = "wallet_repl"
# Both replication threads must be running this soon after `START SLAVE`.
REPLICA_RUNNING_TIMEOUT_S = 60.0
# Databases the replica does not apply: the benchmarks' (`wallet bench sink` writes 1M rows) should not
# share the two cores with a replica applying them.
REPLICA_IGNORED_DATABASE_PREFIX = "bench_"
REPLICA_IGNORED_TABLES = REPLICA_IGNORED_DATABASE_PREFIX.replace("_", "\\_") + "%.%"


class StackError(RuntimeError):
    """A local service could not be installed or started.

    Operator action: read the log file named in the message (under `.state/logs/`).
    """


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    ready: Callable[[], bool]
    start: Callable[[], subprocess.Popen]
    timeout_s: float


def _state(settings: Settings, *parts: str) -> Path:
    path = settings.state_dir.joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _spawn(settings: Settings, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    log = open(_state(settings, "logs", f"{name}.log"), "ab")
    proc = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C in the terminal must not kill services mid-write
        env={**os.environ, **(env or {})},
        cwd=REPO_ROOT,
    )
    _state(settings, "pids", f"{name}.pid").write_text(str(proc.pid))
    return proc


# ---------------------------------------------------------------- installs


def missing_packages() -> list[str]:
    """The Debian packages of APT_PACKAGES whose binary is on neither the PATH nor /usr/sbin."""
    missing = [pkg for binary, pkg in APT_PACKAGES.items() if shutil.which(binary) is None
               and not Path("/usr/sbin", binary).exists()]
    return sorted(set(missing))


def ensure_packages() -> None:
    """Install MariaDB, Redis, Prometheus (with promtool) and wrk from Debian when a binary is missing."""
    missing = missing_packages()
    if not missing:
        return
    print(f"stack: installing {' '.join(missing)} with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


def ensure_jars() -> None:
    """Fetch the Kafka broker and Apicurio registry from Maven Central into `.cache/` once."""
    if not any(KAFKA_LIB_DIR.glob("kafka_2.13-*.jar")):
        print("stack: fetching Kafka jars from Maven Central", flush=True)
        subprocess.run(["mvn", "-q", "-B", "-f", str(MAVEN_POM), "dependency:copy-dependencies",
                        f"-DoutputDirectory={KAFKA_LIB_DIR}"], check=True)
    if not (APICURIO_DIR / "app" / "quarkus-run.jar").exists():
        print("stack: fetching Apicurio Registry from Maven Central", flush=True)
        APICURIO_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mvn", "-q", "-B", "dependency:copy", f"-Dartifact={APICURIO_ARTIFACT}",
                        f"-DoutputDirectory={APICURIO_DIR}"], check=True)
        archive = next(APICURIO_DIR.glob("apicurio-registry-app-*.tar.gz"))
        with tarfile.open(archive) as tar:
            tar.extractall(APICURIO_DIR / "app", filter="data")
        archive.unlink()


# ---------------------------------------------------------------- kafka


def _kafka_properties(settings: Settings) -> Path:
    data_dir = _state(settings, "kafka", "data")
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{settings.kafka_controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{settings.kafka_port},"
                     f"CONTROLLER://127.0.0.1:{settings.kafka_controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{settings.kafka_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": str(settings.partitions),
        # One node: every internal topic has one replica, or transactions find no coordinator.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.num.partitions": "4",
        "group.initial.rebalance.delay.ms": "0",
        # Topics are created by `wallet init` with the checked partition count, never implicitly.
        "auto.create.topics.enable": "false",
        "log.retention.hours": "-1",
        "log.segment.bytes": str(256 * 1024 * 1024),
    }
    path = _state(settings, "kafka", "server.properties")
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    return path


def _java_kafka(*args: str) -> list[str]:
    return ["java", KAFKA_HEAP, "-cp", f"{KAFKA_LIB_DIR}/*", *args]


def _start_kafka(settings: Settings) -> subprocess.Popen:
    props = _kafka_properties(settings)
    meta = settings.state_dir / "kafka" / "data" / "meta.properties"
    if not meta.exists():
        cluster_id = subprocess.run(_java_kafka("kafka.tools.StorageTool", "random-uuid"),
                                    check=True, capture_output=True, text=True).stdout.strip()
        subprocess.run(_java_kafka("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props),
                                   "--ignore-formatted"),
                       check=True, capture_output=True, text=True)
    return _spawn(settings, "kafka", _java_kafka("kafka.Kafka", str(props)))


def _kafka_ready(settings: Settings) -> bool:
    if not _port_open(settings.kafka_port):
        return False
    from confluent_kafka.admin import AdminClient

    try:
        admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "socket.timeout.ms": 2000})
        metadata = admin.list_topics(timeout=3)
        return bool(metadata.brokers)
    except Exception:  # any client error means "not ready yet"; the caller has a deadline
        return False


# ---------------------------------------------------------------- registry


def _java_at_least(major: int) -> str:
    """A `java` binary of at least this major version (Apicurio 3.x is built for Java 21)."""
    candidates = [Path(os.environ["WALLET_REGISTRY_JAVA_HOME"]) / "bin" / "java"] \
        if os.environ.get("WALLET_REGISTRY_JAVA_HOME") else []
    candidates += sorted(Path("/usr/lib/jvm").glob("*/bin/java"), reverse=True)
    for java in candidates:
        try:
            out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=20).stderr
        except (OSError, subprocess.TimeoutExpired):
            continue
        version = out.split('"')[1] if '"' in out else "0"
        if int(version.split(".")[0]) >= major:
            return str(java)
    raise StackError(f"the schema registry needs Java >= {major}; none found under /usr/lib/jvm "
                     "(set WALLET_REGISTRY_JAVA_HOME, or WALLET_REGISTRY_LOCAL=0 with an external "
                     "WALLET_REGISTRY_URL)")


def _start_registry(settings: Settings) -> subprocess.Popen:
    env = {
        # Schemas live on the broker (topic kafkasql-journal): ids survive a registry restart,
        # which matters because every message on Kafka carries its schema id.
        "APICURIO_STORAGE_KIND": "kafkasql",
        "APICURIO_KAFKASQL_BOOTSTRAP_SERVERS": settings.kafka_bootstrap,
        "QUARKUS_HTTP_HOST": "127.0.0.1",
        "QUARKUS_HTTP_PORT": str(settings.registry_port),
        "APICURIO_CCOMPAT_LEGACY_ID_MODE_ENABLED": "true",
    }
    jar = APICURIO_DIR / "app" / "quarkus-run.jar"
    return _spawn(settings, "registry", [_java_at_least(21), REGISTRY_HEAP, "-jar", str(jar)], env)


def _registry_ready(settings: Settings) -> bool:
    try:
        with urllib.request.urlopen(f"{settings.registry_url}/subjects", timeout=2) as resp:
            json.load(resp)
            return resp.status == 200
    except Exception:  # connection refused / 5xx while starting
        return False


# ---------------------------------------------------------------- mariadb


def _mariadb_bin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _start_mariadbd(settings: Settings, name: str, port: int, role_args: list[str]) -> subprocess.Popen:
    """One of our MariaDB servers: data, socket and pid file under `.state/<name>/`."""
    datadir = _state(settings, name, "data")
    if not (datadir / "mysql").exists():
        subprocess.run([_mariadb_bin("mariadb-install-db"), f"--datadir={datadir}", "--user=root",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True)
    return _spawn(settings, name, [
        _mariadb_bin("mariadbd"), "--no-defaults", f"--datadir={datadir}", "--user=root",
        f"--port={port}", "--bind-address=127.0.0.1", "--skip-name-resolve",
        # Every Unicode text fits (owner ids, references), and ids compare byte for byte: "Alice" != "alice".
        "--character-set-server=utf8mb4", "--collation-server=utf8mb4_bin",
        f"--socket={settings.state_dir / name / 'mariadb.sock'}",
        f"--pid-file={settings.state_dir / name / 'mariadbd.pid'}",
        *role_args,
    ])


def _start_mariadb(settings: Settings) -> subprocess.Popen:
    datadir = settings.state_dir / "mariadb" / "data"
    return _start_mariadbd(settings, "mariadb", settings.mysql_port, [
        "--server-id=1", f"--log-bin={datadir / 'binlog'}", "--binlog-format=ROW",
        # The replica needs the binlog only until it has applied it; a day bounds the disk it takes.
        f"--binlog-expire-logs-seconds={BINLOG_EXPIRE_S}",
        # A sink catch-up of 1M events writes ~600 MB of rows and indexes: a pool and redo log that hold
        # them avoid page eviction and checkpoint stalls (docs/BENCHMARKS.md, Sink).
        "--innodb-buffer-pool-size=1G", "--innodb-log-file-size=512M", "--innodb-flush-log-at-trx-commit=1",
        "--max-connections=300",
    ])


def _mariadb_ready(settings: Settings) -> bool:
    return _port_open(settings.mysql_port) and _mysql_root(settings, "SELECT 1") is not None


def _mysql_root(settings: Settings, sql: str, *, server: str = "mariadb", port: int | None = None) -> str | None:
    sock = settings.state_dir / server / "mariadb.sock"
    args = ["mariadb", "-uroot", "-N", "-B", "-e", sql]
    args += [f"--socket={sock}"] if sock.exists() else ["-h127.0.0.1", f"-P{port or settings.mysql_port}"]
    proc = subprocess.run(args, capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else None


def _replica_sql(settings: Settings, sql: str) -> str | None:
    return _mysql_root(settings, sql, server="mariadb-replica", port=settings.mysql_replica_port)


def _start_mariadb_replica(settings: Settings) -> subprocess.Popen:
    datadir = settings.state_dir / "mariadb-replica" / "data"
    return _start_mariadbd(settings, "mariadb-replica", settings.mysql_replica_port, [
        "--server-id=2", "--read-only=ON", f"--relay-log={datadir / 'relay'}",
        f"--replicate-wild-ignore-table={REPLICA_IGNORED_TABLES}",
        "--innodb-buffer-pool-size=128M", "--innodb-flush-log-at-trx-commit=2",
        "--max-connections=200",
    ])


def _mariadb_replica_ready(settings: Settings) -> bool:
    return _port_open(settings.mysql_replica_port) and _replica_sql(settings, "SELECT 1") is not None


def _mariadb_replica_provision(settings: Settings) -> None:
    """Make the replica a GTID replica of the primary and start it (idempotent).

    A replica never configured is seeded from a consistent dump of the primary's databases taken with
    its GTID position (`mariadb-dump --single-transaction --gtid --master-data=2`), then replicates from
    that position: the primary's binlog may hold years of writes, a dump holds only what is there now.
    """
    user, password, database = _dsn_credentials(settings.mysql_dsn)
    # The replication account stays out of the binlog: the replica has no use for it.
    if _mysql_root(settings, f"SET SESSION sql_log_bin = 0; "
                   f"CREATE USER IF NOT EXISTS '{REPLICATION_USER}'@'127.0.0.1' IDENTIFIED BY '{REPLICATION_PASSWORD}'; "
                   f"GRANT REPLICATION SLAVE ON *.* TO '{REPLICATION_USER}'@'127.0.0.1';") is None:
        raise StackError("could not create the replication user on the MariaDB primary")
    if not (_replica_sql(settings, "SHOW SLAVE STATUS") or "").strip():
        _seed_replica(settings)
    grants = (f"CREATE USER IF NOT EXISTS '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'; "
              f"CREATE USER IF NOT EXISTS '{user}'@'localhost' IDENTIFIED BY '{password}'; "
              f"GRANT SLAVE MONITOR ON *.* TO '{user}'@'127.0.0.1'; "
              f"GRANT SLAVE MONITOR ON *.* TO '{user}'@'localhost'; "
              # The primary's grant may predate the seed's GTID position and so never replicate: reads need it.
              f"GRANT SELECT ON `{database}`.* TO '{user}'@'127.0.0.1'; "
              f"GRANT SELECT ON `{database}`.* TO '{user}'@'localhost';")
    if _replica_sql(settings, grants) is None:
        raise StackError("could not create the read user on the MariaDB replica")
    _replica_sql(settings, "START SLAVE")  # a note, not an error, when it already runs
    deadline = time.monotonic() + REPLICA_RUNNING_TIMEOUT_S
    state = ""
    while time.monotonic() < deadline:
        state = _replica_sql(settings, "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS "
                                       "WHERE VARIABLE_NAME = 'SLAVE_RUNNING'") or ""
        if state.strip() == "ON":  # both threads run
            return
        time.sleep(0.5)
    raise StackError(f"replica threads not running after {REPLICA_RUNNING_TIMEOUT_S:.0f} s:\n{state}")


def _seed_replica(settings: Settings) -> None:
    system = {"mysql", "information_schema", "performance_schema", "sys"}
    databases = [name for name in (_mysql_root(settings, "SHOW DATABASES") or "").split()
                 if name not in system and replicated(name)]
    position = ""
    if databases:
        sock = settings.state_dir / "mariadb" / "mariadb.sock"
        dump = subprocess.run(["mariadb-dump", "-uroot", f"--socket={sock}", "--single-transaction", "--gtid",
                               "--master-data=2", "--databases", *databases],
                              check=True, capture_output=True, text=True).stdout
        for line in dump.splitlines():
            if "gtid_slave_pos" in line:
                position = line.split("'")[1]
                break
        replica_sock = settings.state_dir / "mariadb-replica" / "mariadb.sock"
        subprocess.run(["mariadb", "-uroot", f"--socket={replica_sock}"], input=dump, check=True,
                       capture_output=True, text=True)
    else:
        position = (_mysql_root(settings, "SELECT @@GLOBAL.gtid_binlog_pos") or "").strip()
    sql = (f"SET GLOBAL gtid_slave_pos = '{position}'; "
           f"CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {settings.mysql_port}, "
           f"MASTER_USER = '{REPLICATION_USER}', MASTER_PASSWORD = '{REPLICATION_PASSWORD}', "
           f"MASTER_CONNECT_RETRY = 2, MASTER_USE_GTID = slave_pos;")
    if _replica_sql(settings, sql) is None:
        raise StackError("could not point the MariaDB replica at the primary")
    print(f"stack: mariadb-replica seeded from the primary at GTID '{position}' ({len(databases)} databases)",
          flush=True)


def _mariadb_provision(settings: Settings) -> None:
    """Create the application database and user named in the DSN (idempotent)."""
    user, password, database = _dsn_credentials(settings.mysql_dsn)
    sql = (f"CREATE DATABASE IF NOT EXISTS `{database}`; "
           f"CREATE USER IF NOT EXISTS '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'; "
           f"CREATE USER IF NOT EXISTS '{user}'@'localhost' IDENTIFIED BY '{password}'; "
           f"GRANT ALL ON `{database}`.* TO '{user}'@'127.0.0.1'; "
           f"GRANT ALL ON `{database}`.* TO '{user}'@'localhost'; FLUSH PRIVILEGES;")
    if _mysql_root(settings, sql) is None:
        raise StackError("could not create the wallet database and user in MariaDB")


def create_database(settings: Settings, database: str, *, drop: bool = False) -> str:
    """Create (or re-create with `drop`) a database on the local primary that the DSN's user may use;
    return `settings.mysql_dsn` pointing at it (tests and benchmarks get read models of their own)."""
    user, _, current = _dsn_credentials(settings.mysql_dsn)
    drop_sql = f"DROP DATABASE IF EXISTS `{database}`; " if drop else ""
    sql = (f"{drop_sql}CREATE DATABASE IF NOT EXISTS `{database}`; "
           f"GRANT ALL ON `{database}`.* TO '{user}'@'127.0.0.1'; GRANT ALL ON `{database}`.* TO '{user}'@'localhost';")
    if _mysql_root(settings, sql) is None:
        raise StackError(f"could not create the database {database} in the local MariaDB")
    base, _, query = settings.mysql_dsn.partition("?")
    return base.rsplit("/", 1)[0] + f"/{database}" + (f"?{query}" if query else "")


def replicated(database: str) -> bool:
    """Whether the local replica applies `database` (all but the benchmarks' `bench_*`)."""
    return not database.startswith(REPLICA_IGNORED_DATABASE_PREFIX)


def drop_database(settings: Settings, database: str) -> None:
    """Drop `database` on the local primary (the replica drops its copy, if it has one, by replication)."""
    if _mysql_root(settings, f"DROP DATABASE IF EXISTS `{database}`") is None:
        raise StackError(f"could not drop the database {database} in the local MariaDB")


def _dsn_credentials(dsn: str) -> tuple[str, str, str]:
    rest = dsn.split("://", 1)[1]
    creds, hostpart = rest.split("@", 1)
    user, _, password = creds.partition(":")
    database = hostpart.split("/", 1)[1].split("?", 1)[0]
    return user, password, database


# ---------------------------------------------------------------- redis


def _start_redis(settings: Settings) -> subprocess.Popen:
    datadir = _state(settings, "redis", "data")
    datadir.mkdir(parents=True, exist_ok=True)
    return _spawn(settings, "redis", [
        shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(settings.redis_port),
        "--bind", "127.0.0.1", "--dir", str(datadir), "--save", "",
        # The read model survives a restart (a stop/start loses nothing; a crash at most 1 s, which
        # `wallet rebuild` repairs): without it, wallets not written since the restart vanish from Redis.
        "--appendonly", "yes", "--appendfsync", "everysec",
        "--daemonize", "no", "--protected-mode", "yes",
    ])


def _redis_ready(settings: Settings) -> bool:
    if not _port_open(settings.redis_port):
        return False
    try:
        with socket.create_connection(("127.0.0.1", settings.redis_port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


# ---------------------------------------------------------------- prometheus

PROMETHEUS_SOURCE_CONFIG = REPO_ROOT / "ops" / "prometheus" / "prometheus.yml"
# Bound of the POST /-/reload that makes a running Prometheus read its rewritten config.
PROMETHEUS_RELOAD_TIMEOUT_S = 5.0


def prometheus_config(settings: Settings) -> dict:
    """ops/prometheus/prometheus.yml (the compose file's config) with local targets and absolute rule files.

    One source config: the compose service names `worker`, `sinks` and `web` become 127.0.0.1 on the ports
    these settings give the processor's and the sinks' metrics endpoints and the API. The processor workers,
    found by DNS in compose, are the `processor_workers` slots `make run` starts (worker_web_port + slot).
    """
    import yaml

    config = yaml.safe_load(PROMETHEUS_SOURCE_CONFIG.read_text())
    local_ports = {"worker": settings.worker_web_port, "sinks": settings.sinks_web_port, "web": settings.http_port}
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            targets = []
            for target in static["targets"]:
                host = target.rsplit(":", 1)[0]
                if host not in local_ports:
                    raise StackError(f"{PROMETHEUS_SOURCE_CONFIG}: no local port for target {target}")
                targets.append(f"127.0.0.1:{local_ports[host]}")
            static["targets"] = targets
        for discovered in job.pop("dns_sd_configs", []):
            if discovered["names"] != ["worker"]:
                raise StackError(f"{PROMETHEUS_SOURCE_CONFIG}: no local ports for the replicas of {discovered['names']}")
            job.setdefault("static_configs", []).append({"targets": [
                f"127.0.0.1:{settings.worker_web_port + slot}" for slot in range(settings.processor_workers)]})
    config["rule_files"] = [str(PROMETHEUS_SOURCE_CONFIG.parent / name) for name in config.get("rule_files", [])]
    return config


def _write_prometheus_config(settings: Settings) -> bool:
    """Write the local Prometheus's config for `settings`; whether it changed."""
    import yaml

    config_path = _state(settings, "prometheus", "prometheus.yml")
    text = yaml.safe_dump(prometheus_config(settings), sort_keys=False)
    if config_path.exists() and config_path.read_text() == text:
        return False
    config_path.write_text(text)
    return True


def _prometheus_provision(settings: Settings) -> None:
    """A running local Prometheus of this state folder scrapes what these settings start (one target per
    processor worker slot: `WALLET_PROCESSOR_WORKERS=3 make run` on a stack started with 1): rewrite its
    config and reload it when that changed."""
    if _pid(settings, "prometheus") is None or not _write_prometheus_config(settings):
        return
    request = urllib.request.Request(f"http://127.0.0.1:{settings.prometheus_port}/-/reload", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=PROMETHEUS_RELOAD_TIMEOUT_S):
            pass
    except OSError as exc:
        print(f"stack: prometheus did not reload its config ({exc}); restart it to scrape every worker", flush=True)


def _start_prometheus(settings: Settings) -> subprocess.Popen:
    _write_prometheus_config(settings)
    config_path = _state(settings, "prometheus", "prometheus.yml")
    data_dir = settings.state_dir / "prometheus" / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    return _spawn(settings, "prometheus", [
        shutil.which("prometheus") or "/usr/bin/prometheus", f"--config.file={config_path}",
        f"--storage.tsdb.path={data_dir}",
        "--storage.tsdb.retention.time=2d", f"--web.listen-address=127.0.0.1:{settings.prometheus_port}",
        # POST /-/reload picks up an edited config without a restart.
        "--web.enable-lifecycle",
    ])


def _prometheus_ready(settings: Settings) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{settings.prometheus_port}/-/ready", timeout=2) as resp:
            return resp.status == 200
    except Exception:  # connection refused / 503 while starting
        return False


# ---------------------------------------------------------------- orchestration


def services(settings: Settings) -> list[Service]:
    svc = [
        Service("kafka", settings.kafka_port, lambda: _kafka_ready(settings),
                lambda: _start_kafka(settings), KAFKA_READY_TIMEOUT_S),
        Service("mariadb", settings.mysql_port, lambda: _mariadb_ready(settings),
                lambda: _start_mariadb(settings), MARIADB_READY_TIMEOUT_S),
        Service("redis", settings.redis_port, lambda: _redis_ready(settings),
                lambda: _start_redis(settings), REDIS_READY_TIMEOUT_S),
    ]
    if settings.mysql_replica_port:
        # After the primary, which it is seeded from and replicates.
        svc.insert(svc.index(next(s for s in svc if s.name == "mariadb")) + 1,
                   Service("mariadb-replica", settings.mysql_replica_port,
                           lambda: _mariadb_replica_ready(settings), lambda: _start_mariadb_replica(settings),
                           MARIADB_READY_TIMEOUT_S))
    if settings.registry_local:
        # After Kafka: its storage is a topic on the broker.
        svc.insert(1, Service("registry", settings.registry_port, lambda: _registry_ready(settings),
                              lambda: _start_registry(settings), REGISTRY_READY_TIMEOUT_S))
    svc.append(Service("prometheus", settings.prometheus_port, lambda: _prometheus_ready(settings),
                       lambda: _start_prometheus(settings), PROMETHEUS_READY_TIMEOUT_S))
    return svc


def _pid(settings: Settings, name: str) -> int | None:
    path = settings.state_dir / "pids" / f"{name}.pid"
    try:
        pid = int(path.read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def _wait_ready(service: Service, proc: subprocess.Popen | None, settings: Settings) -> None:
    deadline = time.monotonic() + service.timeout_s
    while time.monotonic() < deadline:
        if service.ready():
            return
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{service.name} exited with {proc.returncode}; "
                             f"see {settings.state_dir / 'logs' / (service.name + '.log')}")
        time.sleep(0.5)
    raise StackError(f"{service.name} not ready after {service.timeout_s:.0f} s; "
                     f"see {settings.state_dir / 'logs' / (service.name + '.log')}")


def up(settings: Settings, names: list[str] | None = None) -> list[str]:
    """Start every service that does not already answer; return the names this call started."""
    ensure_packages()
    ensure_jars()
    started: list[str] = []
    for service in services(settings):
        if names and service.name not in names:
            continue
        if service.ready():
            print(f"stack: {service.name:9} reused on 127.0.0.1:{service.port}", flush=True)
        else:
            if _port_open(service.port) and _pid(settings, service.name) is None:
                raise StackError(f"port {service.port} is taken by a process that is not a ready "
                                 f"{service.name}; set another port in WALLET_* and retry")
            t0 = time.monotonic()
            proc = service.start() if _pid(settings, service.name) is None else None
            _wait_ready(service, proc, settings)
            if proc is not None:
                started.append(service.name)
            print(f"stack: {service.name:9} ready on 127.0.0.1:{service.port} "
                  f"({time.monotonic() - t0:.1f} s)", flush=True)
        if service.name == "mariadb":
            _mariadb_provision(settings)
        if service.name == "mariadb-replica":
            _mariadb_replica_provision(settings)
        if service.name == "prometheus":
            _prometheus_provision(settings)
    return started


def _reap(pid: int) -> None:
    """Collect the exit status of a service this process started, or it stays a zombie that `_pid` sees alive
    (and `down` would wait the whole STOP_GRACE_S for it)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child: its own parent reaps it
        pass


def down(settings: Settings, names: list[str] | None = None) -> None:
    """Stop the services whose pid files we wrote (reverse start order)."""
    for service in reversed(services(settings)):
        if names is not None and service.name not in names:
            continue
        pid = _pid(settings, service.name)
        if pid is None:
            continue
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and _pid(settings, service.name) is not None:
            _reap(pid)
            time.sleep(0.2)
        if _pid(settings, service.name) is not None:
            os.killpg(pid, signal.SIGKILL)
        (settings.state_dir / "pids" / f"{service.name}.pid").unlink(missing_ok=True)
        print(f"stack: {service.name:9} stopped", flush=True)


def status(settings: Settings) -> dict[str, dict[str, object]]:
    report = {}
    for service in services(settings):
        report[service.name] = {"port": service.port, "pid": _pid(settings, service.name),
                                "ready": service.ready()}
    return report


def main(argv: list[str], settings: Settings) -> int:
    action = argv[0] if argv else "status"
    names = argv[1:] or None
    try:
        if action == "up":
            up(settings, names)
        elif action == "down":
            down(settings, names)
        elif action == "status":
            for name, info in status(settings).items():
                state = "ready" if info["ready"] else "down"
                owner = f"pid {info['pid']}" if info["pid"] else "not ours"
                print(f"{name:9} {state:6} 127.0.0.1:{info['port']:<6} {owner}")
        else:
            print("usage: wallet stack up|down|status [service ...]", file=sys.stderr)
            return 2
    except (StackError, subprocess.CalledProcessError) as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1
    return 0
