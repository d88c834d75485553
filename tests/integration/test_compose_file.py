"""The production-shaped deployment (docker-compose.yml) is wired consistently. Nothing is started.

It lives under integration/ because it checks deployment wiring, but it needs no services: it parses the
compose file, ops/prometheus/prometheus.yml and the Grafana provisioning, and cross-checks them against each
other and against `app.settings.Settings`, so a renamed service, a port that nothing listens on or a
misspelled WALLET_* variable fails here instead of during `docker compose up` on a user's host.
"""

from __future__ import annotations

import dataclasses
import difflib
import graphlib
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from app.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_PATH = REPO_ROOT / "docker-compose.yml"
PROMETHEUS_PATH = REPO_ROOT / "ops" / "prometheus" / "prometheus.yml"
GRAFANA_PROVISIONING = REPO_ROOT / "ops" / "grafana" / "provisioning"

SETTINGS_FIELDS = {field.name for field in dataclasses.fields(Settings)}

# What the design (ARCHITECTURE.md, Operations) deploys.
REQUIRED_SERVICES = {
    "kafka-1", "kafka-2", "kafka-3", "schema-registry", "kafka-ui", "mysql-primary", "mysql-replica",
    "redis", "prometheus", "grafana", "init", "worker", "sinks", "web",
}
WALLET_SERVICES = ("init", "worker", "sinks", "web")
# The long-running ledger services and the one role each runs: separate failure domains (wallet/worker.py).
ROLE_SERVICES = {"worker": "processor", "sinks": "sinks", "web": "web"}

# Ports images listen on when the service's own command and environment do not set one (image defaults;
# the services in docker-compose.yml set theirs explicitly, this is the fallback for a service that stops).
IMAGE_DEFAULT_PORTS = {
    "mariadb": 3306,
    "redis": 6379,
    "apicurio/apicurio-registry": 8080,  # QUARKUS_HTTP_PORT
    "ghcr.io/kafbat/kafka-ui": 8080,  # SERVER_PORT
    "prom/prometheus": 9090,  # --web.listen-address
    "grafana/grafana": 3000,  # GF_SERVER_HTTP_PORT
}
# Environment variables and command-line flags by which those images take another port.
PORT_ENV_VARS = ("QUARKUS_HTTP_PORT", "SERVER_PORT", "GF_SERVER_HTTP_PORT")
PORT_FLAGS = ("--port", "--web.listen-address")
# Default ports of URL schemes, when a URL names none.
SCHEME_DEFAULT_PORTS = {"http": 80, "https": 443, "redis": 6379, "mysql": 3306}

_INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


# ------------------------------------------------------------------ reading the files


def _interpolate(text: str) -> str:
    """`text` as compose reads it with no variable set: defaults applied, required ones a placeholder."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op = match.group("op") or ""
        if op.endswith("-"):
            return match.group("arg")
        if op.endswith("?"):
            return f"required-{name.lower()}"
        return ""

    return _INTERPOLATION.sub(replace, text)


def _interpolated(node):
    if isinstance(node, str):
        return _interpolate(node)
    if isinstance(node, list):
        return [_interpolated(item) for item in node]
    if isinstance(node, dict):
        return {key: _interpolated(value) for key, value in node.items()}
    return node


RAW_COMPOSE_TEXT = COMPOSE_PATH.read_text()
COMPOSE = _interpolated(yaml.safe_load(RAW_COMPOSE_TEXT))
SERVICES: dict[str, dict] = COMPOSE["services"]


def _env(name: str) -> dict[str, str]:
    """A service's environment as strings (compose accepts a mapping or a list of KEY=VALUE)."""
    environment = SERVICES[name].get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) if "=" in item else (item, "") for item in environment)
    return {key: "" if value is None else str(value) for key, value in environment.items()}


def _command(name: str) -> list[str]:
    command = SERVICES[name].get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def _image(name: str) -> str:
    """Image name without tag, or "" for a service built from the Dockerfile."""
    image = SERVICES[name].get("image", "")
    return image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image


def _is_wallet_app(name: str) -> bool:
    return "build" in SERVICES[name]


