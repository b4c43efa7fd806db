"""End-to-end broker benchmark: the gateway (durable mode) and, when installed, Mosquitto.

Each workload gets a freshly started broker subprocess on a free 127.0.0.1 port and the same
raw-socket load generator (bench/loadgen.py: forked worker processes, asyncio, the gateway's own
codec as a client library):

  qos0-fanin        10 publishers -> 1 subscriber, QoS 0, 64 B: msgs/s received
  qos1-clean        same with QoS 1 and a clean_session=1 subscriber: msgs/s delivered,
                    PUBACKed both ways; latency publish -> subscriber (p50/p99)
  qos1-persistent   same with a clean_session=0 subscriber (the gateway commits every message
                    before its PUBACK)
  offline-enqueue   a persistent QoS 1 subscriber goes away; publishers send N QoS 1 messages,
                    each PUBACKed: msgs/s
  offline-drain     the subscriber comes back and PUBACKs the whole queue: msgs/s
  idle-conns        K connections (CONNECT/CONNACK, keep-alive 600) held open: broker RSS
                    growth per connection, connect rate

For every run it prints the broker's CPU time (/proc/<pid>/stat) and RSS, the bytes it wrote
to disk (/proc/<pid>/io write_bytes: KB per 1,000 messages), the load generator's own CPU time
(to show whether it, rather than the broker, was the limit) and how busy the whole machine
was. Figures only: nothing here asserts a target. At the end, the gateway/Mosquitto ratio of
each workload is printed next to issue 13's goal for it (ratios to Mosquitto in the same run).

Run: python bench/bench_broker.py [--quick] [--no-mosquitto] [--connections 10000] [--help]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import queue as queue_module
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen  # noqa: E402

from gateway.compiled import describe as describe_build  # noqa: E402

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1

WORKLOADS = (
    "qos0-fanin",
    "qos1-clean",
    "qos1-persistent",
    "offline",  # two rows: offline-enqueue, offline-drain
    "idle-conns",
)

CONNECTIONS_TARGET = 10_000

# Issue 13: (goal, "min" or "max") for gateway / Mosquitto in the same run; idle-conns is
# absolute (KB of RSS per idle connection).
GOALS: dict[str, tuple[float, str]] = {
    "qos0-fanin": (0.9, "min"),
    "qos1-clean": (1.0, "min"),
    "qos1-persistent": (0.75, "min"),
    "offline-enqueue": (1.0, "min"),
    "offline-drain": (0.75, "min"),
    "idle-conns": (1.5, "max"),
}
P50_GOAL = 2.0  # qos1-persistent: gateway p50 latency at most this times Mosquitto's


# ------------------------------------------------------------------------- broker processes


@dataclass(frozen=True)
class Sample:
    """Broker process CPU/memory and whole-machine CPU at one moment."""

    at: float
    cpu: float  # broker user+system seconds, all threads
    rss_kb: int
    hwm_kb: int
    host_busy: int  # jiffies, all CPUs
    host_total: int
    write_bytes: int = 0  # /proc/<pid>/io: bytes the broker caused to be written to disk

    def cores_since(self, earlier: Sample) -> float:
        total = self.host_total - earlier.host_total
        return NCPU * (self.host_busy - earlier.host_busy) / total if total else 0.0


def _apply_override(config: dict[str, Any], override: str) -> None:
    """``a.b.c=VALUE`` (VALUE as JSON when it parses, else a string) into the gateway config."""
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise SystemExit(f"--set expects KEY.PATH=VALUE, got {override!r}")
    try:
        value: Any = json.loads(text)
    except ValueError:
        value = text
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def gateway_env(tree: Path) -> dict[str, str]:
    # The caller's PYTHONPATH is kept after the tree (e.g. a sitecustomize for experiments).
    path = os.pathsep.join(p for p in (str(tree), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path)


def gateway_build(tree: Path) -> str:
    """What the gateway started from ``tree`` runs: pure Python or the mypyc-compiled modules."""
    code = "from gateway.compiled import describe; print(describe())"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=gateway_env(tree),
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.stdout.strip() if proc.returncode == 0 else f"unknown ({proc.stderr.strip()})"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _raise_nofile_in_child() -> None:
    loadgen.raise_nofile_limit()


class BrokerProcess:
    def __init__(self, kind: str, workdir: Path, args: argparse.Namespace) -> None:
        self.kind = kind
        self.workdir = workdir
        self.port = free_port()
        self.log_path = workdir / f"{kind}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.gateway_tree: Path = args.gateway_tree
        if kind == "gateway":
            # JSON is YAML: no need for a YAML writer here.
            config: dict[str, Any] = {
                "listeners": [{"type": "tcp", "name": "tcp", "host": HOST, "port": self.port}],
                "persistence": {
                    "enabled": True,
                    "path": str(workdir / "gateway.db"),
                    "synchronous": args.synchronous,
                },
                "limits": {
                    "max_inflight_messages": args.inflight,
                    "queue": {"max_messages": 0},  # the default 1000 would drop the offline run
                    # The default 10,000 sessions includes the gateway's own: idle-conns at
                    # --connections 10000 would see its last CONNECT refused.
                    "max_sessions": max(10_000, args.connections + 100),
                },
                "sys_interval": 0,
                "logging": {"level": "warning"},
            }
            for override in args.set:
                _apply_override(config, override)
            path = workdir / "gateway.yaml"
            path.write_text(json.dumps(config, indent=2))
            self.argv = [sys.executable, "-m", "gateway", "run", "--config", str(path)]
        else:
            path = workdir / "mosquitto.conf"
            path.write_text(
                f"listener {self.port} {HOST}\n"
                "allow_anonymous true\n"
                "persistence false\n"
                # 0 = no limit (mosquitto.conf(5)); the default 1000 would drop the offline run.
                "max_queued_messages 0\n"
                f"max_inflight_messages {args.inflight}\n"
                "log_dest stderr\n"
                "log_type error\n"
                "log_type warning\n"
            )
            self.argv = [args.mosquitto, "-c", str(path)]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> BrokerProcess:
        env = gateway_env(self.gateway_tree)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
                preexec_fn=_raise_nofile_in_child,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited at start-up:\n{self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 0.2):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"{self.kind} did not start listening:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def sample(self) -> Sample:
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()  # the name may hold spaces
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
        rss = hwm = 0
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
        jiffies = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = jiffies[3] + jiffies[4]  # idle + iowait
        total = sum(jiffies[:8])
        written = 0
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/io").read_text().splitlines():
                if line.startswith("write_bytes:"):
                    written = int(line.split()[1])
        return Sample(time.monotonic(), cpu, rss, hwm, total - idle, total, written)


# ------------------------------------------------------------------------- phases


@dataclass
class Phase:
    before: Sample
    after: Sample
    t_go: float
    results: list[loadgen.Result]
    checkpoint: Sample | None = None
    settled: Sample | None = None  # after the store's delayed commits (see settle())

    @property
    def wall(self) -> float:
        return self.after.at - self.t_go

    def role(self, role: str) -> list[loadgen.Result]:
        return [r for r in self.results if r["role"] == role]

    @property
    def gen_cpu(self) -> float:
        return sum(float(r["cpu"]) for r in self.results)


class Profiler:
    """py-spy record attached to the gateway for the measured part of each phase."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.output: Path | None = None

    def start(self, pid: int, label: str) -> None:
        self.output = self.directory / f"{label}.txt"
        self.proc = subprocess.Popen(
            [
                "py-spy",
                "record",
                "--pid",
                str(pid),
                "--rate",
                "250",
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(self.output),
            ],
            stdout=subprocess.DEVNULL,
            stderr=(self.directory / f"{label}.log").open("wb"),
        )
        time.sleep(1.0)  # attaching takes a moment; samples before go would be idle anyway

    def stop(self) -> Path | None:
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        return self.output


