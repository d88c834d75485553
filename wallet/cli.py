"""wallet: the Kafka-native wallet ledger's one command line.

  wallet stack up|down|status     the local real stack (Kafka, registry, MariaDB, Redis)
  wallet init                     create topics, register schemas, migrate MySQL (idempotent)
  wallet worker [--role R ...]    run roles: processor, sinks, web (default: all)
  wallet run                      stack up + init + processor, sinks and web processes, in the foreground (make run)
  wallet produce KIND k=v ...     publish one command (Avro) onto wallet.commands
  wallet bench processor [--hot]  throughput and latency against a raw-loop ceiling
  wallet bench sink [--json]      MySQL sink catch-up events/s against a naive one-event-per-transaction sink
  wallet bench http [--json]      API balance GETs against MySQL-per-request; deposit latency at 1,000/s open loop
  wallet bench failover [--json]  partitions' takeover after a processor worker is killed or stopped; HTTP writes lost
  wallet rebuild                  drop and rebuild MySQL and Redis from wallet.events
  wallet reconcile                compare table, event replay, MySQL and Redis; exit 1 on any difference
  wallet dlq list [--limit N] [--sink]   the DLQ (--sink: the sink DLQ): reason, detail, source topic/partition/offset
  wallet dlq replay [--dry-run] [--offset P:O ...]   re-drive DLQ messages to their source topic, once each
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
import uuid

from app.settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wallet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    stack = sub.add_parser("stack", help="local real stack")
    stack.add_argument("action", choices=["up", "down", "status"])
    stack.add_argument("services", nargs="*")
    sub.add_parser("init", help="topics, schemas, migrations")
    worker = sub.add_parser("worker", help="run roles in the foreground")
    worker.add_argument("--role", action="append", choices=["processor", "sinks", "web", "all"])
    worker.add_argument("--instance", type=int, default=0,
                        help="worker slot on this host (0-based): its port is WALLET_WORKER_WEB_PORT + slot and its "
                             "processor's group member name `<host>-<slot>`")
    sub.add_parser("run", help="stack up, init, and every role in the foreground")
    sub.add_parser("rebuild", help="drop and rebuild MySQL and Redis from wallet.events")
    reconcile = sub.add_parser("reconcile", help="compare table, event replay, MySQL and Redis; exit 1 on any difference")
    reconcile.add_argument("--no-table", action="store_true", help="skip the processor stores (not on this host)")
    produce = sub.add_parser("produce", help="publish one command",
                             description="e.g. wallet produce Deposit wallet_id=w1 amount=150.75 currency=EUR")
    produce.add_argument("kind", help="command kind: OpenWallet, Deposit, Withdraw, Transfer, PlaceHold, ...")
    produce.add_argument("fields", nargs="*", help="field=value; amount=<decimal> needs currency=")
    dlq = sub.add_parser("dlq", help="inspect and re-drive the DLQ (docs/OPERATIONS.md)")
    dlq.add_argument("action", choices=["list", "replay"])
    dlq.add_argument("--limit", type=int, default=None, help="list: only the newest N messages")
    dlq.add_argument("--sink", action="store_true",
                     help="list the sink DLQ (events a read-model store refused) instead of the command DLQ")
    dlq.add_argument("--dry-run", action="store_true", help="replay: say what would be re-driven, publish nothing")
    dlq.add_argument("--offset", action="append", metavar="P:O", dest="positions",
                     help="replay: the DLQ record at partition P, offset O (repeatable; default: all not replayed)")
    bench = sub.add_parser("bench", help="benchmarks, each in a namespace of its own (see docs/BENCHMARKS.md)")
    bench.add_argument("target", choices=["processor", "sink", "http", "failover"])
    bench.add_argument("options", nargs=argparse.REMAINDER)
    return parser


def _api_keys(settings: Settings):
    """The configured keys, or a fresh development key with every scope (returned to be printed)."""
    from web.auth import ApiKeys

    if settings.api_keys:
        return ApiKeys(settings.api_keys), None
    key = f"dev-{secrets.token_urlsafe(18)}"
    return ApiKeys(f"{key}=wallets:read+wallets:write+admin"), key


def _build_command(kind: str, fields: list[str]):
    from app.domain import commands as c
    from web.amounts import parse_amount

    cls = c.COMMAND_TYPE_BY_KIND.get(kind)
    if cls is None:
        raise SystemExit(f"unknown kind {kind!r}; one of {sorted(c.COMMAND_TYPE_BY_KIND)}")
    values: dict[str, object] = dict(field.split("=", 1) for field in fields)
    values.setdefault("command_id", str(uuid.uuid4()))
    values.setdefault("timestamp_ms", int(time.time() * 1000))
    if "amount" in values:
        values["amount_minor"] = parse_amount(values.pop("amount"), str(values.get("currency", "")))
    for name in ("amount_minor", "overdraft_limit_minor", "expires_at_ms", "timestamp_ms"):
        if name in values:
            values[name] = int(values[name])
    return cls(**values)


def produce(settings: Settings, kind: str, fields: list[str]) -> int:
    from confluent_kafka import Producer

    from app.codec import CommandCodec, SchemaRegistry
    from app.kafka import confluent_producer_config

    command = _build_command(kind, fields)
    codec = CommandCodec(SchemaRegistry(settings.registry_url), settings.commands_topic)
    producer = Producer(confluent_producer_config(settings))
    delivered: list[object] = []
    producer.produce(settings.commands_topic, key=command.wallet_id.encode(), value=codec.encode(command),
                     on_delivery=lambda err, msg: delivered.append(err or msg))
    producer.flush(10)
    result = delivered[0] if delivered else "not delivered within 10 s"
    if hasattr(result, "partition"):
        print(f"{kind} {command.command_id} -> {settings.commands_topic}[{result.partition()}]@{result.offset()}")
        return 0
    print(f"produce failed: {result}", file=sys.stderr)
    return 1


# How long `make run` waits for its processes to answer, and how often it looks.
RUN_READY_TIMEOUT_S = 120.0
RUN_POLL_INTERVAL_S = 0.5
# A process of `make run` that exits is restarted (as compose's `restart: unless-stopped` does), after this
# pause, at most this many times in a row: one that keeps failing stops `make run` loudly.
RUN_RESTART_BACKOFF_S = 2.0
RUN_RESTARTS_MAX = 5
# A process that ran this long before it exited starts a new run of restarts.
RUN_RESTART_RESET_S = 60.0


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def run_processes(settings: Settings) -> list[list[str]]:
    """The roles of each process `make run` starts: the processor workers, the sinks and the web, each a
    failure domain of its own (wallet/worker.py)."""
    processors = [["--role", "processor", "--instance", str(slot)] for slot in range(settings.processor_workers)]
    return [*processors, ["--role", "sinks"], ["--role", "web"]]


def run(settings: Settings) -> int:
    """`make run`: everything local, in the foreground; stops what it started on Ctrl-C or SIGTERM.

    Processes shaped like the deployment (docker-compose.yml): `processor_workers` processor workers
    (metrics on WALLET_WORKER_WEB_PORT + slot), the sinks (WALLET_SINKS_WEB_PORT) and the web process (the
    API and its metrics), so the local Prometheus scrapes each once. A process that exits is reported and
    restarted, and the others go on: a sink that fails does not stop commands being decided. One that fails
    RUN_RESTARTS_MAX times in a row stops everything and the command fails loudly.
    """
    import signal
    import subprocess

    from wallet import bootstrap
    from ops.local import stack

    started = stack.up(settings)
    children: dict[int, subprocess.Popen] = {}
    stopping = False

    def stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        bootstrap.init(settings)
        _, dev_key = _api_keys(settings)
        env = {**os.environ, **settings.to_env()}
        if dev_key:
            env["WALLET_API_KEYS"] = f"{dev_key}=wallets:read+wallets:write+admin"
        processes = run_processes(settings)

        def spawn(index: int) -> None:
            argv = [sys.executable, "-m", "wallet.cli", "worker", *processes[index]]
            # Own process group: the terminal's Ctrl-C reaches this supervisor, which stops them in order.
            children[index] = subprocess.Popen(argv, env=env, start_new_session=True)

        for index in range(len(processes)):
            spawn(index)
        restarts = dict.fromkeys(children, 0)
        started_at = dict.fromkeys(children, time.monotonic())
        base = f"http://{settings.http_host}:{settings.http_port}"
        worker_metrics = f"http://{settings.http_host}:{settings.worker_web_port}/metrics"
        sinks_metrics = f"http://{settings.http_host}:{settings.sinks_web_port}/metrics"
        deadline = time.monotonic() + RUN_READY_TIMEOUT_S
        announced = False
        while not stopping:
            for index, child in list(children.items()):
                if child.poll() is None:
                    continue
                name = " ".join(processes[index])
                if time.monotonic() - started_at[index] > RUN_RESTART_RESET_S:
                    restarts[index] = 0
                if restarts[index] >= RUN_RESTARTS_MAX:
                    print(f"run: {name} exited with {child.returncode} after {RUN_RESTARTS_MAX} restarts; stopping",
                          file=sys.stderr)
                    return 1
                restarts[index] += 1
                print(f"run: {name} exited with {child.returncode}; restarting in {RUN_RESTART_BACKOFF_S:.0f} s "
                      f"({restarts[index]}/{RUN_RESTARTS_MAX})", file=sys.stderr, flush=True)
                time.sleep(RUN_RESTART_BACKOFF_S)
                spawn(index)
                started_at[index] = time.monotonic()
            if not announced and all(map(_answers, (f"{base}/healthz", worker_metrics, sinks_metrics))):
                announced = True
                print(f"\nwallet is running:\n  API        {base}  (docs {base}/docs, metrics {base}/metrics)", flush=True)
                print(f"  processor  metrics {worker_metrics}")
                print(f"  sinks      metrics {sinks_metrics}")
                print(f"  Prometheus http://127.0.0.1:{settings.prometheus_port}  (alerts: docs/OPERATIONS.md)")
                if dev_key:
                    print(f"  development API key (all scopes): {dev_key}")
                    print(f"  try: curl -H 'Authorization: Bearer {dev_key}' {base}/v1/wallets/<id>/balance")
                print("  Ctrl-C stops the processes and the services this command started.\n", flush=True)
            if not announced and time.monotonic() > deadline:
                print(f"run: not ready after {RUN_READY_TIMEOUT_S:.0f} s", file=sys.stderr)
                return 1
            time.sleep(RUN_POLL_INTERVAL_S)
        return 0
    finally:
        for child in children.values():
            if child.poll() is None:
                child.terminate()
        for child in children.values():
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
        stack.down(settings, started)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    settings = Settings.from_env()
    if args.command == "stack":
        from ops.local import stack

        return stack.main([args.action, *args.services], settings)
    if args.command == "init":
        from wallet import bootstrap

        bootstrap.init(settings)
        return 0
    if args.command == "worker":
        from app import logs
        from wallet import worker

        logs.configure(settings.log_level)
        roles = set(worker.ROLES) if not args.role or "all" in args.role else set(args.role)
        api_keys = None
        if "web" in roles:
            api_keys, dev_key = _api_keys(settings)
            if dev_key:
                print(f"development API key (all scopes): {dev_key}", flush=True)
        return worker.main(settings, roles, instance=args.instance, api_keys=api_keys)
    if args.command == "rebuild":
        from wallet import rebuild

        return rebuild.main(settings)
    if args.command == "reconcile":
        from wallet import reconcile

        return reconcile.main(settings, check_table=not args.no_table)
    if args.command == "run":
        return run(settings)
    if args.command == "produce":
        return produce(settings, args.kind, args.fields)
    if args.command == "dlq":
        from wallet import dlq

        return dlq.main(settings, args.action, limit=args.limit, positions=args.positions, dry_run=args.dry_run,
                        sink=args.sink)
    if args.command == "bench":
        if args.target == "sink":
            from bench import sink_bench

            return sink_bench.main(args.options, settings)
        if args.target == "http":
            from bench import http_bench

            return http_bench.main(args.options, settings)
        if args.target == "failover":
            from bench import failover_bench

            return failover_bench.main(args.options, settings)
        from bench import processor_bench

        return processor_bench.main(args.options, settings)
    return 2


if __name__ == "__main__":
    sys.exit(main())
