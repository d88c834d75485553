"""bench/revisions.py: another revision's processor bench, run beside this checkout's in the same run."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.compiled import recorded_digest, source_digest
from bench import revisions

# The smallest run of `bench processor` that drains a backlog and measures a latency: a few seconds each.
TINY = ["--commands", "400", "--wallets", "40", "--instances", "1", "--latency-rate", "100",
        "--latency-seconds", "1"]


def _worktrees() -> str:
    return revisions._git("worktree", "list")


def test_a_revision_and_this_checkout_each_drain_the_backlog_and_the_scratch_worktree_goes(stack) -> None:
    result = revisions.compare("HEAD", "processor", 1, TINY)
    assert result["rounds"] == 1 and result["bench"] == "processor"
    (theirs,), (ours,) = result["theirs"]["commands_per_s"], result["ours"]["commands_per_s"]
    assert theirs > 0 and ours > 0 and result["ratio"] == ours / theirs
    assert set(result["ours"]) == set(revisions.FIGURES["processor"]) and result["ours"]["raw_loop_per_s"][0] > 0
    assert result["mode"].startswith("uniform, exactly_once, 1 processor process(es)")
    assert "bench-revisions-" not in _worktrees()


@pytest.mark.parametrize("reuse", [True, False], ids=["copied", "built"])
def test_the_baseline_runs_its_own_source_compiled(tmp_path: Path, reuse: bool) -> None:
    """Copied from this checkout when built from the same source, built in the worktree otherwise (with this
    environment's Cython: a revision whose codec differs): either way each compiled module of the revision is a
    build of the revision's own `.py` and `.pxd`."""
    checkout = revisions.checkout_of("HEAD", tmp_path, reuse_builds=reuse)
    try:
        pxds = sorted((checkout / "app").glob("*.pxd"))
        assert pxds
        for pxd in pxds:
            builds = list((checkout / "app").glob(f"{pxd.stem}.*.so"))
            assert len(builds) == 1
            assert recorded_digest(builds[0]) == source_digest(pxd.with_suffix(".py"))
    finally:
        revisions._git("worktree", "remove", "--force", str(checkout))
    assert str(checkout) not in _worktrees()


@pytest.mark.parametrize("rev", ["--help", "-b", "no-such-revision", "HEAD^{tree}", ""])
def test_what_names_no_commit_is_refused_before_anything_runs(rev: str) -> None:
    """An option-shaped or unknown revision is never handed to `git worktree add` (nor is a tree)."""
    before = _worktrees()
    with pytest.raises(ValueError):
        revisions.compare(rev, "processor", 1, TINY)
    assert _worktrees() == before


def test_no_rounds_is_refused() -> None:
    with pytest.raises(ValueError):
        revisions.compare("HEAD", "processor", 0, TINY)


def test_a_revision_before_the_wallet_package_runs_its_bench_through_app_cli(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "cli.py").write_text("")
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "processor_bench.py").write_text('parser.add_argument("--hot")\n')
    assert revisions.bench_command(tmp_path, "processor", ["--hot"])[1:] == [
        "-m", "app.cli", "bench", "processor", "--json", "--hot"]


def test_this_checkout_runs_its_benches_through_wallet_cli_and_the_processor_without_faust() -> None:
    assert revisions.bench_command(revisions.REPO_ROOT, "processor", [])[1:] == [
        "-m", "wallet.cli", "bench", "processor", "--json", "--no-faust"]
    assert revisions.bench_command(revisions.REPO_ROOT, "http", ["--wallets", "20"])[1:] == [
        "-m", "wallet.cli", "bench", "http", "--json", "--wallets", "20"]