def run_phase(
    broker: BrokerProcess,
    specs: list[tuple[str, dict[str, Any]]],
    time_limit: float,
    profiler: Profiler | None = None,
    label: str = "",
) -> Phase:
    """Start one process per spec; when all are ready, sample the broker and say go.

    Once every "pub" worker is done, "stop" tells subscribers that silence now means the end.
    A worker's checkpoint pauses the phase for a broker sample (idle connections' RSS).
    """
    ctx = multiprocessing.get_context("fork")
    results_q: Any = ctx.Queue()
    go, stop, resume = ctx.Event(), ctx.Event(), ctx.Event()
    procs = [
        ctx.Process(
            target=loadgen.worker_entry,
            args=(
                name,
                {"host": HOST, "port": broker.port, **kwargs},
                i,
                results_q,
                go,
                stop,
                resume,
            ),
            daemon=True,
        )
        for i, (name, kwargs) in enumerate(specs)
    ]
    for proc in procs:
        proc.start()
    results: dict[int, loadgen.Result] = {}
    checkpoint: Sample | None = None
    pubs_pending = sum(1 for name, _ in specs if name == "publishers")
    try:

        def receive(deadline: float) -> tuple[str, int, Any]:
            while True:
                try:
                    msg: tuple[str, int, Any] = results_q.get(timeout=0.5)
                except queue_module.Empty:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{label}: workers did not report in time") from None
                    if broker.proc is not None and broker.proc.poll() is not None:
                        raise RuntimeError(f"{broker.kind} died:\n{broker.log_tail()}") from None
                    continue
                if msg[0] == "error":
                    raise RuntimeError(f"{label}: worker {msg[1]} failed:\n{msg[2]}")
                return msg

        ready = 0
        setup_deadline = time.monotonic() + 60
        while ready < len(specs):
            if receive(setup_deadline)[0] == "ready":
                ready += 1
        if profiler is not None:
            profiler.start(broker.pid, label)
        before = broker.sample()
        t_go = time.monotonic()
        go.set()
        if pubs_pending == 0:
            stop.set()
        run_deadline = t_go + time_limit + 60
        while len(results) < len(specs):
            kind, index, payload = receive(run_deadline)
            if kind == "checkpoint":
                time.sleep(1.0)  # let the broker settle (allocations, deferred work)
                checkpoint = broker.sample()
                resume.set()
            elif kind == "done":
                results[index] = payload
                if specs[index][0] == "publishers":
                    pubs_pending -= 1
                    if pubs_pending == 0:
                        stop.set()
        after = broker.sample()
    finally:
        if profiler is not None:
            profiler.stop()
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
    return Phase(before, after, t_go, [results[i] for i in range(len(specs))], checkpoint)


