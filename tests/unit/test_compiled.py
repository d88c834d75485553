"""The compiled builds (setup.py: the Avro reader and writer, murmur2): loaded, and built from their source.

A module with a `.pxd` beside it is compiled by `pip install -e .` (which `make` runs whenever one of those files
changes). Python prefers the extension to the `.py`, so an extension built from other source would run code that
is no longer in the repository: these tests fail then, and say how to rebuild. They compare the digest setup.py
records beside each build with the source's, not file times, so a checkout that leaves the source as it was
built (a branch switched back and forth) is not taken for a change. The same source also runs
interpreted where no compiler is found; `interpreted()` (bench/codec_bench.py, which times the two forms) loads
that form, and the reader's and writer's tests run against both (tests/unit/test_avro_reader.py,
test_avro_writer.py)."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import pytest

from app import metrics
from app.compiled import COMPILED_MODULES, recorded_digest, source_digest
from bench import codec_bench
from bench.codec_bench import interpreted
from wallet import worker

ROOT = Path(__file__).resolve().parents[2]
COMPILED = sorted(".".join(path.relative_to(ROOT).with_suffix("").parts) for path in ROOT.glob("app/*.pxd"))


def _source(name: str) -> Path:
    return ROOT.joinpath(*name.split(".")).with_suffix(".py")


def test_the_compiled_modules_are_the_avro_reader_and_writer_and_murmur2() -> None:
    assert COMPILED == ["app.avro_reader", "app.avro_writer", "app.murmur2"]


@pytest.mark.parametrize("name", COMPILED)
def test_the_compiled_build_is_what_runs_and_it_is_built_from_the_current_source(name: str) -> None:
    module = importlib.import_module(name)
    built = Path(module.__file__)
    assert built.suffix == ".so", (f"{name} runs interpreted from {built}: no compiled build (a C compiler and "
                                   f"`pip install -e .`, which `make` runs, build it)")
    recorded = recorded_digest(built)
    assert recorded is not None, f"{built.name} has no record of its source: rebuild with `.venv/bin/pip install -e .`"
    assert recorded == source_digest(_source(name)), (
        f"{built.name} was built from another {name} than this checkout's: rebuild with "
        f"`.venv/bin/pip install -e .` (`make test` does it when the source changed)")


@pytest.mark.parametrize("name", COMPILED)
def test_the_interpreted_form_is_the_same_source_run_by_python(name: str) -> None:
    assert interpreted(name).__file__ == str(_source(name))


def test_the_codec_bench_times_both_forms_on_the_same_bytes() -> None:
    """bench/codec_bench.py: both forms write the same bytes (it fails otherwise) and each op has both figures."""
    result = codec_bench.run(count=300, wallets=60, rounds=1)
    assert result["compiled"] == {"app.avro_reader": True, "app.avro_writer": True}
    assert result["events"] >= result["commands"] > 300
    for op in ("event_encode", "event_decode", "command_encode", "command_decode"):
        assert result[f"{op}_us"] > 0 and result[f"{op}_source_us"] > 0


def test_the_runtime_list_is_what_setup_py_compiles() -> None:
    """app/compiled.py names the modules a worker reports on; setup.py compiles those with a `.pxd` (the glob
    above), which an installed package no longer carries."""
    assert list(COMPILED_MODULES) == COMPILED


def test_a_worker_exports_each_module_as_compiled_here(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="wallet.worker"):
        worker.report_compiled()
    assert {name: metrics.compiled_module.labels(name)._value.get() for name in COMPILED_MODULES} == {
        name: 1 for name in COMPILED_MODULES}
    assert not caplog.records


def test_a_worker_warns_of_a_module_that_runs_interpreted(monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(worker, "compiled_modules", lambda: {"app.murmur2": False, "app.avro_reader": True})
    try:
        with caplog.at_level(logging.WARNING, logger="wallet.worker"):
            worker.report_compiled()
        assert metrics.compiled_module.labels("app.murmur2")._value.get() == 0
        assert [record.python_module for record in caplog.records] == ["app.murmur2"]
    finally:
        monkeypatch.undo()
        worker.report_compiled()  # the truth again, for whatever runs next in this process


def test_the_two_builds_the_codec_tests_compare_are_the_loaded_modules_and_their_interpreted_source() -> None:
    """bench/codec_bench.py `codecs`: the reader's and writer's tests rely on it to run both forms."""
    for build, suffix in (("loaded", ""), ("source", "__interpreted")):
        for codec in codec_bench.codecs(build):
            for fast_path, module in ((codec._own_reader, "app.avro_reader"), (codec._own_writer, "app.avro_writer")):
                assert fast_path is not None and type(fast_path).__module__ == module + suffix