def _depends_on(name: str) -> dict[str, str]:
    """Dependencies of a service and their condition (the short list form means service_started)."""
    depends = SERVICES[name].get("depends_on") or {}
    if isinstance(depends, list):
        return {dep: "service_started" for dep in depends}
    return {dep: (spec or {}).get("condition", "service_started") for dep, spec in depends.items()}


def _one_shot_services() -> set[str]:
    """Services that others wait on to complete: they run once and exit."""
    return {dep for name in SERVICES for dep, cond in _depends_on(name).items()
            if cond == "service_completed_successfully"}


def _kafka_services() -> list[str]:
    return sorted(name for name in SERVICES if _image(name) == "apache/kafka")


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    """`NAME://host:port,...` (Kafka listeners) as {NAME: (host, port)}."""
    parsed = {}
    for entry in filter(None, (part.strip() for part in value.split(","))):
        listener, address = entry.split("://", 1)
        host, _, port = address.rpartition(":")
        parsed[listener] = (host, int(port))
    return parsed


def _flag(command: list[str], flag: str) -> str | None:
    for index, part in enumerate(command):
        if part.startswith(flag + "="):
            return part.split("=", 1)[1]
        if part == flag and index + 1 < len(command):
            return command[index + 1]
    return None


def _wallet_settings(name: str) -> Settings:
    return Settings.from_env({key: value for key, value in _env(name).items() if key.startswith("WALLET_")})


def _wallet_roles(name: str) -> tuple[set[str], int]:
    """Roles and processor instance index of `wallet worker ...`, as wallet/cli.py reads them."""
    command = _command(name)
    roles = {command[i + 1] for i, part in enumerate(command[:-1]) if part == "--role"}
    if not roles or "all" in roles:
        roles = {"processor", "sinks", "web"}
    return roles, int(_flag(command, "--instance") or 0)


def listening_ports(name: str) -> set[int]:
    """The ports a service listens on, from its own command, environment or settings where it says so."""
    env, command = _env(name), _command(name)
    if _image(name) == "apache/kafka":
        return {port for _, port in _listeners(env["KAFKA_LISTENERS"]).values()}
    if _is_wallet_app(name):
        if "worker" not in command:
            return set()
        settings = _wallet_settings(name)
        roles, instance = _wallet_roles(name)
        # wallet/worker.py: the API serves /metrics itself; a process without it starts a metrics server, on
        # the processor's slot port, or the sinks' when it runs no processor (view_port).
        if "web" in roles:
            return {settings.http_port}
        return {(settings.worker_web_port if "processor" in roles else settings.sinks_web_port) + instance}
    for flag in PORT_FLAGS:
        if (value := _flag(command, flag)) is not None:
            return {int(value.rsplit(":", 1)[-1])}
    for variable in PORT_ENV_VARS:
        if variable in env:
            return {int(env[variable])}
    image = _image(name)
    assert image in IMAGE_DEFAULT_PORTS, f"no known listening port for {name} ({image}); add it to the map"
    return {IMAGE_DEFAULT_PORTS[image]}