# ------------------------------------------------------------------------- workloads


@dataclass
class Row:
    broker: str
    workload: str
    rate: float
    unit: str
    done: int
    of: int
    phase: Phase
    msgs: int  # for CPU per message (connections for idle-conns)
    p50_ms: float | None = None
    p99_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def broker_cpu(self) -> float:
        return self.phase.after.cpu - self.phase.before.cpu

    def as_dict(self) -> dict[str, Any]:
        ph = self.phase
        return {
            "broker": self.broker,
            "workload": self.workload,
            "rate": round(self.rate, 1),
            "unit": self.unit,
            "done": self.done,
            "of": self.of,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "wall_s": round(ph.wall, 3),
            "broker_cpu_s": round(self.broker_cpu, 3),
            "broker_cpu_us_per_msg": round(self.broker_cpu / max(self.msgs, 1) * 1e6, 2),
            "broker_rss_mb": round(ph.after.rss_kb / 1024, 1),
            "broker_peak_rss_mb": round(ph.after.hwm_kb / 1024, 1),
            "disk_kb_per_1000_msgs": round(
                ((ph.settled or ph.after).write_bytes - ph.before.write_bytes)
                / max(self.msgs, 1)
                * 1000
                / 1024,
                1,
            ),
            "loadgen_cpu_s": round(ph.gen_cpu, 3),
            "loadgen_cores": round(ph.gen_cpu / ph.wall, 2) if ph.wall > 0 else 0.0,
            "host_cores_busy": round(ph.after.cores_since(ph.before), 2),
            **self.extra,
        }

    def line(self) -> str:
        d = self.as_dict()
        lat = (
            f"  p50 {self.p50_ms:6.2f} ms p99 {self.p99_ms:7.2f} ms"
            if self.p50_ms is not None and self.p99_ms is not None
            else ""
        )
        extra = "".join(f"  {k} {v}" for k, v in self.extra.items())
        return (
            f"{self.broker:<10} {self.workload:<16} {self.rate:>12,.1f} {self.unit:<7}"
            f"  {self.done}/{self.of}{lat}"
            f"  | broker CPU {d['broker_cpu_s']:.2f} s ({d['broker_cpu_us_per_msg']:.1f} µs/msg)"
            f" RSS {d['broker_rss_mb']:.1f} MB (peak {d['broker_peak_rss_mb']:.1f})"
            f" disk {d['disk_kb_per_1000_msgs']:.0f} KB/1000 msgs"
            f" | loadgen CPU {d['loadgen_cpu_s']:.2f} s ({d['loadgen_cores']:.2f} cores)"
            f" | host {d['host_cores_busy']:.2f}/{NCPU} cores busy{extra}"
        )


