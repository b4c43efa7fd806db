"""What the admin API's live updates cost the broker (issue 4: at most 5% of throughput).

The end-to-end workloads of bench_broker.py (same gateway subprocess, same load generator),
each run in three modes, in rotating order within each round so that drift on a shared
machine falls on every mode alike:

  off       admin_api: false (no admin service at all)
  idle      the admin service on (live publisher polling, lists computed and published when
            they change), nobody subscribed to its topics
  watched   as idle, plus a TUI-like watcher: a paho client in its own process, connected
            over an admin Unix socket, subscribed (QoS 0, as the TUI) to
            <prefix>/bridge/updates/#, <prefix>/bridge/events and <prefix>/bridge/status,
            counting what arrives

In every mode --idle-sessions (200) persistent sessions (clean_session=0, one QoS 1
subscription each, keep-alive 600) stay connected during the run so that the sessions list
the service computes is not trivial; they are there in all three modes so that the only
difference between the modes is the admin service.

Per workload and mode: msgs/s (median of the rounds), broker CPU per message (median), and
the cost of idle and watched relative to off (throughput lost, CPU per message added). Figures
only: nothing here asserts the target.

Run: python bench/bench_admin.py [--quick] [--rounds 5] [--idle-sessions 200]
     [--workloads qos0-fanin,qos1-clean] [any option of bench_broker.py, e.g. --messages N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_broker as bb
import loadgen

MODES = ("off", "idle", "watched")
WORKLOADS = ("qos0-fanin", "qos1-clean", "qos1-persistent")
DEFAULT_WORKLOADS = ("qos0-fanin", "qos1-clean")
PREFIX = "gw"  # the gateway's default topic_prefix; bench_broker's config keeps it
TARGET_PCT = 5.0


# ------------------------------------------------------------------------- helper processes


async def _hold_sessions(host: str, port: int, count: int, ready: Any, stop: Any) -> None:
    links: list[loadgen.Link] = []
    gate = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        async with gate:
            link, _ = await loadgen.Link.connect(
                host, port, f"bench-admin-idle-{i}", clean=False, keep_alive=600
            )
            await link.subscribe(f"bench/idle/{i}/set", 1)
            links.append(link)

    await asyncio.gather(*(one(i) for i in range(count)))
    ready.set()
    await asyncio.to_thread(stop.wait)
    for link in links:
        await link.disconnect()


def _sessions_entry(host: str, port: int, count: int, ready: Any, stop: Any) -> None:
    asyncio.run(_hold_sessions(host, port, count, ready, stop))


def _watcher_entry(
    socket_path: str, filters: list[str], ready: Any, stop: Any, results: Any
) -> None:
    """A paho client noting each live update (arrival time, topic, size); ready once the
    retained status came."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    seen: list[tuple[float, str, int]] = []
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-admin-watcher",
                         transport="unix")  # fmt: skip

    def on_message(c: Any, u: Any, message: Any) -> None:
        seen.append((time.monotonic(), message.topic, len(message.payload)))
        if message.topic == f"{PREFIX}/bridge/status":
            ready.set()

    client.on_message = on_message
    client.connect(socket_path, keepalive=60)
    client.subscribe([(topic_filter, 0) for topic_filter in filters])
    client.loop_start()
    stop.wait()
    client.disconnect()
    client.loop_stop()
    results.put((seen, time.process_time()))


@dataclass
class Extras:
    """What the watcher received while the block ran (messages and bytes per topic)."""

    seconds: float = 0.0
    watcher_cpu: float = 0.0  # seconds, the watcher process's whole life
    counts: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)