def _url_endpoint(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    return parts.hostname or "", parts.port or SCHEME_DEFAULT_PORTS[scheme]


def _bootstrap_endpoints(value: str) -> list[tuple[str, int]]:
    endpoints = []
    for entry in value.split(","):
        host, _, port = entry.strip().rpartition(":")
        endpoints.append((host, int(port)))
    return endpoints


def _endpoint_problems(endpoints: list[tuple[str, int]], who: str) -> list[str]:
    problems = []
    for host, port in endpoints:
        if host not in SERVICES:
            problems.append(f"{who}: {host}:{port} names no service")
        elif port not in listening_ports(host):
            problems.append(f"{who}: {host}:{port}, but {host} listens on {sorted(listening_ports(host))}")
    return problems


def _mount_target(name: str, source: str) -> str | None:
    """Where a service mounts `source` (a repository path like ./ops/x or a named volume)."""
    for volume in SERVICES[name].get("volumes") or []:
        if isinstance(volume, str):
            parts = volume.split(":")
            src, target = parts[0], parts[1]
        else:
            src, target = volume.get("source", ""), volume["target"]
        if src.rstrip("/") == source.rstrip("/"):
            return target
    return None


def _named_volume_targets(name: str) -> set[str]:
    targets = set()
    for volume in SERVICES[name].get("volumes") or []:
        src, target = (volume.split(":")[:2] if isinstance(volume, str)
                       else (volume.get("source", ""), volume["target"]))
        if src and not src.startswith((".", "/", "~")):
            targets.add(target)
    return targets


# ------------------------------------------------------------------ services and start order


def test_every_service_the_design_deploys_is_defined():
    missing = REQUIRED_SERVICES - set(SERVICES)
    assert not missing, f"docker-compose.yml lacks {sorted(missing)}"


def test_long_running_services_have_healthchecks_and_one_shot_services_do_not_restart():
    one_shot = _one_shot_services()
    assert {"init"} <= one_shot, "worker and web must wait for `wallet init` to complete"
    for name, service in SERVICES.items():
        if name in one_shot:
            assert service.get("restart", "no") == "no", f"one-shot {name} would be restarted after it exits"
            continue
        healthcheck = service.get("healthcheck") or {}
        assert healthcheck.get("test") and not healthcheck.get("disable"), f"{name} has no healthcheck"


def test_depends_on_names_defined_services_with_a_condition_they_can_meet():
    one_shot = _one_shot_services()
    for name in SERVICES:
        for dep, condition in _depends_on(name).items():
            assert dep in SERVICES, f"{name} depends on {dep}, which is not defined"
            if dep in one_shot:
                assert condition == "service_completed_successfully", \
                    f"{name} waits for one-shot {dep} with {condition}; it would start before {dep} finished"
            else:
                assert condition == "service_healthy", f"{name} waits for {dep} with {condition}, not healthy"
                assert SERVICES[dep].get("healthcheck"), f"{name} waits for {dep} to be healthy: no healthcheck"


def test_dependencies_have_no_cycle():
    graph = {name: set(_depends_on(name)) for name in SERVICES}
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"depends_on cycle: {' -> '.join(exc.args[1])}")


def test_wallet_services_start_after_every_service_they_connect_to():
    def closure(name: str) -> set[str]:
        seen, todo = set(), [name]
        while todo:
            for dep in _depends_on(todo.pop()):
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return seen

    for name in WALLET_SERVICES:
        settings = _wallet_settings(name)
        hosts = {host for host, _ in _bootstrap_endpoints(settings.kafka_bootstrap)}
        hosts |= {_url_endpoint(url)[0] for url in
                  (settings.registry_url, settings.mysql_dsn, settings.redis_url, settings.mysql_replica_dsn)
                  if url}
        if name == "init":  # init writes no Redis and reads no replica
            hosts -= {_url_endpoint(settings.redis_url)[0], _url_endpoint(settings.mysql_replica_dsn)[0]}
        missing = hosts - closure(name)
        assert not missing, f"{name} may start before {sorted(missing)}, which it connects to"
    for name in ROLE_SERVICES:
        assert _depends_on(name).get("init") == "service_completed_successfully"


# ------------------------------------------------------------------ WALLET_* settings


def test_every_wallet_variable_in_the_compose_file_is_a_settings_field():
    names = set(re.findall(r"\bWALLET_[A-Z0-9_]+", RAW_COMPOSE_TEXT))
    unknown = {}
    for name in sorted(names):
        field = name.removeprefix("WALLET_").lower()
        if field not in SETTINGS_FIELDS:
            unknown[name] = [f"WALLET_{match.upper()}" for match in difflib.get_close_matches(field, SETTINGS_FIELDS)]
    assert not unknown, f"not read by app.settings.Settings (did you mean?): {unknown}"
    assert names, "no WALLET_* variable found: the ledger's services are not configured"


def test_wallet_services_share_one_valid_configuration():
    configurations = {}
    for name in WALLET_SERVICES:
        assert _is_wallet_app(name), f"{name} is not built from the Dockerfile"
        settings = _wallet_settings(name)  # raises SettingsError on a value the ledger cannot parse
        configurations[name] = dataclasses.replace(settings, api_keys="")
    assert len(set(map(repr, configurations.values()))) == 1, \
        f"init, worker and web disagree on settings: {configurations}"
    assert _wallet_settings("web").api_keys, "web has no WALLET_API_KEYS: it would run with a printed dev key"


