"""bench/revisions.py's summary of two revisions' runs: the ratio is of the first figure every run reported."""

from __future__ import annotations

from bench.revisions import summarise


def _http_run(**figures) -> dict:
    return {"mode": "1000 wallets", **figures}


def test_deposits_only_runs_take_the_ratio_of_the_deposit_p50() -> None:
    theirs = [_http_run(command_p50_ms=300.0, command_p99_ms=900.0), _http_run(command_p50_ms=500.0)]
    ours = [_http_run(command_p50_ms=200.0, command_p99_ms=400.0), _http_run(command_p50_ms=100.0)]
    result = summarise("http", "abc1234", "def5678", theirs, ours)
    assert result["headline"] == "command_p50_ms"
    assert result["ratio"] == 150.0 / 400.0
    assert result["theirs"]["balance_get_per_s"] == [None, None]
    assert result["rounds"] == 2


def test_runs_with_gets_take_the_ratio_of_gets_per_second() -> None:
    result = summarise("http", "a", "b", [_http_run(balance_get_per_s=2000.0, command_p50_ms=1.0)],
                       [_http_run(balance_get_per_s=3000.0)])
    assert (result["headline"], result["ratio"]) == ("balance_get_per_s", 1.5)


def test_no_figure_reported_by_every_run_gives_no_ratio() -> None:
    result = summarise("http", "a", "b", [_http_run(balance_get_per_s=1.0)], [_http_run(command_p50_ms=1.0)])
    assert (result["headline"], result["ratio"]) == (None, None)