@contextlib.contextmanager
def extras(
    broker: bb.BrokerProcess, sessions: int, socket_path: str | None, watch: list[str]
) -> Iterator[Extras]:
    """Idle persistent sessions (and the watcher of `watch` if `socket_path`) for the time of
    the block."""
    # The watcher is ready once the retained status arrives: it always subscribes to it.
    filters = sorted({f"{PREFIX}/bridge/{suffix}" for suffix in [*watch, "status"]})
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    results: Any = ctx.Queue()
    ready_sessions, ready_watcher = ctx.Event(), ctx.Event()
    procs = [
        ctx.Process(
            target=_sessions_entry,
            args=(bb.HOST, broker.port, sessions, ready_sessions, stop),
            daemon=True,
        )
    ]
    if socket_path is not None:
        procs.append(
            ctx.Process(
                target=_watcher_entry,
                args=(socket_path, filters, ready_watcher, stop, results),
                daemon=True,
            )
        )
    else:
        ready_watcher.set()
    for proc in procs:
        proc.start()
    out = Extras()
    started = ended = 0.0
    try:
        for name, event in (("idle sessions", ready_sessions), ("watcher", ready_watcher)):
            if not event.wait(60):
                raise RuntimeError(f"{name} not ready:\n{broker.log_tail()}")
        # The same pause in every mode: start-up work (the sessions' commits, the admin
        # service's first lists) is done before the measured part.
        time.sleep(1.5)
        started = time.monotonic()
        yield out
        ended = time.monotonic()
        out.seconds = ended - started
    finally:
        stop.set()
        if socket_path is not None:
            with contextlib.suppress(Exception):
                seen, out.watcher_cpu = results.get(timeout=10)
                for at, topic, size in seen:
                    if started <= at <= ended:  # the monotonic clock is one for all processes
                        out.counts[topic] = out.counts.get(topic, 0) + 1
                        out.sizes[topic] = out.sizes.get(topic, 0) + size
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


# ------------------------------------------------------------------------- runs


@dataclass
class Run:
    workload: str
    mode: str
    row: bb.Row
    extras: Extras
    admin_share: float | None = None  # % of busy py-spy samples (--profile)

    @property
    def cpu_us(self) -> float:
        return self.row.broker_cpu / max(self.row.msgs, 1) * 1e6

    @property
    def complete(self) -> bool:
        return self.row.done == self.row.of


def start_broker(
    mode: str, workdir: Path, args: argparse.Namespace
) -> tuple[bb.BrokerProcess, str]:
    """A gateway as bench_broker starts it, plus an admin Unix socket for the watcher."""
    broker = bb.BrokerProcess("gateway", workdir, args)
    path = workdir / "gateway.yaml"
    config = json.loads(path.read_text())  # bench_broker writes JSON (which is YAML)
    socket_path = str(workdir / "admin.sock")
    config["listeners"].append(
        {"type": "unix", "name": "admin", "path": socket_path, "admin": True}
    )
    config["admin_api"] = mode != "off"
    path.write_text(json.dumps(config, indent=2))
    return broker.start(), socket_path


def run_one(workload: str, mode: str, workdir: Path, args: argparse.Namespace, label: str) -> Run:
    broker, socket_path = start_broker(mode, workdir, args)
    prof = bb.Profiler(args.profile / label) if args.profile is not None else None
    try:
        watcher = socket_path if mode == "watched" else None
        with extras(broker, args.idle_sessions, watcher, args.watch) as ex:
            (row,) = bb.RUNNERS[workload](broker, args, prof)
    finally:
        broker.stop()
    run = Run(workload, mode, row, ex)
    if prof is not None and prof.output is not None:
        run.admin_share = admin_share(prof.output)
    return run


# Frames of the admin service: its own code and the in-process MQTT client it talks through
# (no device sessions run in these workloads, so that client is the service's alone). What
# the broker does for the service's messages (routing them to the watcher) is not counted.
ADMIN_FRAMES = ("gateway/admin/", "gateway/client/mqtt.py")


def admin_share(path: Path) -> float | None:
    """Share of the gateway's busy samples (py-spy raw output) spent in the admin service."""
    total = admin = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        if any(frame in stack for frame in ADMIN_FRAMES):
            admin += int(count)
    return 100.0 * admin / total if total else None


def rotated(round_index: int) -> list[str]:
    k = round_index % len(MODES)
    return [*MODES[k:], *MODES[:k]]


# ------------------------------------------------------------------------- reporting


def _pct(value: float, base: float) -> float:
    return 100.0 * value / base if base else 0.0