def test_processor_sinks_and_web_run_in_services_of_their_own():
    # A sink that fails (or crashes) must not stop the processor deciding commands: one role per service.
    for name, role in ROLE_SERVICES.items():
        roles, _ = _wallet_roles(name)
        assert roles == {role}, f"{name} runs {sorted(roles)}; it should run only {role}"
        assert SERVICES[name].get("restart") == "unless-stopped", f"{name} is not restarted when it fails"
    assert _mount_target("sinks", "worker-state") == str(_wallet_settings("sinks").state_dir), \
        "the sinks export the reconcile verdict written in the worker's state folder"


def test_processor_replicas_sharing_the_state_volume_claim_member_slots():
    # `--scale worker=N` replicas share worker-state and are renamed on every recreate: without slots each
    # deploy would start every replica on a cold store folder of its new hostname.
    settings = _wallet_settings("worker")
    assert _mount_target("worker", "worker-state") == str(settings.state_dir)
    assert settings.processor_claim_member_slot and not settings.processor_member_name


def test_wallet_processes_listen_on_all_interfaces_so_other_containers_reach_them():
    for name in ROLE_SERVICES:
        assert _wallet_settings(name).http_host == "0.0.0.0", \
            f"{name} binds its API/metrics to {_wallet_settings(name).http_host}: unreachable from Prometheus"


def test_wallet_uses_the_deployed_registry_and_not_a_local_one():
    for name in WALLET_SERVICES:
        settings = _wallet_settings(name)
        assert settings.registry_local is False, f"{name} would try to start its own registry"
        assert urlsplit(settings.registry_url).path.rstrip("/") == "/apis/ccompat/v7", \
            f"{name}: {settings.registry_url} is not Apicurio's Confluent-compatible API"


@pytest.mark.parametrize("variable", [
    "WALLET_KAFKA_BOOTSTRAP", "WALLET_MYSQL_DSN", "WALLET_MYSQL_REPLICA_DSN", "WALLET_REDIS_URL",
    "WALLET_REGISTRY_URL",
])
def test_wallet_endpoints_name_services_on_ports_they_listen_on(variable):
    problems = []
    for name in WALLET_SERVICES:
        value = _env(name).get(variable)
        assert value, f"{name} does not set {variable}"
        endpoints = (_bootstrap_endpoints(value) if variable == "WALLET_KAFKA_BOOTSTRAP"
                     else [_url_endpoint(value)])
        problems += _endpoint_problems(endpoints, f"{name} {variable}")
    assert not problems, "\n".join(problems)


def test_kafka_bootstrap_addresses_are_ones_the_brokers_advertise():
    # After bootstrapping, clients connect to the advertised addresses: they must be the same names.
    for name in WALLET_SERVICES:
        for host, port in _bootstrap_endpoints(_wallet_settings(name).kafka_bootstrap):
            advertised = _listeners(_env(host)["KAFKA_ADVERTISED_LISTENERS"]).values()
            assert (host, port) in advertised, f"{host} advertises {sorted(advertised)}, not {host}:{port}"


def test_mysql_dsn_credentials_match_the_database_servers():
    for name in WALLET_SERVICES:
        for variable in ("WALLET_MYSQL_DSN", "WALLET_MYSQL_REPLICA_DSN"):
            parts = urlsplit(_env(name)[variable])
            server = _env(parts.hostname)
            expected = (server.get("MARIADB_USER"), server.get("MARIADB_PASSWORD"), server.get("MARIADB_DATABASE"))
            assert (parts.username, parts.password, parts.path.lstrip("/")) == expected, \
                f"{name} {variable} logs in as {parts.username}@{parts.path}, {parts.hostname} creates {expected}"


# ------------------------------------------------------------------ Kafka, registry, Kafka UI


