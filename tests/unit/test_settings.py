"""Settings read once from WALLET_* variables: types parsed, bad values named, ports derived from URLs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from app.settings import REPO_ROOT, Settings, SettingsError


def test_empty_environment_gives_the_documented_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.registry_local is True
    assert settings.partitions == 4
    assert settings.sink_retry_backoff_max_s == 5.0
    assert settings.command_retention_s == 7 * 24 * 3600
    assert settings.state_dir == REPO_ROOT / ".state"


def test_variables_that_are_not_settings_are_ignored() -> None:
    environ = {"PATH": "/usr/bin", "WALLET_NO_SUCH_SETTING": "x", "wallet_partitions": "9"}
    assert Settings.from_env(environ) == Settings()


@pytest.mark.parametrize(
    ("variable", "raw", "field", "value"),
    [
        ("WALLET_PARTITIONS", "8", "partitions", 8),
        ("WALLET_HTTP_PORT", "18080", "http_port", 18080),
        ("WALLET_COMMAND_WAIT_MS_MAX", "60000", "command_wait_ms_max", 60_000),
        ("WALLET_SINK_RETRY_BACKOFF_MAX_S", "0.25", "sink_retry_backoff_max_s", 0.25),
        ("WALLET_SINK_RETRY_BACKOFF_MAX_S", "10", "sink_retry_backoff_max_s", 10.0),
        ("WALLET_STATE_DIR", "/var/lib/wallet", "state_dir", Path("/var/lib/wallet")),
        ("WALLET_STATE_DIR", "relative/state", "state_dir", Path("relative/state")),
        ("WALLET_EVENTS_TOPIC", "ledger.events", "events_topic", "ledger.events"),
        ("WALLET_API_KEYS", "k1=admin", "api_keys", "k1=admin"),
        ("WALLET_MYSQL_REPLICA_DSN", "", "mysql_replica_dsn", ""),
    ],
)
def test_variable_is_parsed_to_the_type_of_its_field(variable: str, raw: str, field: str, value: object) -> None:
    parsed = getattr(Settings.from_env({variable: raw}), field)
    assert parsed == value
    assert type(parsed) is type(value)


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "True", "yes", "YES", "on", "On"])
def test_bool_variable_accepts_the_usual_true_words(raw: str) -> None:
    assert Settings.from_env({"WALLET_REGISTRY_LOCAL": raw}).registry_local is True


@pytest.mark.parametrize("raw", ["0", "false", "FALSE", "no", "No", "off", "OFF", ""])
def test_bool_variable_accepts_the_usual_false_words_and_empty(raw: str) -> None:
    assert Settings.from_env({"WALLET_REGISTRY_LOCAL": raw}).registry_local is False


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("WALLET_PARTITIONS", "four"),
        ("WALLET_PARTITIONS", ""),
        ("WALLET_PARTITIONS", "4.0"),
        ("WALLET_HTTP_PORT", "80.5"),
        ("WALLET_PROCESSOR_BATCH_WAIT_MS", "20ms"),
        ("WALLET_SINK_RETRY_BACKOFF_MAX_S", "fast"),
        ("WALLET_SINK_RETRY_BACKOFF_MAX_S", "5s"),
        ("WALLET_REGISTRY_LOCAL", "maybe"),
        ("WALLET_REGISTRY_LOCAL", "2"),
        ("WALLET_PROCESSOR_STANDBY_FOLD_CHUNK_EVENTS", "0"),  # a chunk of nothing would never fold
        ("WALLET_PROCESSOR_STANDBY_FETCH_RECORDS_MAX", "0"),
    ],
)
def test_bad_value_raises_settings_error_naming_the_variable(variable: str, raw: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"WALLET_HTTP_HOST": "0.0.0.0", variable: raw})
    assert variable in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_from_env_without_argument_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WALLET_PARTITIONS", "12")
    monkeypatch.setenv("WALLET_REGISTRY_LOCAL", "off")
    settings = Settings.from_env()
    assert (settings.partitions, settings.registry_local) == (12, False)


def test_to_env_gives_back_the_same_settings_through_from_env() -> None:
    settings = Settings(
        kafka_bootstrap="broker:19092", registry_local=False, partitions=16, sink_retry_backoff_max_s=0.125,
        state_dir=Path("/srv/wallet/state"), api_keys="k1=admin", mysql_replica_dsn="mysql+aiomysql://r@replica/w",
    )
    env = settings.to_env()
    assert env["WALLET_REGISTRY_LOCAL"] == "0"
    assert set(env) == {f"WALLET_{field.name.upper()}" for field in dataclasses.fields(Settings)}
    assert Settings.from_env(env) == settings


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().partitions = 8  # type: ignore[misc]


def test_default_ports_are_derived_from_the_default_urls() -> None:
    settings = Settings()
    assert (settings.kafka_port, settings.registry_port, settings.mysql_port, settings.redis_port) == (
        9092, 8081, 3306, 6379)


@pytest.mark.parametrize(
    ("variable", "url", "port_of"),
    [
        ("WALLET_KAFKA_BOOTSTRAP", "kafka.internal:19092", "kafka_port"),
        ("WALLET_REGISTRY_URL", "http://registry.internal:18081/apis/ccompat/v7", "registry_port"),
        ("WALLET_REGISTRY_URL", "http://127.0.0.1:18081", "registry_port"),
        ("WALLET_MYSQL_DSN", "mysql+aiomysql://wallet:pw@db.internal:13306/wallet", "mysql_port"),
        ("WALLET_MYSQL_DSN", "mysql+aiomysql://db.internal:13306/wallet", "mysql_port"),
        ("WALLET_REDIS_URL", "redis://cache.internal:16379/0", "redis_port"),
        ("WALLET_REDIS_URL", "redis://:secret@cache.internal:16379/0", "redis_port"),
    ],
)
def test_port_is_derived_from_an_url_with_an_explicit_port(variable: str, url: str, port_of: str) -> None:
    port = getattr(Settings.from_env({variable: url}), port_of)
    assert port == int(url.split(":")[-1].split("/")[0])


@pytest.mark.parametrize(
    ("variable", "url", "port_of", "port"),
    [
        ("WALLET_MYSQL_DSN", "mysql+aiomysql://wallet:pw@db.internal/wallet", "mysql_port", 3306),
        ("WALLET_MYSQL_DSN", "mysql+aiomysql://db.internal/wallet", "mysql_port", 3306),
        ("WALLET_REDIS_URL", "redis://cache.internal/0", "redis_port", 6379),
        ("WALLET_REDIS_URL", "redis://:secret@cache.internal/0", "redis_port", 6379),
    ],
)
def test_store_port_defaults_to_the_protocol_port_when_the_url_has_none(variable: str, url: str, port_of: str,
                                                                        port: int) -> None:
    assert getattr(Settings.from_env({variable: url}), port_of) == port


def test_password_with_a_colon_does_not_become_the_mysql_port() -> None:
    settings = Settings.from_env({"WALLET_MYSQL_DSN": "mysql+aiomysql://wallet:p:4444@db.internal:13306/wallet"})
    assert settings.mysql_port == 13306


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_processing_guarantee_takes_its_two_documented_values(guarantee: str) -> None:
    assert Settings.from_env({"WALLET_PROCESSING_GUARANTEE": guarantee}).processing_guarantee == guarantee


@pytest.mark.parametrize("raw", ["exactly-once", "EXACTLY_ONCE", "exactly_once ", "eos"])
def test_unknown_processing_guarantee_raises_settings_error_naming_the_variable(raw: str) -> None:
    with pytest.raises(SettingsError, match="WALLET_PROCESSING_GUARANTEE"):
        Settings.from_env({"WALLET_PROCESSING_GUARANTEE": raw})


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_event_loop_takes_its_two_documented_values(loop: str) -> None:
    assert Settings.from_env({"WALLET_EVENT_LOOP": loop}).event_loop == loop


@pytest.mark.parametrize("raw", ["UVLOOP", "libuv", "", "trio"])
def test_unknown_event_loop_raises_settings_error_naming_the_variable(raw: str) -> None:
    with pytest.raises(SettingsError, match="WALLET_EVENT_LOOP"):
        Settings.from_env({"WALLET_EVENT_LOOP": raw})


@pytest.mark.parametrize("variable", ["WALLET_PROCESSOR_BATCH_FILL_MS", "WALLET_COMMAND_PUBLISH_LINGER_MS"])
def test_a_wait_that_may_be_zero_is_accepted_at_zero_and_refused_below(variable: str) -> None:
    assert getattr(Settings.from_env({variable: "0"}), variable.removeprefix("WALLET_").lower()) == 0
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: "-1"})


def test_heartbeat_interval_at_or_above_the_session_timeout_is_refused() -> None:
    assert Settings().processor_heartbeat_interval_ms < Settings().processor_session_timeout_ms
    with pytest.raises(SettingsError, match="WALLET_PROCESSOR_HEARTBEAT_INTERVAL_MS"):
        Settings.from_env({"WALLET_PROCESSOR_HEARTBEAT_INTERVAL_MS": "6000"})
    assert Settings.from_env({"WALLET_PROCESSOR_HEARTBEAT_INTERVAL_MS": "5999"}).processor_heartbeat_interval_ms == 5999
