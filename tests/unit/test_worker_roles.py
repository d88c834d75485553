"""Failure domains: `make run` runs each role in a process of its own, every process on a port of its own, and
the sink DLQ is listed but never re-driven (no services)."""

from __future__ import annotations

import io
from contextlib import redirect_stderr

from app.settings import Settings
from wallet import dlq
from wallet.cli import run_processes
from wallet.worker import ROLES, view_port


def _roles(argv: list[str]) -> set[str]:
    return {argv[index + 1] for index, part in enumerate(argv) if part == "--role"}


def test_make_run_gives_the_processor_the_sinks_and_the_web_each_a_process_of_their_own() -> None:
    processes = run_processes(Settings(processor_workers=3))
    assert [_roles(argv) for argv in processes] == [{"processor"}] * 3 + [{"sinks"}, {"web"}]
    assert set().union(*map(_roles, processes)) == set(ROLES)
    slots = [argv[argv.index("--instance") + 1] for argv in processes if "--instance" in argv]
    assert slots == ["0", "1", "2"]


def test_processor_slots_and_sinks_serve_metrics_on_ports_of_their_own() -> None:
    settings = Settings()
    processors = {view_port(settings, {"processor"}, slot) for slot in range(10)}
    sinks = {view_port(settings, {"sinks"}, slot) for slot in range(3)}
    assert len(processors) == 10 and len(sinks) == 3 and not processors & sinks
    assert view_port(settings, {"sinks"}, 0) == settings.sinks_web_port
    # A process that runs the processor (with or without the sinks) keeps the processor's port.
    assert view_port(settings, {"processor", "sinks"}, 1) == settings.worker_web_port + 1


def test_the_sink_dlq_is_never_replayed_into_the_event_log() -> None:
    err = io.StringIO()
    with redirect_stderr(err):
        assert dlq.main(Settings(kafka_bootstrap="127.0.0.1:1"), "replay", sink=True) == 2
    assert "listed only" in err.getvalue()


def test_member_slots_are_claimed_once_each_and_a_released_slot_is_taken_again(tmp_path):
    # Replicas sharing one state volume (compose --scale) name themselves after the first free slot, so a
    # replacement takes over a warm store folder; two live workers never share one.
    from wallet.worker import claim_member_slot

    first_name, first = claim_member_slot(tmp_path)
    second_name, second = claim_member_slot(tmp_path)
    assert (first_name, second_name) == ("slot-0", "slot-1")
    first.close()  # the worker ended (the kernel releases the lock of a killed process the same way)
    third_name, third = claim_member_slot(tmp_path)
    assert third_name == "slot-0"
    assert claim_member_slot(tmp_path)[0] == "slot-2"
    second.close()
    third.close()


def test_a_worker_runs_on_the_standard_loop_unless_settings_ask_for_uvloop() -> None:
    import asyncio

    import uvloop

    from wallet.worker import event_loop_factory

    with asyncio.Runner(loop_factory=event_loop_factory(Settings())) as runner:
        assert not isinstance(runner.get_loop(), uvloop.Loop)
    with asyncio.Runner(loop_factory=event_loop_factory(Settings(event_loop="uvloop"))) as runner:
        assert isinstance(runner.get_loop(), uvloop.Loop)
