"""Upstream bridge throughput: edge-gateway's bridge next to Mosquitto's own, in one run.

Each run starts a fresh upstream Mosquitto and a fresh edge broker bridged to it, on free
127.0.0.1 ports, and moves ``--messages`` (20,000) QoS 1 messages of ``--size`` (64) bytes
from a local publisher on the edge to a subscriber on the upstream:

* ``live``: the bridge is connected; the publisher sends (at most ``--window`` unacknowledged)
  and the figure is messages / (last arrival upstream - first publish).
* ``drain``: the upstream is down while the publisher sends everything (the edge queues it,
  acknowledged); then the upstream starts, the subscriber connects to it, and the figure is
  messages / (last arrival - first arrival): how fast a backlog goes up after an outage.

Edge brokers:

* ``mosquitto``: Mosquitto 2.0 with a ``connection`` block (``cleansession false``,
  ``topic bench/# out 1 gw/ site1/gw/``), ``persistence true`` with the default autosave,
  ``max_queued_messages 0`` (its stock 1,000 would drop most of a backlog);
* ``mosquitto-nodelay``: the same with ``set_tcp_nodelay true``;
* ``edge-gateway``: ``python -m gateway run`` with the same rule under ``upstream:``, durable
  (SQLite WAL, ``synchronous: full``: every message is committed before it is acknowledged
  to the publisher, and taken off the queue only once the upstream acknowledged it).

The load generator is raw asyncio sockets with the gateway's codec, the publisher and the
subscriber in processes of their own. Rounds rotate the order of the brokers; the table gives
the median and the range, and the ratio of edge-gateway to each Mosquitto variant. The
machine's busy cores during the runs are shown: on a shared machine the figures move.

    python bench/bench_upstream.py                 # 3 rounds, 20,000 messages
    python bench/bench_upstream.py --quick         # a smoke run of a few seconds
    python bench/bench_upstream.py --rounds 5 --messages 50000
    python bench/bench_upstream.py --brokers edge-gateway --profile prof/   # py-spy
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gateway.mqtt.codec import StreamDecoder, encode, encode_publish  # noqa: E402
from gateway.mqtt.packets import (  # noqa: E402
    PROTOCOL_V311,
    ConnAck,
    Connect,
    Disconnect,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
)

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
BROKERS = ("mosquitto", "mosquitto-nodelay", "edge-gateway")
PHASES = ("live", "drain")
SEQ = struct.Struct("<I")
V = PROTOCOL_V311
LOCAL_TOPIC = "gw/bench/meter"
REMOTE_FILTER = "site1/gw/bench/#"
REMOTE_TOPIC = "site1/gw/bench/meter"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{what} did not listen on {port}")


# ----------------------------------------------------------------------------- processes


class Upstream:
    """The upstream Mosquitto: no persistence, no queue limit."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.port = port
        self.conf = workdir / "upstream.conf"
        self.conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 0\nlog_dest none\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, self.proc, "upstream mosquitto")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def start_edge(
    broker: str, workdir: Path, port: int, upstream_port: int
) -> subprocess.Popen[bytes]:
    if broker.startswith("mosquitto"):
        conf = workdir / "edge.conf"
        lines = [
            f"listener {port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {workdir}/",
            "max_queued_messages 0",
            "log_dest none",
            *(["user root"] if os.geteuid() == 0 else []),
            *(["set_tcp_nodelay true"] if broker == "mosquitto-nodelay" else []),
            "connection upstream",
            f"address 127.0.0.1:{upstream_port}",
            "cleansession false",
            "clientid edge-mosquitto",
            "restart_timeout 1",
            "topic bench/# out 1 gw/ site1/gw/",
        ]
        conf.write_text("\n".join(lines) + "\n")
        cmd = [MOSQUITTO, "-c", str(conf)]
    else:
        conf = workdir / "config.yaml"
        config = {
            "listeners": [{"type": "tcp", "name": "tcp", "host": "127.0.0.1", "port": port}],
            "persistence": {"path": str(workdir / "gw.db")},
            "logging": {"level": "warning"},
            "sys_interval": float(os.environ.get("BENCH_SYS_INTERVAL", "10")),
            "upstream": [
                {
                    "name": "bench",
                    "host": "127.0.0.1",
                    "port": upstream_port,
                    "client_id": "edge-gateway-bench",
                    "protocol": os.environ.get("BENCH_PROTOCOL", "5"),
                    "reconnect_min": 0.5,
                    "reconnect_max": 1,
                    "topics": [
                        {
                            "pattern": "bench/#",
                            "direction": "out",
                            "qos": 1,
                            "local_prefix": "gw/",
                            "remote_prefix": "site1/gw/",
                        }
                    ],
                    "queue": {"max_messages": 0},
                }
            ],
        }
        conf.write_text(json.dumps(config))  # JSON is YAML
        cmd = [sys.executable, "-m", "gateway", "run", "--config", str(conf)]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    log = (workdir / "edge.log").open("ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    log.close()
    wait_port(port, proc, broker)
    return proc


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# ----------------------------------------------------------------------------- load


async def _connect(
    port: int, client_id: str, clean: bool = True
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, StreamDecoder, list[Any]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    decoder = StreamDecoder(protocol_version=V)
    writer.write(encode(Connect(client_id, clean_start=clean, keep_alive=120), V))
    backlog: list[Any] = []
    while True:
        data = await reader.read(1 << 16)
        if not data:
            raise ConnectionError("closed before CONNACK")
        backlog.extend(decoder.feed(data))
        if backlog and isinstance(backlog[0], ConnAck):
            if backlog[0].reason_code:
                raise ConnectionError(f"CONNACK {backlog[0].reason_code}")
            return reader, writer, decoder, backlog[1:]


async def _publish(port: int, count: int, size: int, window: int) -> dict[str, float]:
    """QoS 1 PUBLISHes built from one template (the packet id and sequence number patched
    in), PUBACKs counted by their fixed 4 bytes: the generator must not be what limits."""
    reader, writer, _, _ = await _connect(port, "bench-pub")
    pad = b"\0" * max(0, size - SEQ.size)
    template = bytearray(
        encode_publish(Publish(LOCAL_TOPIC, SEQ.pack(0) + pad, 1, False, False, 1), V)
    )
    pid_at = len(template) - len(pad) - SEQ.size - 2
    t_start = time.monotonic()
    sent = acked = 0
    rest = 0  # bytes of a PUBACK split across reads
    while acked < count:
        batch = []
        while sent < count and sent - acked < window:
            pid = sent % 65535 + 1
            template[pid_at] = pid >> 8
            template[pid_at + 1] = pid & 0xFF
            SEQ.pack_into(template, pid_at + 2, sent)
            batch.append(bytes(template))
            sent += 1
        if batch:
            writer.write(b"".join(batch))
        data = await reader.read(1 << 18)
        if not data:
            raise ConnectionError("the edge closed the publisher")
        if data[0] != 0x40 and not rest:
            raise RuntimeError(f"expected PUBACKs, got first byte {data[0]:#x}")
        rest += len(data)
        acked += rest // 4
        rest %= 4
    t_done = time.monotonic()
    writer.write(encode(Disconnect(), V))
    writer.close()
    return {"t_start": t_start, "t_done": t_done}


async def _subscribe(
    port: int, count: int, ready: Any, time_limit: float
) -> dict[str, float | int]:
    """Receives and acknowledges; PUBLISHes of the one expected size are sliced out of the
    stream directly (anything else goes through the codec)."""
    reader, writer, decoder, backlog = await _connect(port, "bench-sub")
    writer.write(encode(Subscribe(1, (Subscription(REMOTE_FILTER, 1),)), V))
    packets = backlog
    while not any(isinstance(p, SubAck) for p in packets):
        packets = decoder.feed(await reader.read(1 << 16))
    ready.set()
    topic = REMOTE_TOPIC.encode()
    seen = bytearray(count)
    received = dups = 0
    t_first = t_last = 0.0
    deadline = time.monotonic() + time_limit
    acks: dict[int, bytes] = {}

    def take(payload: bytes, pid: int | None, out: list[bytes]) -> None:
        nonlocal received, dups
        seq = SEQ.unpack_from(payload)[0]
        if seq < count:
            if seen[seq]:
                dups += 1
            else:
                seen[seq] = 1
                received += 1
        if pid is not None:
            ack = acks.get(pid)
            if ack is None:
                ack = acks[pid] = encode(PubAck(pid), V)
            out.append(ack)

    early: list[bytes] = []
    for p in packets:
        if isinstance(p, Publish):
            take(p.payload, p.packet_id, early)
    if early:
        writer.write(b"".join(early))
    pending = b""
    while received < count:
        now = time.monotonic()
        try:
            data = await asyncio.wait_for(reader.read(1 << 18), max(0.01, deadline - now))
        except TimeoutError:
            break
        if not data:
            break
        now = time.monotonic()
        if not t_first:
            t_first = now
        t_last = now
        buf = pending + data if pending else data
        out: list[bytes] = []
        pos = 0
        n = len(buf)
        while pos + 2 <= n:
            b0 = buf[pos]
            remaining = buf[pos + 1]
            if remaining & 0x80:
                # A packet of 128 bytes or more: not one of ours (64 B payloads); skip it.
                length, shift, i = 0, 0, pos + 1
                while i < n and buf[i] & 0x80:
                    length |= (buf[i] & 0x7F) << shift
                    shift += 7
                    i += 1
                if i >= n:
                    break
                length |= buf[i] << shift
                if i + 1 + length > n:
                    break
                pos = i + 1 + length
                continue
            end = pos + 2 + remaining
            if end > n:
                break
            if b0 & 0xF6 == 0x32 and buf[pos + 4 : pos + 4 + len(topic)] == topic:
                pid_at = pos + 4 + len(topic)
                take(buf[pid_at + 2 : end], buf[pid_at] << 8 | buf[pid_at + 1], out)
            pos = end
        pending = buf[pos:]
        if out:
            writer.write(b"".join(out))
    writer.close()
    return {"received": received, "dups": dups, "t_first": t_first, "t_last": t_last}


def _publisher_entry(port: int, count: int, size: int, window: int, out: Any) -> None:
    out.put(asyncio.run(_publish(port, count, size, window)))


def _subscriber_entry(port: int, count: int, ready: Any, time_limit: float, out: Any) -> None:
    out.put(asyncio.run(_subscribe(port, count, ready, time_limit)))


# ----------------------------------------------------------------------------- one run


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_cores() -> tuple[float, float]:
    """(busy jiffies, all jiffies) of the machine so far, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return float(sum(fields) - idle), float(sum(fields))


@dataclass
class Run:
    broker: str
    phase: str
    rate: float = 0.0
    received: int = 0
    dups: int = 0
    seconds: float = 0.0
    host_busy: float = 0.0
    edge_cpu_us: float = 0.0  # the edge broker's CPU time per message: steadier than rates
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def run_one(broker: str, phase: str, args: argparse.Namespace) -> Run:
    ctx = multiprocessing.get_context("fork")
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-upstream-{broker}-"))
    up = Upstream(workdir, free_port())
    edge_port = free_port()
    run = Run(broker, phase)
    edge: subprocess.Popen[bytes] | None = None
    profiler: subprocess.Popen[bytes] | None = None
    busy0 = busy_cores()
    try:
        if phase == "live":
            up.start()
        edge = start_edge(broker, workdir, edge_port, up.port)
        sub_out = ctx.Queue()
        pub_out = ctx.Queue()
        ready = ctx.Event()
        subscriber = None
        if phase == "live":
            subscriber = ctx.Process(
                target=_subscriber_entry,
                args=(up.port, args.messages, ready, args.time_limit, sub_out),
            )
            subscriber.start()
            if not ready.wait(20):
                raise RuntimeError("subscriber not ready")
            time.sleep(args.settle)  # the bridge connects
        profiling = args.profile and broker == "edge-gateway" and edge is not None
        if profiling and phase == "live":
            profiler = start_profiler(args.profile, edge.pid, f"{broker}-{phase}")
        cpu0 = process_cpu(edge.pid) if phase == "live" else 0.0
        publisher = ctx.Process(
            target=_publisher_entry,
            args=(edge_port, args.messages, args.size, args.window, pub_out),
        )
        publisher.start()
        pub = pub_out.get(timeout=args.time_limit + 30)
        publisher.join(10)
        if phase == "drain":
            if profiling:
                profiler = start_profiler(args.profile, edge.pid, f"{broker}-{phase}")
            cpu0 = process_cpu(edge.pid)
            up.start()
            subscriber = ctx.Process(
                target=_subscriber_entry,
                args=(up.port, args.messages, ready, args.time_limit, sub_out),
            )
            subscriber.start()
        assert subscriber is not None
        sub = sub_out.get(timeout=args.time_limit + 30)
        run.edge_cpu_us = (process_cpu(edge.pid) - cpu0) / args.messages * 1e6
        subscriber.join(10)
        run.received = int(sub["received"])
        run.dups = int(sub["dups"])
        if phase == "live":
            run.seconds = sub["t_last"] - pub["t_start"]
        else:
            run.seconds = sub["t_last"] - sub["t_first"]
        run.extra["publish_s"] = pub["t_done"] - pub["t_start"]
        if run.received < args.messages:
            run.error = f"only {run.received} of {args.messages} arrived"
        elif run.seconds > 0:
            run.rate = run.received / run.seconds
    except Exception as exc:  # a failed run is reported, the others still run
        run.error = f"{type(exc).__name__}: {exc}"
    finally:
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(30)
        if edge is not None:
            stop_process(edge)
        up.stop()
        busy1 = busy_cores()
        total = busy1[1] - busy0[1]
        run.host_busy = (busy1[0] - busy0[0]) / total * (os.cpu_count() or 1) if total else 0.0
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return run


def start_profiler(directory: str, pid: int, label: str) -> subprocess.Popen[bytes]:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "250",
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(out / f"{label}.txt"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# ----------------------------------------------------------------------------- report


def table(runs: list[Run], brokers: list[str]) -> list[str]:
    lines = [
        f"{'broker':<20}{'phase':<7}{'runs':>5}{'median msg/s':>14}{'range':>20}"
        f"{'dups':>6}{'host cores busy':>17}{'edge CPU us/msg':>17}"
    ]
    medians: dict[tuple[str, str], float] = {}
    for phase in PHASES:
        for broker in brokers:
            mine = [r for r in runs if r.broker == broker and r.phase == phase]
            if not mine:
                continue
            good = [r.rate for r in mine if r.rate]
            median = statistics.median(good) if good else 0.0
            medians[(broker, phase)] = median
            span = f"{min(good):,.0f}-{max(good):,.0f}" if good else "-"
            dups = sum(r.dups for r in mine)
            busy = statistics.mean(r.host_busy for r in mine)
            cpu = statistics.median(r.edge_cpu_us for r in mine)
            lines.append(
                f"{broker:<20}{phase:<7}{len(mine):>5}{median:>14,.0f}{span:>20}"
                f"{dups:>6}{busy:>17.2f}{cpu:>17.1f}"
            )
            for r in mine:
                if r.error:
                    lines.append(f"    {broker} {phase}: {r.error}")
    lines.append("")
    for phase in PHASES:
        ours = medians.get(("edge-gateway", phase))
        for other in ("mosquitto", "mosquitto-nodelay"):
            theirs = medians.get((other, phase))
            if ours and theirs:
                lines.append(
                    f"{phase:<6} edge-gateway / {other}: {ours / theirs:.2f}x  (goal >= 0.5x)"
                )
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--size", type=int, default=64, help="payload bytes (at least 4)")
    p.add_argument("--window", type=int, default=100, help="publisher's unacknowledged max")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--brokers", default=",".join(BROKERS))
    p.add_argument("--phases", default=",".join(PHASES))
    p.add_argument("--time-limit", type=float, default=120.0)
    p.add_argument("--settle", type=float, default=1.5, help="seconds for bridges to connect")
    p.add_argument("--profile", metavar="DIR", help="py-spy the gateway (pip install py-spy)")
    p.add_argument("--keep", action="store_true", help="keep the work directories")
    p.add_argument("--json", metavar="FILE", help="write the runs as JSON")
    p.add_argument("--quick", action="store_true", help="2,000 messages, one round")
    args = p.parse_args(argv)
    if args.quick:
        args.messages, args.rounds, args.time_limit = 2000, 1, 60.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    brokers = [b for b in args.brokers.split(",") if b]
    phases = [ph for ph in args.phases.split(",") if ph]
    if not Path(MOSQUITTO).exists():
        print("needs mosquitto (Debian package) for the upstream", file=sys.stderr)
        return 2
    runs: list[Run] = []
    for index in range(args.rounds):
        order = brokers[index % len(brokers) :] + brokers[: index % len(brokers)]
        for phase in phases:
            for broker in order:
                run = run_one(broker, phase, args)
                runs.append(run)
                status = run.error or f"{run.rate:,.0f} msg/s"
                print(f"round {index + 1} {broker:<18} {phase:<6} {status}", flush=True)
    print()
    print(
        f"{args.messages:,} QoS 1 messages of {args.size} B, publisher window {args.window}, "
        f"{args.rounds} round(s), {os.cpu_count()} cores"
    )
    for line in table(runs, brokers):
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in runs], indent=1))
    return 0 if all(not r.error for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
