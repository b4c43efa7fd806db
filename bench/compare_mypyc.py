"""Pure Python against the opt-in mypyc build, interleaved in one run (figures only).

Builds the compiled variant in a copy of this repository (what ``EDGE_GATEWAY_MYPYC=1
pip install .`` compiles, built in place there), then runs the same benchmarks alternately
from both trees, pure first in even rounds and compiled first in odd ones, so that a change in
the machine's load hits both about equally; prints the medians and the ratios.

    python bench/compare_mypyc.py                  # codec, topic tree, broker core: 3 rounds
    python bench/compare_mypyc.py --e2e            # also bench_broker.py --no-mosquitto
    python bench/compare_mypyc.py --tree DIR       # reuse a tree kept with --keep-tree

End to end, only the gateway runs from the compiled tree (bench_broker.py --gateway-tree): the
load generator, which uses the same codec, stays pure Python in both runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TREES = ("pure", "compiled")
E2E_WORKLOADS = "qos0-fanin,qos1-clean,offline"

CODEC_LINE = re.compile(r"^(?P<name>\S.*?)\s+(?P<rate>[\d,]+) /s$")
# bench_broker_core.py (msgs/s, µs/msg) and bench_topic_tree.py (ops/s, µs/op).
PER_OP_LINE = re.compile(
    r"^(?P<name>\S.*?)\s+[\d,]+ (?:msgs|ops)/s\s+\(\s*(?P<us>[\d.]+) µs/(?:msg|op)\)$"
)


def build_compiled_tree(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info", "build")
    for name in ("gateway", "devices", "build_support", "bench"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    start = time.monotonic()
    subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=dest,
        env=dict(os.environ, EDGE_GATEWAY_MYPYC="1"),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    print(f"compiled in {time.monotonic() - start:.0f} s: {dest}")


def run_bench(tree: Path, kind: str, script: str, args: list[str]) -> str:
    out = subprocess.run(
        [sys.executable, str(tree / "bench" / script), *args],
        cwd=tree,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    build = next((ln for ln in out.splitlines() if ln.startswith("# gateway build:")), "")
    # Guards against comparing a tree with itself (e.g. a --tree that was never compiled).
    if ("mypyc-compiled" in build) != (kind == "compiled"):
        raise SystemExit(f"{script} in {tree} ran the wrong build: {build!r}")
    return out


def micro_round(trees: dict[str, Path], kind: str, args: argparse.Namespace) -> dict[str, float]:
    """µs per operation of every line of bench_codec, bench_topic_tree, bench_broker_core."""
    found: dict[str, float] = {}
    codec = run_bench(trees[kind], kind, "bench_codec.py", [str(args.seconds)])
    for line in codec.splitlines():
        if m := CODEC_LINE.match(line):
            found[f"codec: {m['name']}"] = 1e6 / float(m["rate"].replace(",", ""))
    for label, script, script_args in (
        ("tree", "bench_topic_tree.py", []),
        ("core", "bench_broker_core.py", ["--messages", str(args.core_messages)]),
    ):
        for line in run_bench(trees[kind], kind, script, script_args).splitlines():
            if m := PER_OP_LINE.match(line):
                found[f"{label}: {m['name']}"] = float(m["us"])
    return found


def e2e_round(trees: dict[str, Path], kind: str, args: argparse.Namespace) -> dict[str, float]:
    """msgs/s and broker CPU µs/msg per workload of bench_broker.py (gateway only)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        argv = [sys.executable, str(REPO / "bench" / "bench_broker.py"), "--no-mosquitto"]
        argv += ["--workloads", E2E_WORKLOADS, "--json", str(out)]
        argv += ["--gateway-tree", str(trees[kind]), *args.e2e_args]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        rows = json.loads(out.read_text())
    found: dict[str, float] = {}
    for row in rows:
        found[f"e2e: {row['workload']} msgs/s"] = float(row["rate"])
        found[f"e2e: {row['workload']} broker CPU µs/msg"] = float(row["broker_cpu_us_per_msg"])
        found[f"e2e: {row['workload']} host cores busy"] = float(row["host_cores_busy"])
    return found


def report(results: dict[str, dict[str, list[float]]]) -> None:
    """Best of the rounds (the least disturbed run) and the median's ratio beside it."""
    print(f"{'benchmark':<58} {'pure best':>10} {'compiled':>10} {'speed-up':>9} {'median':>7}")
    for name, pure_runs in results["pure"].items():
        compiled_runs = results["compiled"].get(name) or [float("nan")]
        if name.endswith("busy"):
            # How loaded the machine was during each run: the means, no ratio.
            pure, compiled = statistics.mean(pure_runs), statistics.mean(compiled_runs)
            print(f"{name:<58} {pure:>10,.2f} {compiled:>10,.2f}")
            continue
        higher_is_better = name.endswith("msgs/s")
        best = max if higher_is_better else min
        pure, compiled = best(pure_runs), best(compiled_runs)
        pure_med, compiled_med = statistics.median(pure_runs), statistics.median(compiled_runs)
        if higher_is_better:
            ratio, ratio_med = compiled / pure, compiled_med / pure_med
        else:
            ratio, ratio_med = pure / compiled, pure_med / compiled_med
        unit = "" if name.startswith("e2e") else " µs"
        print(
            f"{name:<58} {pure:>10,.2f} {compiled:>10,.2f} {ratio:>8.2f}x {ratio_med:>6.2f}x" + unit
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="runs of each benchmark per tree")
    p.add_argument("--seconds", type=float, default=0.5, help="bench_codec.py seconds per case")
    p.add_argument("--core-messages", type=int, default=100_000, help="bench_broker_core.py")
    p.add_argument("--e2e", action="store_true", help=f"also bench_broker.py: {E2E_WORKLOADS}")
    p.add_argument(
        "--e2e-args",
        nargs=argparse.REMAINDER,
        default=[],
        help="the rest of the command line goes to bench_broker.py (e.g. --quick)",
    )
    p.add_argument("--no-micro", action="store_true", help="skip codec and broker core")
    p.add_argument("--tree", type=Path, help="an already compiled tree (from --keep-tree)")
    p.add_argument("--keep-tree", action="store_true", help="keep the compiled tree")
    args = p.parse_args()

    workdir: Path | None = None
    compiled: Path = args.tree
    if compiled is None:
        compiled = workdir = Path(tempfile.mkdtemp(prefix="mypyc-tree-"))
        build_compiled_tree(workdir)
    trees = {"pure": REPO, "compiled": compiled}
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    results: dict[str, dict[str, list[float]]] = {k: defaultdict(list) for k in TREES}
    try:
        for r in range(args.rounds):
            for kind in TREES if r % 2 == 0 else TREES[::-1]:
                found: dict[str, float] = {}
                if not args.no_micro:
                    found.update(micro_round(trees, kind, args))
                if args.e2e:
                    found.update(e2e_round(trees, kind, args))
                for name, value in found.items():
                    results[kind][name].append(value)
                print(f"round {r + 1}/{args.rounds} {kind}: {len(found)} figures", flush=True)
    finally:
        if workdir is not None and not args.keep_tree:
            shutil.rmtree(workdir, ignore_errors=True)
        elif workdir is not None:
            print(f"compiled tree kept: {workdir} (reuse with --tree)")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
