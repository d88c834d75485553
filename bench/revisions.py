"""A benchmark of this checkout against the same benchmark of another revision, in the same run:
`python -m bench.revisions --against REV [--bench processor|http] [--rounds N] [--json] [-- bench options]`.

Absolute figures on this machine move 2x from one day to the next (docs/BENCHMARKS.md), so "as fast as on the
day X" can only be answered by running X's code beside ours. REV is checked out in a scratch git worktree
(its compiled modules built there when it has any, so it runs as its own install would), and its
`bench <name> --json` alternates with this checkout's, round by round; each run is its own process tree. The
revision's code runs in this checkout's environment (.venv: its packages, and Cython to build the revision's
compiled modules), its bench with its own command: `wallet.cli` where it has one, else `app.cli` (before
2026-11-29), and, for the processor, `--no-faust` where it has a Faust baseline (skipped in both: it measures
Faust, not us). Printed: the bench's figures (FIGURES) per round for both, and ratio = ours / theirs of the
medians of the first figure (commands/s; balance GETs/s). Benches of revisions before 2026-11-29 do not keep
to their own namespace (docs/BENCHMARKS.md, "Isolation"): `bench http` of such a revision writes its wallets
into the live read model of the stack it runs on.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from app.compiled import DIGEST_SUFFIX, recorded_digest, source_digest
from app.settings import REPO_ROOT

# How long one run of a bench may take before the comparison gives up.
RUN_TIMEOUT_S = 1200
# The figures compared, per bench; the ratio is taken of the first one every run reported (a `bench http` with
# `--read-seconds 0` measures no GETs, with `--no-commands` no deposits). The deposit latencies of `bench http`
# before 2026-11-29 (second session) were measured with a load generator that took 0.5 cores of the 2.
FIGURES = {
    "processor": ("commands_per_s", "outcomes_per_s", "raw_loop_per_s", "latency_p50_ms", "latency_p99_ms"),
    "http": ("balance_get_per_s", "balance_p99_ms", "balance_web_cpu_us_per_request", "command_p50_ms",
             "command_p99_ms", "command_completed_per_s"),
}


def _git(*args: str, cwd: Path = REPO_ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def bench_command(checkout: Path, bench: str, options: list[str]) -> list[str]:
    """The command line that runs `bench <bench> --json` as the code at `checkout` spells it."""
    cli = "wallet.cli" if (checkout / "wallet" / "cli.py").exists() else "app.cli"
    processor_bench = (checkout / "bench" / "processor_bench.py").read_text()
    no_faust = ["--no-faust"] if bench == "processor" and "--no-faust" in processor_bench else []
    return [sys.executable, "-m", cli, "bench", bench, "--json", *no_faust, *options]


def run_bench(checkout: Path, bench: str, options: list[str]) -> dict:
    """One `bench <bench>` run of the code at `checkout` (on its own PYTHONPATH); its JSON result."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    done = subprocess.run(bench_command(checkout, bench, options), cwd=checkout, env=env, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines or not lines[-1].startswith("{"):
        raise RuntimeError(f"bench {bench} at {checkout} failed ({done.returncode}): "
                           f"{(done.stderr or done.stdout)[-2000:]}")
    return json.loads(lines[-1])


def _reuse_builds(checkout: Path) -> bool:
    """Copy this checkout's compiled builds into `checkout` where they were built from the very source it has
    (the digest setup.py records); whether that covered every module `checkout` compiles."""
    copies = []
    for pxd in sorted((checkout / "app").glob("*.pxd")):
        source = pxd.with_suffix(".py")
        ours = sorted((REPO_ROOT / "app").glob(f"{source.stem}.*.so"))
        if not ours or recorded_digest(ours[0]) != source_digest(source):
            return False
        copies.append(ours[0])
    for built in copies:
        for path in (built, Path(f"{built}{DIGEST_SUFFIX}")):
            shutil.copy2(path, checkout / "app" / path.name)
    return True


def resolve(rev: str) -> str:
    """The commit `rev` names (full hash); ValueError for what names none, or looks like an option to git."""
    if rev.startswith("-"):
        raise ValueError(f"{rev!r} is not a revision")
    try:
        return _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except subprocess.CalledProcessError:
        raise ValueError(f"{rev!r} names no commit of {REPO_ROOT}") from None


def checkout_of(rev: str, root: Path, reuse_builds: bool = True) -> Path:
    """A detached worktree of commit `rev` under `root`, with its compiled modules built when it has any (copied
    from this checkout when built from the same source and `reuse_builds`; a build takes 10-20 s here)."""
    path = root / "baseline"
    _git("worktree", "add", "--detach", str(path), resolve(rev))
    if (path / "setup.py").exists() and not (reuse_builds and _reuse_builds(path)):
        subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=path, check=True,
                       capture_output=True)
    return path


def compare(rev: str, bench: str, rounds: int, options: list[str]) -> dict:
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")
    rev = resolve(rev)
    root = Path(tempfile.mkdtemp(prefix="bench-revisions-"))
    try:
        baseline = checkout_of(rev, root)
        theirs, ours = [], []
        for _ in range(rounds):
            theirs.append(run_bench(baseline, bench, options))
            ours.append(run_bench(REPO_ROOT, bench, options))
    finally:
        if (root / "baseline").exists():
            _git("worktree", "remove", "--force", str(root / "baseline"))
        shutil.rmtree(root, ignore_errors=True)
    return summarise(bench, _git("rev-parse", "--short", rev), _git("describe", "--always", "--dirty"), theirs, ours)


def summarise(bench: str, against: str, here: str, theirs: list[dict], ours: list[dict]) -> dict:
    """The figures of both sides' runs, and the ratio of the medians (here / against) of the headline: the
    first figure of FIGURES[bench] every run reported (None when none did)."""
    figures = FIGURES[bench]
    result = {"bench": bench, "mode": ours[0]["mode"], "against": against, "here": here, "rounds": len(ours),
              "theirs": {key: [run.get(key) for run in theirs] for key in figures},
              "ours": {key: [run.get(key) for run in ours] for key in figures}}
    reported = [key for key in figures if None not in result["ours"][key] + result["theirs"][key]]
    result["headline"] = reported[0] if reported else None
    result["ratio"] = (statistics.median(result["ours"][reported[0]]) / statistics.median(result["theirs"][reported[0]])
                       if reported else None)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.revisions")
    parser.add_argument("--against", required=True, help="the revision to compare with (any git revision)")
    parser.add_argument("--bench", choices=sorted(FIGURES), default="processor", help="which `wallet bench`")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each, alternating (at least 1)")
    parser.add_argument("--json", action="store_true", help="one JSON line instead of text")
    parser.add_argument("options", nargs="*", help="after --: options for both benches (e.g. --hot, --commands)")
    args = parser.parse_args()
    try:
        result = compare(args.against, args.bench, args.rounds, args.options)
    except ValueError as refused:
        parser.error(str(refused))
    if args.json:
        print(json.dumps(result))
        return
    print(f"bench {result['bench']} ({result['mode']}): {result['here']} (here) against {result['against']}")
    for key in FIGURES[args.bench]:
        for side, name in (("theirs", result["against"]), ("ours", "here")):
            values = ", ".join("-" if value is None else f"{value:,.1f}" for value in result[side][key])
            print(f"  {key:32} {name:>12}  {values}")
    if result["headline"] is not None:
        print(f"  ratio of the medians of {result['headline']}, here / {result['against']}: {result['ratio']:.2f}")


if __name__ == "__main__":
    main()