def test_kafka_quorum_voters_list_every_broker_node():
    brokers = _kafka_services()
    assert len(brokers) >= 3, f"KRaft quorum of {brokers}: one lost node would stop the cluster"
    expected = set()
    for name in brokers:
        env = _env(name)
        controller_port = _listeners(env["KAFKA_LISTENERS"])[env["KAFKA_CONTROLLER_LISTENER_NAMES"]][1]
        expected.add(f"{env['KAFKA_NODE_ID']}@{name}:{controller_port}")
    node_ids = [_env(name)["KAFKA_NODE_ID"] for name in brokers]
    assert len(set(node_ids)) == len(node_ids), f"node ids repeat: {node_ids}"
    for name in brokers:
        env = _env(name)
        voters = set(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(","))
        assert voters == expected, f"{name} votes with {sorted(voters)}, the nodes are {sorted(expected)}"
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert len({_env(name)["CLUSTER_ID"] for name in brokers}) == 1, "brokers are formatted for different clusters"


def test_kafka_internal_topics_survive_the_loss_of_one_broker():
    brokers = _kafka_services()
    for name in brokers:
        env = _env(name)
        for replicas, min_isr in (("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"),
                                  ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_MIN_INSYNC_REPLICAS"),
                                  ("KAFKA_DEFAULT_REPLICATION_FACTOR", "KAFKA_MIN_INSYNC_REPLICAS")):
            assert int(env[replicas]) == 3 <= len(brokers), f"{name} {replicas}={env.get(replicas)}"
            assert int(env[min_isr]) == 2, f"{name} {min_isr}={env.get(min_isr)}"
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", f"{name} creates topics on first use"


def test_schema_registry_stores_schemas_on_the_brokers():
    env = _env("schema-registry")
    assert env["APICURIO_STORAGE_KIND"] == "kafkasql", "schemas (and their ids) would be lost on restart"
    problems = _endpoint_problems(_bootstrap_endpoints(env["APICURIO_KAFKASQL_BOOTSTRAP_SERVERS"]), "registry")
    assert not problems, "\n".join(problems)


def test_kafka_ui_reaches_the_brokers_and_decodes_avro_through_the_registry():
    env = _env("kafka-ui")
    problems = _endpoint_problems(_bootstrap_endpoints(env["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"]), "kafka-ui")
    problems += _endpoint_problems([_url_endpoint(env["KAFKA_CLUSTERS_0_SCHEMAREGISTRY"])], "kafka-ui registry")
    assert not problems, "\n".join(problems)
    assert env["KAFKA_CLUSTERS_0_SCHEMAREGISTRY"] == _wallet_settings("worker").registry_url, \
        "Kafka UI reads schemas from another registry API than the one the ledger registers them in"


def test_init_runs_wallet_init_with_a_replication_factor_the_brokers_can_hold():
    assert _command("init") == ["init"], "the init service must run `wallet init` (the image's entrypoint is wallet)"
    brokers = [name for name in SERVICES if name.startswith("kafka-")]
    factor = int(_env("init")["WALLET_TOPIC_REPLICATION_FACTOR"])
    assert 1 < factor <= len(brokers), "topics need more than one replica, and no more than there are brokers"


# ------------------------------------------------------------------ MariaDB


def test_mysql_replica_is_a_read_only_gtid_replica_of_the_primary():
    primary, replica = _command("mysql-primary"), _command("mysql-replica")
    assert _flag(primary, "--log-bin") is not None, "the primary writes no binlog to replicate"
    assert _flag(primary, "--server-id") == "1" and _flag(replica, "--server-id") == "2"
    assert _flag(replica, "--read-only") in ("ON", "1")
    replication = _env("mysql-replication")
    assert (replication["PRIMARY_HOST"], replication["REPLICA_HOST"]) == ("mysql-primary", "mysql-replica")
    assert int(replication["MYSQL_PORT"]) in listening_ports("mysql-primary") & listening_ports("mysql-replica")
    assert replication["DATABASE"] == _env("mysql-primary")["MARIADB_DATABASE"]
    assert replication["MARIADB_ROOT_PASSWORD"] == _env("mysql-replica")["MARIADB_ROOT_PASSWORD"] \
        == _env("mysql-primary")["MARIADB_ROOT_PASSWORD"]
    script_mount = next(v for v in SERVICES["mysql-replication"]["volumes"] if v.startswith("./ops/mariadb/"))
    script = (REPO_ROOT / script_mount.split(":")[0]).read_text()
    assert "MASTER_USE_GTID = slave_pos" in script and "START SLAVE" in script