def summary(runs: list[Run], workloads: list[str]) -> list[str]:
    profiled = any(r.admin_share is not None for r in runs)
    lines = [
        f"{'workload':<16} {'mode':<8} {'runs':>4} {'msgs/s':>10} {'CPU µs/msg':>10} "
        f"{'throughput cost':>15} {'CPU cost':>9} {'updates/s':>9}"
        + (f" {'admin % of samples':>18}" if profiled else "")
    ]
    for workload in workloads:
        med: dict[str, tuple[float, float]] = {}
        for mode in MODES:
            mine = [r for r in runs if r.workload == workload and r.mode == mode]
            if not mine:
                continue
            rate = statistics.median(r.row.rate for r in mine)
            cpu = statistics.median(r.cpu_us for r in mine)
            med[mode] = (rate, cpu)
            cost = cpu_cost = "-"
            if mode != "off" and "off" in med:
                base_rate, base_cpu = med["off"]
                cost = f"{_pct(base_rate - rate, base_rate):+.1f}%"
                cpu_cost = f"{_pct(cpu - base_cpu, base_cpu):+.1f}%"
            got = sum(sum(r.extras.counts.values()) for r in mine)
            secs = sum(r.extras.seconds for r in mine)
            updates = f"{got / secs:.1f}" if mode == "watched" and secs else "-"
            line = (
                f"{workload:<16} {mode:<8} {len(mine):>4} {rate:>10,.0f} {cpu:>10.2f} "
                f"{cost:>15} {cpu_cost:>9} {updates:>9}"
            )
            if profiled:
                shares = [r.admin_share for r in mine if r.admin_share is not None]
                line += f" {statistics.median(shares) if shares else 0.0:>18.2f}"
            lines.append(line)
    return lines


# ------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
        epilog="Other options are bench_broker.py's (--messages, --qos1-messages, --publishers, "
        "--set, ...).",
    )
    p.add_argument("--quick", action="store_true", help="one small round: a smoke run")
    p.add_argument("--rounds", type=int, default=5, help="runs per workload and mode")
    p.add_argument("--idle-sessions", type=int, default=200, help="idle persistent sessions")
    p.add_argument(
        "--workloads",
        default=",".join(DEFAULT_WORKLOADS),
        help=f"comma-separated subset of {','.join(WORKLOADS)}",
    )
    p.add_argument(
        "--watch",
        default="updates/#,events,status",
        help="what the watcher subscribes to, under <prefix>/bridge/ (status always)",
    )
    p.add_argument("--json", type=Path, help="also write every run as JSON here")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    mine, rest = p.parse_known_args(argv)
    broker_args = bb.parse_args([*rest, "--no-mosquitto", *(["--quick"] if mine.quick else [])])
    args = argparse.Namespace(**{**vars(broker_args), **vars(mine)})
    args.workloads = [w for w in args.workloads.split(",") if w]
    args.watch = [w for w in args.watch.split(",") if w]
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown:
        p.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    if args.quick:
        args.rounds = 1
        args.idle_sessions = min(args.idle_sessions, 20)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(
        f"{bb.NCPU} CPUs; {args.rounds} round(s) x {len(MODES)} modes per workload; "
        f"{args.idle_sessions} idle persistent sessions in every mode; "
        f"{args.publishers} publishers, payload {args.payload} B, "
        f"synchronous={args.synchronous}"
    )
    runs: list[Run] = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-admin-"))
    try:
        for workload in args.workloads:
            for round_index in range(args.rounds):
                for mode in rotated(round_index):
                    rundir = workdir / f"{workload}-{round_index}-{mode}"
                    rundir.mkdir()
                    label = f"{workload}-{round_index}-{mode}"
                    run = run_one(workload, mode, rundir, args, label)
                    runs.append(run)
                    got = sum(run.extras.counts.values())
                    watched = ""
                    if mode == "watched":
                        cpu = run.extras.watcher_cpu
                        watched = f" | watcher got {got} messages (its CPU {cpu:.2f} s)"
                    if run.admin_share is not None:
                        watched += f" | admin service {run.admin_share:.1f}% of busy samples"
                    print(f"{mode:<8} {run.row.line()}{watched}", flush=True)
    finally:
        if args.keep:
            print(f"logs and stores kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(
        "== Admin API cost (medians; cost relative to off: throughput lost, CPU per "
        f"message added; issue 4 target: <= {TARGET_PCT:.0f}% throughput)"
    )
    for line in summary(runs, args.workloads):
        print(line)
    incomplete = [r for r in runs if not r.complete]
    if incomplete:
        print(f"warning: {len(incomplete)} run(s) did not deliver everything they sent")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "mode": r.mode,
                        **r.row.as_dict(),
                        "watcher_messages": r.extras.counts,
                        "watcher_bytes": r.extras.sizes,
                        "extras_seconds": round(r.extras.seconds, 3),
                    }
                    for r in runs
                ],
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
