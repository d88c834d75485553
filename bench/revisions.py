"""This checkout's processor against another revision's, in the same run:
`python -m bench.revisions --against REV [--hot] [--rounds N] [--json] [-- options of the processor bench]`.

Absolute figures on this machine move 2x from one day to the next (docs/BENCHMARKS.md), so "as fast as on the
day X" can only be answered by running X's code beside ours. REV is checked out in a scratch git worktree
(its compiled modules built there when it has any, so it runs as its own install would), and its
`bench processor --json` alternates with this checkout's, round by round; each run is its own process tree in
a namespace of its own. A revision's bench is run with its own command: `wallet.cli` where it has one, else
`app.cli` (before 2026-11-29), and `--no-faust` where it has a Faust baseline (skipped in both: it measures
Faust, not us). Printed: both figures per round, their medians, and ratio = ours / theirs (commands/s).
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

# How long one run of the processor bench may take before the comparison gives up.
RUN_TIMEOUT_S = 1200


def _git(*args: str, cwd: Path = REPO_ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def bench_command(checkout: Path, options: list[str]) -> list[str]:
    """The command line that runs `bench processor --json` as the code at `checkout` spells it."""
    cli = "wallet.cli" if (checkout / "wallet" / "cli.py").exists() else "app.cli"
    bench_source = (checkout / "bench" / "processor_bench.py").read_text()
    no_faust = ["--no-faust"] if "--no-faust" in bench_source else []
    return [sys.executable, "-m", cli, "bench", "processor", "--json", *no_faust, *options]


def run_bench(checkout: Path, options: list[str]) -> dict:
    """One `bench processor` run of the code at `checkout` (on its own PYTHONPATH); its JSON result."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    done = subprocess.run(bench_command(checkout, options), cwd=checkout, env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines or not lines[-1].startswith("{"):
        raise RuntimeError(f"bench processor at {checkout} failed ({done.returncode}): "
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


def checkout_of(rev: str, root: Path) -> Path:
    """A detached worktree of `rev` under `root`, with its compiled modules built when it has any (copied from
    this checkout when built from the same source: a build takes about a minute here)."""
    path = root / "baseline"
    _git("worktree", "add", "--detach", str(path), rev)
    if (path / "setup.py").exists() and not _reuse_builds(path):
        subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=path, check=True,
                       capture_output=True)
    return path


def compare(rev: str, rounds: int, options: list[str]) -> dict:
    root = Path(tempfile.mkdtemp(prefix="bench-revisions-"))
    try:
        baseline = checkout_of(rev, root)
        theirs, ours = [], []
        for _ in range(rounds):
            theirs.append(run_bench(baseline, options))
            ours.append(run_bench(REPO_ROOT, options))
    finally:
        if (root / "baseline").exists():
            _git("worktree", "remove", "--force", str(root / "baseline"))
        shutil.rmtree(root, ignore_errors=True)
    theirs_per_s = [run["commands_per_s"] for run in theirs]
    ours_per_s = [run["commands_per_s"] for run in ours]
    return {"mode": ours[0]["mode"], "against": _git("rev-parse", "--short", rev),
            "here": _git("describe", "--always", "--dirty"), "rounds": rounds, "theirs_commands_per_s": theirs_per_s, "ours_commands_per_s": ours_per_s,
            "theirs_raw_loop_per_s": [run["raw_loop_per_s"] for run in theirs],
            "ours_raw_loop_per_s": [run["raw_loop_per_s"] for run in ours],
            "ratio": statistics.median(ours_per_s) / statistics.median(theirs_per_s)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.revisions")
    parser.add_argument("--against", required=True, help="the revision to compare with (any git revision)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each, alternating")
    parser.add_argument("--hot", action="store_true", help="the processor bench's --hot workload")
    parser.add_argument("--json", action="store_true", help="one JSON line instead of text")
    parser.add_argument("options", nargs="*", help="after --: more options for both benches (e.g. --commands)")
    args = parser.parse_args()
    result = compare(args.against, args.rounds, (["--hot"] if args.hot else []) + args.options)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['mode']}: {result['here']} (here) against {result['against']}, {result['rounds']} rounds")
    for theirs, ours in zip(result["theirs_commands_per_s"], result["ours_commands_per_s"]):
        print(f"  {result['against']} {theirs:,.0f} commands/s   here {ours:,.0f} commands/s")
    print(f"  ratio (medians, here / {result['against']}): {result['ratio']:.2f}")


if __name__ == "__main__":
    main()