def _publisher_specs(
    args: argparse.Namespace, count_each: int, qos: int, topic: str
) -> list[tuple[str, dict[str, Any]]]:
    procs = max(1, min(args.pub_procs, args.publishers))
    return [
        (
            "publishers",
            {
                "indexes": list(range(p, args.publishers, procs)),
                "count": count_each,
                "qos": qos,
                "window": args.window,
                "payload": args.payload,
                "topic": topic,
                "time_limit": args.time_limit,
            },
        )
        for p in range(procs)
    ]


def _since(phase: Phase, t_end: float) -> float:
    return max(t_end - phase.t_go, 1e-9)


def run_fanin(broker: BrokerProcess, args: argparse.Namespace, prof: Profiler | None) -> list[Row]:
    each = max(1, args.messages // args.publishers)
    total = each * args.publishers
    specs = [
        (
            "subscriber",
            {
                "client_id": "bench-sub-fanin",
                "topic_filter": "bench/fanin/+",
                "qos": 0,
                "expected": total,
                "mode": "clean",
                "time_limit": args.time_limit + 10,
            },
        ),
        *_publisher_specs(args, each, 0, "bench/fanin"),
    ]
    ph = run_phase(broker, specs, args.time_limit, prof, f"{broker.kind}-qos0-fanin")
    (sub,) = ph.role("sub")
    sent = sum(int(p["sent"]) for p in ph.role("pub"))
    got = int(sub["received"])
    rate = got / _since(ph, sub["t_last"]) if got else 0.0
    return [
        Row(
            broker.kind,
            "qos0-fanin",
            rate,
            "msgs/s",
            got,
            sent,
            ph,
            got,
            sub["p50_ms"],
            sub["p99_ms"],
            {"lost": sent - got} if sent != got else {},
        )
    ]


def _run_qos1(
    name: str, mode: str, broker: BrokerProcess, args: argparse.Namespace, prof: Profiler | None
) -> list[Row]:
    each = max(1, args.qos1_messages // args.publishers)
    total = each * args.publishers
    specs = [
        (
            "subscriber",
            {
                "client_id": f"bench-sub-{name}",
                "topic_filter": "bench/qos1/+",
                "qos": 1,
                "expected": total,
                "mode": mode,
                "time_limit": args.time_limit + 10,
            },
        ),
        *_publisher_specs(args, each, 1, "bench/qos1"),
    ]
    ph = run_phase(broker, specs, args.time_limit, prof, f"{broker.kind}-{name}")
    settle(ph, broker)
    (sub,) = ph.role("sub")
    pubs = ph.role("pub")
    acked = sum(int(p["acked"]) for p in pubs)
    got = int(sub["received"])
    end = max([float(sub["t_last"])] + [float(p["t_end"]) for p in pubs])
    done = min(got, acked)
    extra: dict[str, Any] = {}
    if got != acked:
        extra["acked"] = acked
    if sub["dups"]:
        extra["dups"] = sub["dups"]
    return [
        Row(
            broker.kind,
            name,
            done / _since(ph, end) if done else 0.0,
            "msgs/s",
            done,
            total,
            ph,
            done,
            sub["p50_ms"],
            sub["p99_ms"],
            extra,
        )
    ]


def run_qos1_clean(
    broker: BrokerProcess, args: argparse.Namespace, prof: Profiler | None
) -> list[Row]:
    return _run_qos1("qos1-clean", "clean", broker, args, prof)


def run_qos1_persistent(
    broker: BrokerProcess, args: argparse.Namespace, prof: Profiler | None
) -> list[Row]:
    return _run_qos1("qos1-persistent", "persistent", broker, args, prof)


def run_offline(
    broker: BrokerProcess, args: argparse.Namespace, prof: Profiler | None
) -> list[Row]:
    each = max(1, args.offline_messages // args.publishers)
    total = each * args.publishers
    sub = {
        "client_id": "bench-sub-offline",
        "topic_filter": "bench/offline/+",
        "qos": 1,
        "time_limit": args.time_limit + 10,
    }
    specs = [
        ("subscriber", {**sub, "expected": 0, "mode": "offline"}),
        *_publisher_specs(args, each, 1, "bench/offline"),
    ]
    enq = run_phase(broker, specs, args.time_limit, prof, f"{broker.kind}-offline-enqueue")
    pubs = enq.role("pub")
    acked = sum(int(p["acked"]) for p in pubs)
    enq_end = max(float(p["t_end"]) for p in pubs)
    drain = run_phase(
        broker,
        [("subscriber", {**sub, "expected": acked, "mode": "drain"})],
        args.time_limit,
        prof,
        f"{broker.kind}-offline-drain",
    )
    settle(drain, broker)
    (res,) = drain.role("sub")
    got = int(res["received"])
    return [
        Row(
            broker.kind,
            "offline-enqueue",
            acked / _since(enq, enq_end),
            "msgs/s",
            acked,
            total,
            enq,
            acked,
        ),
        Row(
            broker.kind,
            "offline-drain",
            got / _since(drain, res["t_last"]) if got else 0.0,
            "msgs/s",
            got,
            acked,
            drain,
            got,
            extra={"dups": res["dups"]} if res["dups"] else {},
        ),
    ]


def settle(phase: Phase, broker: BrokerProcess) -> None:
    """Wait for the writes the gateway delays (acknowledgements are committed with the next
    urgent commit or within store.relaxed_window, 1 s) before reading its disk figure."""
    time.sleep(1.5)
    phase.settled = broker.sample()


def run_idle(broker: BrokerProcess, args: argparse.Namespace, prof: Profiler | None) -> list[Row]:
    ph = run_phase(
        broker,
        [("idle_connections", {"count": args.connections})],
        args.time_limit,
        None,  # nothing to profile while connections sit idle
        f"{broker.kind}-idle-conns",
    )
    (res,) = ph.role("idle")
    opened = int(res["opened"])
    assert ph.checkpoint is not None
    kb_per_conn = (ph.checkpoint.rss_kb - ph.before.rss_kb) / max(opened, 1)
    extra: dict[str, Any] = {
        "rss_kb_per_conn": round(kb_per_conn, 2),
        "rss_before_mb": round(ph.before.rss_kb / 1024, 1),
        "rss_held_mb": round(ph.checkpoint.rss_kb / 1024, 1),
        "held": int(res["alive"]),
    }
    if res["failed"]:
        extra["failed"] = res["failed"]
        extra["first_failure"] = res["first_failure"]
    row = Row(
        broker.kind,
        "idle-conns",
        opened / max(float(res["t_open"]), 1e-9),
        "conns/s",
        opened,
        args.connections,
        ph,
        opened,
        extra=extra,
    )
    return [row]


RUNNERS: dict[str, Callable[[BrokerProcess, argparse.Namespace, Profiler | None], list[Row]]] = {
    "qos0-fanin": run_fanin,
    "qos1-clean": run_qos1_clean,
    "qos1-persistent": run_qos1_persistent,
    "offline": run_offline,
    "idle-conns": run_idle,
}


# ------------------------------------------------------------------------- reporting


def _measure(row: Row) -> float:
    return float(row.extra["rss_kb_per_conn"]) if row.workload == "idle-conns" else row.rate


def _fmt(value: float | None, workload: str) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} KB/conn" if workload == "idle-conns" else f"{value:,.0f}/s"


def _ratio_cell(w: str, by: dict[tuple[str, str], Row]) -> tuple[str, str, str]:
    """(ratio or absolute figure, goal, met) of issue 13 for workload ``w``."""
    goal, sense = GOALS[w]
    sign = ">=" if sense == "min" else "<="
    gw = by.get(("gateway", w))
    mq = by.get(("mosquitto", w))
    if w == "idle-conns":
        if gw is None:
            return "-", f"{sign} {goal:.1f} KB", "-"
        value = _measure(gw)
        return f"{value:.2f} KB", f"{sign} {goal:.1f} KB", "yes" if value <= goal else "NO"
    if gw is None or mq is None or not _measure(mq):
        return "-", f"{sign} {goal:.2f}x", "-"
    ratio = _measure(gw) / _measure(mq)
    met = ratio >= goal if sense == "min" else ratio <= goal
    if w == "qos1-persistent" and gw.p50_ms is not None and mq.p50_ms:
        p50 = gw.p50_ms / mq.p50_ms
        met = met and p50 <= P50_GOAL
        return f"{ratio:.2f}x (p50 {p50:.1f}x)", f"{sign} {goal:.2f}x, p50 <= 2x", _yes(met)
    return f"{ratio:.2f}x", f"{sign} {goal:.2f}x", _yes(met)


def _yes(met: bool) -> str:
    return "yes" if met else "NO"


def print_summary(rows: list[Row], brokers: list[str], args: argparse.Namespace) -> None:
    by = {(r.broker, r.workload): r for r in rows}
    names = [w for w in GOALS if any(r.workload == w for r in rows)]
    print()
    print(
        f"== Throughput and memory (gateway durable: SQLite WAL, synchronous={args.synchronous};"
        f" broker in-flight {args.inflight})"
    )
    head = f"{'workload':<16} " + "".join(f"{b:>16}" for b in brokers)
    print(
        f"{head}  {'gateway/mosquitto':>22} {'issue 13 goal':>22} {'met':>4}  {'disk KB/1000':>12}"
    )
    for w in names:
        cells = "".join(
            f"{_fmt(_measure(by[b, w]) if (b, w) in by else None, w):>16}" for b in brokers
        )
        ratio, goal, met = _ratio_cell(w, by)
        gw = by.get(("gateway", w))
        disk = (
            "-"
            if gw is None or w == "idle-conns"
            else f"{gw.as_dict()['disk_kb_per_1000_msgs']:.0f}"
        )
        print(f"{w:<16} {cells}  {ratio:>22} {goal:>22} {met:>4}  {disk:>12}")
    if any(r.workload == "idle-conns" for r in rows):
        held_by = {
            b: f"{by[b, 'idle-conns'].extra['held']} held" if (b, "idle-conns") in by else "-"
            for b in brokers
        }
        cells = "".join(f"{held_by[b]:>16}" for b in brokers)
        held = by.get(("gateway", "idle-conns"))
        met = "-"
        if held is not None and args.connections >= CONNECTIONS_TARGET:
            met = "yes" if held.extra["held"] >= CONNECTIONS_TARGET else "NO"
        print(f"{'connections':<16} {cells}  {'':>22} {'10,000 held':>22} {met:>4}")

    print()
    print("== Latency (publish -> subscriber), CPU and RSS per broker")
    print(
        f"{'workload':<16} {'broker':<10} {'p50 ms':>8} {'p99 ms':>8} {'CPU s':>7} "
        f"{'CPU µs/msg':>10} {'RSS MB':>7} {'peak MB':>8} {'loadgen cores':>13} {'host cores':>10}"
    )
    for w in names:
        for b in brokers:
            r = by.get((b, w))
            if r is None:
                continue
            d = r.as_dict()
            p50 = f"{r.p50_ms:.2f}" if r.p50_ms is not None else "-"
            p99 = f"{r.p99_ms:.2f}" if r.p99_ms is not None else "-"
            print(
                f"{w:<16} {b:<10} {p50:>8} {p99:>8} {d['broker_cpu_s']:>7.2f} "
                f"{d['broker_cpu_us_per_msg']:>10.1f} {d['broker_rss_mb']:>7.1f} "
                f"{d['broker_peak_rss_mb']:>8.1f} {d['loadgen_cores']:>13.2f} "
                f"{d['host_cores_busy']:>10.2f}"
            )


def summarize_profile(path: Path, top: int = 15) -> str:
    """Self and inclusive sample shares per file:function, and the hottest lines, from
    py-spy's raw (collapsed) output of every thread (event loop and SQLite worker)."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame_name(f) for f in stack.split(";")]
        own[frames[-1][0]] += count
        lines[frames[-1][1]] += count
        for name in {f[0] for f in frames}:
            incl[name] += count
    if not total:
        return f"{path.name}: no samples"
    out = [f"{path.stem}: {total} samples (busy only)", "  self%  incl%  function"]
    for name, count in own.most_common(top):
        out.append(f"  {100 * count / total:5.1f}  {100 * incl[name] / total:5.1f}  {name}")
    out.append("  -- top inclusive (gateway code) --")
    shown = 0
    for name, count in incl.most_common():
        if "gateway/" not in name:
            continue
        out.append(f"  {100 * own[name] / total:5.1f}  {100 * count / total:5.1f}  {name}")
        shown += 1
        if shown == top:
            break
    out.append("  -- hottest lines (self) --")
    for name, count in lines.most_common(top):
        out.append(f"  {100 * count / total:5.1f}         {name}")
    return "\n".join(out)


def _frame_name(frame: str) -> tuple[str, str]:
    """ "func (path/to/file.py:123)" -> ("to/file.py:func", "to/file.py:123 func")."""
    func, _, where = frame.partition(" (")
    file, _, lineno = where.rstrip(")").rpartition(":")
    parts = Path(file).parts
    start = parts.index("gateway") if "gateway" in parts else max(len(parts) - 2, 0)
    file = "/".join(parts[start:])
    if not file:
        return func, func
    return f"{file}:{func}", f"{file}:{lineno} {func}"


# ------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny counts: a smoke run of a few seconds")
    p.add_argument("--no-mosquitto", action="store_true", help="run the gateway only")
    p.add_argument("--mosquitto", default="/usr/sbin/mosquitto", help="mosquitto binary")
    p.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated subset of {','.join(WORKLOADS)}",
    )
    p.add_argument("--messages", type=int, default=300_000, help="qos0-fanin messages")
    p.add_argument("--qos1-messages", type=int, default=100_000, help="qos1-* messages")
    p.add_argument("--offline-messages", type=int, default=50_000, help="offline messages")
    p.add_argument("--connections", type=int, default=2000, help="idle-conns connections")
    p.add_argument("--publishers", type=int, default=10, help="publishing connections")
    p.add_argument("--pub-procs", type=int, default=2, help="processes the publishers share")
    p.add_argument("--window", type=int, default=100, help="unacked QoS 1 per publisher")
    p.add_argument("--payload", type=int, default=64, help="payload bytes (>= 16)")
    p.add_argument("--inflight", type=int, default=100, help="broker max in-flight per client")
    p.add_argument("--synchronous", default="full", help="gateway persistence.synchronous")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="gateway config override, e.g. persistence.group_commit_ms=0 (repeatable)",
    )
    p.add_argument("--time-limit", type=float, default=60.0, help="seconds per phase at most")
    p.add_argument("--profile", type=Path, help="py-spy record the gateway into this directory")
    p.add_argument("--json", type=Path, help="also write the rows as JSON here")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    p.add_argument(
        "--gateway-tree",
        type=Path,
        default=REPO,
        metavar="DIR",
        help="run the gateway from this source tree (e.g. a mypyc build made by "
        "bench/compare_mypyc.py); the load generator stays this repository's",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.messages = min(args.messages, 2000)
        args.qos1_messages = min(args.qos1_messages, 1000)
        args.offline_messages = min(args.offline_messages, 1000)
        args.connections = min(args.connections, 50)
        args.time_limit = min(args.time_limit, 20.0)
    unknown = set(args.workloads.split(",")) - set(WORKLOADS)
    if unknown:
        p.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    if args.payload < loadgen.STAMP.size:
        p.error(f"--payload must be at least {loadgen.STAMP.size}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    nofile = loadgen.raise_nofile_limit()
    if args.connections + 100 > nofile:
        print(f"warning: open-files limit {nofile} is below --connections {args.connections}")
    brokers = ["gateway"]
    if not args.no_mosquitto:
        if Path(args.mosquitto).exists() or shutil.which(args.mosquitto):
            brokers.append("mosquitto")
        else:
            print(f"{args.mosquitto} not found: gateway only")
    if args.profile is not None and shutil.which("py-spy") is None:
        print("--profile needs py-spy (pip install py-spy)")
        return 2
    profiler = Profiler(args.profile) if args.profile is not None else None
    selected = [w for w in WORKLOADS if w in args.workloads.split(",")]
    print(
        f"{NCPU} CPUs; {args.publishers} publishers in {args.pub_procs} processes, "
        f"window {args.window}, payload {args.payload} B, broker in-flight {args.inflight}"
        + (f"; gateway overrides: {' '.join(args.set)}" if args.set else "")
    )
    print(f"gateway build: {gateway_build(args.gateway_tree)} ({args.gateway_tree})")
    print(f"load generator codec: {describe_build()}")
    rows: list[Row] = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-broker-"))
    try:
        for workload in selected:
            for kind in brokers:
                rundir = workdir / f"{kind}-{workload}"
                rundir.mkdir()
                if kind == "mosquitto":
                    rundir.chmod(0o755)  # mosquitto drops root privileges after reading its config
                broker = BrokerProcess(kind, rundir, args).start()
                try:
                    new = RUNNERS[workload](broker, args, profiler if kind == "gateway" else None)
                finally:
                    broker.stop()
                for row in new:
                    print(row.line(), flush=True)
                rows.extend(new)
    finally:
        if args.keep:
            print(f"logs and stores kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print_summary(rows, brokers, args)
    if profiler is not None:
        print()
        print(f"== py-spy profiles of the gateway (collapsed stacks in {args.profile})")
        for path in sorted(args.profile.glob("*.txt")):
            print(summarize_profile(path))
    if args.json is not None:
        args.json.write_text(json.dumps([r.as_dict() for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