# ------------------------------------------------------------------ data


def test_stateful_services_keep_their_data_in_declared_named_volumes():
    declared = set(COMPOSE.get("volumes") or {})
    for name in SERVICES:
        for volume in SERVICES[name].get("volumes") or []:
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source and not source.startswith((".", "/", "~")):
                assert source in declared, f"{name} mounts volume {source}, not declared under volumes:"
    data_dirs = {"mysql-primary": "/var/lib/mysql", "mysql-replica": "/var/lib/mysql", "redis": "/data",
                 "prometheus": "/prometheus", "grafana": "/var/lib/grafana",
                 "worker": str(_wallet_settings("worker").state_dir)}
    data_dirs |= {name: _env(name)["KAFKA_LOG_DIRS"] for name in _kafka_services()}
    for name, directory in data_dirs.items():
        assert directory in _named_volume_targets(name), f"{name} keeps {directory} in the container only"


# ------------------------------------------------------------------ Prometheus and Grafana


def _prometheus_config() -> dict:
    return yaml.safe_load(PROMETHEUS_PATH.read_text())


def test_prometheus_scrapes_worker_and_web_on_the_ports_they_serve_metrics():
    config = _prometheus_config()
    assert config["global"]["scrape_interval"] == "5s"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for job_name, service in (("wallet-worker", "worker"), ("wallet-sinks", "sinks"), ("wallet-web", "web")):
        job = jobs.get(job_name)
        assert job, f"prometheus.yml has no job {job_name}"
        assert job.get("metrics_path", "/metrics") == "/metrics"
        targets = [target for group in job.get("static_configs", []) for target in group["targets"]]
        # Found by DNS: each replica of the service (`--scale`), on one port.
        targets += [f"{name}:{group['port']}" for group in job.get("dns_sd_configs", []) for name in group["names"]]
        assert targets, f"{job_name} scrapes nothing"
        for target in targets:
            host, _, port = target.rpartition(":")
            assert host == service, f"{job_name} scrapes {host}, the {service} process runs in {service}"
            assert int(port) in listening_ports(service), \
                f"{job_name} scrapes port {port}; {service} serves metrics on {sorted(listening_ports(service))}"


def test_prometheus_reads_its_config_and_rule_file_from_the_repository():
    config_file = _flag(_command("prometheus"), "--config.file") or "/etc/prometheus/prometheus.yml"
    assert _mount_target("prometheus", "./ops/prometheus/prometheus.yml") == config_file
    config_dir = config_file.rsplit("/", 1)[0]
    for rule_file in _prometheus_config()["rule_files"]:
        target = rule_file if rule_file.startswith("/") else f"{config_dir}/{rule_file}"
        assert _mount_target("prometheus", f"./ops/prometheus/{Path(rule_file).name}") == target, \
            f"rule file {rule_file} is not mounted at {target}"
    assert "alerts.yml" in _prometheus_config()["rule_files"]


def test_grafana_reads_prometheus_and_the_repository_dashboards():
    assert _mount_target("grafana", "./ops/grafana/provisioning") == "/etc/grafana/provisioning"
    datasources = yaml.safe_load((GRAFANA_PROVISIONING / "datasources" / "prometheus.yml").read_text())
    prometheus = [source for source in datasources["datasources"] if source["type"] == "prometheus"]
    assert prometheus, "no Prometheus datasource"
    problems = _endpoint_problems([_url_endpoint(source["url"]) for source in prometheus], "grafana datasource")
    assert not problems, "\n".join(problems)
    providers = yaml.safe_load((GRAFANA_PROVISIONING / "dashboards" / "dashboards.yml").read_text())["providers"]
    dashboards_dir = _mount_target("grafana", "./ops/grafana/dashboards")
    assert dashboards_dir, "ops/grafana/dashboards is not mounted into Grafana"
    assert [provider["options"]["path"] for provider in providers] == [dashboards_dir]
