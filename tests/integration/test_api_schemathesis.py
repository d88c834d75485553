"""Schemathesis drives every operation of the served `/openapi.json` against a real worker (processor, sinks
and web on the real Kafka, registry, MariaDB and Redis): no 5xx, and every response is documented (status
code, content type, headers, body schema).

A few wallets, a transfer and a hold are made first, and generated ids and amounts are biased towards them
and towards valid amounts, so generated requests reach the success paths too, not only 400s and 404s.
"""

from __future__ import annotations

import json
import subprocess

import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.settings import Settings
from tests.conftest import prepare_topics
from tests.harness import WorkerProcess, http_json, isolated_settings, new_id, wait_for
from web.openapi import openapi_document

ADMIN_KEY = "test-admin"  # isolated_settings' admin key: every route is reachable
# 20 operations x this many generated cases: about 30 s with the worker's start, well under the 90 s budget.
EXAMPLES_PER_OPERATION = 25
# Writes wait at most this long for their outcome: bounds the slowest generated request (a 202 is documented).
COMMAND_WAIT_MS_MAX = 1000
# Every request is answered well inside this; a slower one is a failure, not a hang.
REQUEST_TIMEOUT_S = 10
SEED_TIMEOUT_S = 60
# After a failure, how long to wait for a worker that may be exiting, to report its error instead.
WORKER_EXIT_WAIT_S = 3
# Amounts valid in the seeded wallets (the generator's favourite, "0", is always refused).
SAMPLE_AMOUNTS = ["1", "2.50"]
# Body fields steered towards seeded values, by the key of those values.
_SEEDED_BODY_FIELDS = {"source_wallet_id": "wallet_id", "destination_wallet_id": "wallet_id", "amount": "amount"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


def _write(base: str, path: str, body: dict) -> dict:
    """POST with the admin key, waiting for the outcome; fail unless applied."""
    status, _, reply = http_json("POST", f"{base}{path}?wait_ms={COMMAND_WAIT_MS_MAX}", key=ADMIN_KEY, body=body)
    if status == 202:  # not applied within wait_ms (a cold processor): poll the command
        command_id = reply["command_id"]
        wait_for(lambda: http_json("GET", f"{base}/v1/commands/{command_id}", key=ADMIN_KEY)[2].get("status")
                 == "applied", SEED_TIMEOUT_S, f"command {command_id} to be applied")
        return reply
    assert status in (200, 201), f"seeding POST {path} answered {status}: {reply}"
    return reply


def _seed(base: str) -> dict[str, list[str]]:
    """Wallets with money, a transfer and an open hold; their ids by path parameter name."""
    eur, eur_too, jpy = new_id("st"), new_id("st"), new_id("st")
    for wallet_id, currency in ((eur, "EUR"), (eur_too, "EUR"), (jpy, "JPY")):
        _write(base, "/v1/wallets", {"wallet_id": wallet_id, "owner_id": "schemathesis", "currency": currency})
    deposit = _write(base, f"/v1/wallets/{eur}/deposits", {"amount": "500.00", "reference": "seed"})
    _write(base, f"/v1/wallets/{jpy}/deposits", {"amount": "5000"})
    transfer = _write(base, "/v1/transfers", {"source_wallet_id": eur, "destination_wallet_id": eur_too,
                                              "amount": "10.00"})
    hold = _write(base, f"/v1/wallets/{eur}/holds", {"amount": "20.00"})
    # The reads below come from the read models: wait until the sinks caught up with the seed.
    wait_for(lambda: http_json("GET", f"{base}/v1/transfers/{transfer['transfer_id']}", key=ADMIN_KEY)[0] == 200,
             SEED_TIMEOUT_S, "the seeded transfer to be readable")
    return {"wallet_id": [eur, eur_too, jpy], "transfer_id": [transfer["transfer_id"]],
            "command_id": [deposit["command_id"], transfer["command_id"]],
            "hold_id": [hold["hold_id"]]}


@pytest.fixture(scope="module")
def service(stack):
    settings = prepare_topics(isolated_settings(
        stack, "schemathesis", command_wait_ms_default=COMMAND_WAIT_MS_MAX, command_wait_ms_max=COMMAND_WAIT_MS_MAX,
        # The point here is the contract, not the limiter: 429 stays documented, but should not hide the routes.
        rate_limit_per_s=100_000, rate_limit_burst=100_000))
    worker = WorkerProcess(settings, ["processor", "sinks", "web"]).start()
    base = f"http://127.0.0.1:{settings.http_port}"
    wait_for(lambda: http_json("GET", f"{base}/readyz")[0] == 200, SEED_TIMEOUT_S, "the API to be ready")
    try:
        yield worker, base, _seed(base)
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def api_schema(service):
    """The served /openapi.json, with requests authenticated as admin and ids biased towards the seed."""
    _, base, seeded = service
    seeded = {**seeded, "amount": SAMPLE_AMOUNTS}
    config = schemathesis.Config.from_dict({
        "base-url": base,
        "headers": {"Authorization": f"Bearer {ADMIN_KEY}"},
        "request-timeout": REQUEST_TIMEOUT_S,
    })
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json", config=config, timeout=REQUEST_TIMEOUT_S)

    @schema.hook
    def flatmap_path_parameters(context, path_parameters):
        if not isinstance(path_parameters, dict):
            return st.just(path_parameters)
        return st.fixed_dictionaries({name: _seeded_or(seeded, name, value)
                                      for name, value in path_parameters.items()})

    @schema.hook
    def flatmap_body(context, body):
        if not isinstance(body, dict):
            return st.just(body)
        return st.fixed_dictionaries({name: _seeded_or(seeded, _SEEDED_BODY_FIELDS.get(name, ""), value)
                                      for name, value in body.items()})

    return schema


def _seeded_or(seeded: dict[str, list[str]], name: str, generated: object):
    """Mostly a seeded id (so the request reaches an existing resource), sometimes the generated value."""
    return st.sampled_from([*seeded[name], generated]) if name in seeded else st.just(generated)


def _documented_operations() -> list[tuple[str, str]]:
    paths = openapi_document(Settings())["paths"]
    return [(method, path) for path, item in paths.items() for method in item if method in ("get", "post")]


def _died(worker: WorkerProcess) -> str:
    """Why the worker exited: its last error records, each as message and exception line."""
    errors = []
    for line in worker.log_lines():
        if '"level": "CRITICAL"' in line or '"level": "ERROR"' in line:
            record = json.loads(line)
            errors.append(" ".join([record["msg"], *record.get("exc", "").strip().splitlines()[-1:]]))
    return f"the worker exited with {worker.proc.returncode}; its last errors:\n" + "\n".join(errors[-3:])


# Schemathesis' own pytest plugin (`from_fixture` + `parametrize`) breaks on pytest 9.2 (it sets
# `Node._nodeid`), so each operation is a plain test that runs Schemathesis' Hypothesis strategies itself.
@pytest.mark.parametrize(("method", "path"), _documented_operations(), ids=lambda value: value)
def test_operation_answers_as_documented_and_never_5xx(service, api_schema, method, path):
    worker = service[0]
    assert worker.alive(), _died(worker)
    operation = api_schema[path][method]
    has_inputs = bool(list(operation.iter_parameters())) or bool(operation.body)
    modes = [GenerationMode.POSITIVE, *([GenerationMode.NEGATIVE] if has_inputs else [])]
    cases = st.one_of(*(operation.as_strategy(generation_mode=mode) for mode in modes))

    # No shrinking: it would re-send requests for minutes; the failure report carries a curl line instead.
    # Health checks are about generation speed and filtering, which a real service's latency makes noisy.
    @hypothesis.settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                         phases=[hypothesis.Phase.generate], suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(case=cases)
    def answers_as_documented(case):
        case.call_and_validate(checks=CHECKS)

    try:
        answers_as_documented()
    except Exception as exc:
        try:  # a refused connection is often a worker on its way out: say why it died, not only that it did
            worker.proc.wait(WORKER_EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            raise exc from None
        raise AssertionError(_died(worker)) from exc
