"""Gateway memory (RSS) with many device sessions and clients: issue 13's "RSS <= 40 MB with
1,000 device sessions and 100 clients".

A gateway subprocess is started with bench/bench_broker.py's bare config (one tcp listener,
persistence on, synchronous full) and samples its VmRSS/VmHWM at each stage:

  start-up        the bare config, no devices (a second process, for the baseline)
  sessions        the same config plus N declared eQ-3 thermostats (`devices.known`, kind
                  eq3): the device bridge gives each its persistent `dev-<id>` session at
                  start-up, exactly as for a user who declared N thermostats
  queued          a command (QoS 1 `<prefix>/<id>/set`) published to Q of them: without a
                  Bluetooth adapter they never wake, so the commands wait in their sessions
                  (retained `pending` lists and all), as they do for a sleeping thermostat
  clients         C MQTT 3.1.1 clients connected, each subscribed to one device's `#`
  restarted       the gateway stopped and started again on the same store, the clients
                  reconnected: the sessions and queued commands come back from SQLite

Each sample also splits the RSS by mapping (from /proc/<pid>/smaps): shared libraries and
other files, the malloc heap, other anonymous memory (pymalloc arenas, malloc's mmaps,
thread stacks). With --census a sitecustomize in the gateway answers SIGUSR2 with pymalloc's
own figures (sys._debugmallocstats) and the live objects by type: the Python heap's share.

Figures only, nothing is asserted. Machine load changes the figures little (memory, not time),
but other processes' page-cache pressure can: compare runs taken together.

Run: python bench/bench_rss.py [--devices 1000] [--queued 100] [--clients 100] [--census]
     [--env MALLOC_ARENA_MAX=2] [--set persistence.synchronous=normal] [--help]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen
from bench_broker import CLK_TCK, HOST, REPO, BrokerProcess

from gateway.mqtt.codec import encode
from gateway.mqtt.packets import PubAck, Publish

PREFIX = "gw"
MB = 1024.0

# Written into the gateway's PYTHONPATH with --census: on SIGUSR2 the gateway writes its
# Python heap figures to CENSUS_OUT (JSON). tracemalloc would cost more than it measures.
CENSUS_SITE = r"""
import os, signal, sys

def _census(signum, frame):
    import gc, json, tempfile
    fd, path = tempfile.mkstemp()
    saved = os.dup(2)
    os.dup2(fd, 2)
    try:
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)
    with open(path, encoding="utf-8", errors="replace") as f:
        stats = f.read()
    os.unlink(path)
    counts, sizes = {}, {}
    # The gateway froze what it restored at start-up (gc.freeze): count that too.
    frozen = gc.get_freeze_count()
    gc.unfreeze()
    objects = gc.get_objects()
    if frozen:
        gc.freeze()
    for obj in objects:
        name = type(obj).__name__
        counts[name] = counts.get(name, 0) + 1
        sizes[name] = sizes.get(name, 0) + sys.getsizeof(obj)
    del objects
    out = {"mallocstats": stats, "counts": counts, "sizes": sizes, "modules": len(sys.modules),
           "textual": "textual" in sys.modules, "bleak": "bleak" in sys.modules,
           "zeroconf": "zeroconf" in sys.modules, "aiohttp": "aiohttp" in sys.modules,
           "websockets": "websockets" in sys.modules, "yaml": "yaml" in sys.modules}
    tmp = os.environ["CENSUS_OUT"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f)
    os.replace(tmp, os.environ["CENSUS_OUT"])

signal.signal(signal.SIGUSR2, _census)
"""


# ------------------------------------------------------------------------- measuring


def status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (KB) and the thread count of a process."""
    wanted = {"VmRSS", "VmHWM", "Threads"}
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in wanted:
            out[key] = int(value.split()[0])
    return out


def smaps_split(pid: int) -> dict[str, int]:
    """RSS (KB) by kind of mapping: libpython and the other shared objects, other files,
    the brk heap, the main thread's stack, and the rest of anonymous memory (pymalloc
    arenas, malloc's mmaps and arenas, other threads' stacks)."""
    split: Counter[str] = Counter()
    name = ""
    size = 0
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            size = (end - start) // 1024
            name = fields[5] if len(fields) > 5 else ""
        elif fields[0] == "Rss:":
            split[_kind(name, size)] += int(fields[1])
    return dict(split)


def _kind(name: str, size_kb: int) -> str:
    if name == "[heap]":
        return "heap"
    if name == "[stack]":
        return "stack"
    if not name:
        return "anon"
    if name.startswith("["):
        return "other"
    if ".so" in name or "/libpython" in name:
        return "python-so" if "/lib-dynload/" in name or "python3" in name else "libs"
    return "files"


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the name may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def settle(pid: int, timeout: float = 180.0) -> dict[str, int]:
    """The status once the gateway is idle: under 5 % of a core and RSS within 64 KB over
    a second (bounded by `timeout`). The listeners take clients before every declared
    device's session is ready (after app.SERVE_WITHIN at the latest): waiting for the
    port alone would sample a gateway still creating sessions."""
    deadline = time.monotonic() + timeout
    last, cpu = status(pid), cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now, now_cpu = status(pid), cpu_seconds(pid)
        if abs(now["VmRSS"] - last["VmRSS"]) < 64 and now_cpu - cpu < 0.05:
            return now
        last, cpu = now, now_cpu
    print(f"  (not idle after {timeout:g} s: sampled anyway)")
    return last


def census(proc: BrokerProcess, out: Path, timeout: float = 30.0) -> dict[str, Any] | None:
    out.unlink(missing_ok=True)
    os.kill(proc.pid, signal.SIGUSR2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out.exists():
            data: dict[str, Any] = json.loads(out.read_text())
            return data
        time.sleep(0.2)
    return None


def _mallocstat(text: str, label: str) -> int:
    match = re.search(rf"^{re.escape(label)}\s*=\s*([\d,]+)", text, re.M)
    return int(match.group(1).replace(",", "")) if match else 0


# ------------------------------------------------------------------------- load


def known_devices(count: int) -> dict[str, dict[str, str]]:
    return {
        f"trv-{i:04d}": {"kind": "eq3", "address": f"00:1A:22:{i >> 8 & 255:02X}:{i & 255:02X}:01"}
        for i in range(count)
    }


async def queue_commands(port: int, device_ids: Sequence[str]) -> None:
    """One QoS 1 setpoint to each device, PUBACKed (so it is committed to the store)."""
    link, _ = await loadgen.Link.connect(HOST, port, "bench-rss-commander")
    for packet_id, device_id in enumerate(device_ids, start=1):
        command = Publish(
            topic=f"{PREFIX}/{device_id}/set",
            payload=json.dumps({"target_temp": 21.5}).encode(),
            qos=1,
            packet_id=packet_id,
        )
        link.writer.write(encode(command, loadgen.V))
        ack = await link.expect(PubAck)
        if ack.packet_id != packet_id:
            raise RuntimeError(f"PUBACK {ack.packet_id} for {packet_id}")
    await link.disconnect()


async def hold_clients(
    port: int, device_ids: Sequence[str], count: int, stop: asyncio.Event, ready: asyncio.Event
) -> None:
    """`count` clean clients, client i subscribed to `<prefix>/<device i>/#` at QoS 1 (it gets
    that device's retained topics), held until `stop`."""
    links: list[loadgen.Link] = []
    gate = asyncio.Semaphore(20)

    async def one(i: int) -> None:
        async with gate:
            link, _ = await loadgen.Link.connect(HOST, port, f"bench-rss-client-{i}")
            topic = f"{PREFIX}/{device_ids[i % len(device_ids)]}/#" if device_ids else "bench/#"
            await link.subscribe(topic, 1)
            links.append(link)

    try:
        await asyncio.gather(*(one(i) for i in range(count)))
        ready.set()
        # Retained messages arrive at QoS 1 and want PUBACKs; drain and ack them while held.
        await asyncio.gather(*(_ack_forever(link, stop) for link in links))
    finally:
        for link in links:
            link.writer.transport.abort()


async def _ack_forever(link: loadgen.Link, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            async with asyncio.timeout(0.5):
                packets = await link.read()
        except TimeoutError:
            continue
        for packet in packets:
            if isinstance(packet, Publish) and packet.qos == 1 and packet.packet_id:
                link.writer.write(loadgen.puback(packet.packet_id))


class Clients:
    """The clients, on an asyncio loop of their own thread, so samples can be taken."""

    def __init__(self, port: int, device_ids: Sequence[str], count: int) -> None:
        import threading

        self.loop = asyncio.new_event_loop()
        self.stop_event = asyncio.Event()
        self.ready = asyncio.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(
            target=self._run, args=(port, list(device_ids), count), daemon=True
        )

    def _run(self, port: int, device_ids: list[str], count: int) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(
                hold_clients(port, device_ids, count, self.stop_event, self.ready)
            )
        except BaseException as exc:  # reported by wait_ready
            self.error = exc

    def start(self, timeout: float = 60.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.ready.is_set():
            if self.error is not None:
                raise RuntimeError(f"clients failed: {self.error!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("clients did not connect in time")
            time.sleep(0.1)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(10)


# ------------------------------------------------------------------------- report


class Report:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.rows: list[dict[str, Any]] = []

    def sample(self, stage: str, proc: BrokerProcess) -> dict[str, Any]:
        row: dict[str, Any] = {"stage": stage, **settle(proc.pid), **smaps_split(proc.pid)}
        if self.args.census:
            data = census(proc, self.workdir / "census.json")
            if data is not None:
                stats = data["mallocstats"]
                row["pymalloc_total"] = _mallocstat(stats, "Total") // 1024
                row["pymalloc_used"] = _mallocstat(stats, "# bytes in allocated blocks") // 1024
                row["modules"] = data["modules"]
                row["census"] = data
        self.rows.append(row)
        self._print(row)
        return row

    def _print(self, row: dict[str, Any]) -> None:
        parts = [
            f"{row['stage']:<10} RSS {row['VmRSS'] / MB:6.1f} MB  HWM {row['VmHWM'] / MB:6.1f} MB",
            f"threads {row['Threads']:2d}",
            "| " + " ".join(f"{k} {row.get(k, 0) / MB:.1f}" for k in SPLIT_KEYS),
        ]
        if "pymalloc_total" in row:
            parts.append(
                f"| pymalloc arenas {row['pymalloc_total'] / MB:.1f} MB "
                f"({row['pymalloc_used'] / MB:.1f} in use), {row['modules']} modules"
            )
        print("  ".join(parts), flush=True)


SPLIT_KEYS = ("python-so", "libs", "files", "heap", "anon", "stack")


def print_summary(report: Report, args: argparse.Namespace) -> None:
    rows = {r["stage"]: r for r in report.rows}
    print()
    print("RSS split (MB): python-so = libpython and its extension modules, libs = other shared")
    print("objects, heap = brk heap (malloc's main arena), anon = pymalloc arenas, malloc's")
    print("mmaps, thread arenas and thread stacks, stack = the main thread's")
    base, sessions = rows.get("start-up"), rows.get("sessions")
    if base and sessions and args.devices:
        per = (sessions["VmRSS"] - base["VmRSS"]) / args.devices
        print(f"KB per device session (sessions - start-up) / {args.devices}: {per:.1f}")
    queued = rows.get("queued")
    if queued and sessions and args.queued:
        per = (queued["VmRSS"] - sessions["VmRSS"]) / args.queued
        print(f"KB per queued command (queued - sessions) / {args.queued}: {per:.1f}")
    clients = rows.get("clients")
    if clients and queued and args.clients:
        per = (clients["VmRSS"] - queued["VmRSS"]) / args.clients
        print(f"KB per subscribed client (clients - queued) / {args.clients}: {per:.1f}")
    for stage in ("clients", "restarted"):
        row = rows.get(stage)
        if row:
            print(
                f"issue 13 target RSS <= 40 MB with {args.devices} device sessions and "
                f"{args.clients} clients ({stage}): {row['VmRSS'] / MB:.1f} MB"
            )
    if args.census:
        last = report.rows[-1].get("census")
        if last:
            print("\nlive gc-tracked objects by type (count, shallow MB) at the last stage:")
            top = sorted(last["sizes"].items(), key=lambda kv: -kv[1])[:12]
            for name, size in top:
                print(f"  {name:<28} {last['counts'][name]:8d} {size / MB / MB:7.2f}")
            loaded = [
                k
                for k in ("textual", "bleak", "zeroconf", "aiohttp", "websockets", "yaml")
                if last.get(k)
            ]
            print(f"optional packages imported: {', '.join(loaded) or 'none'}")


# ------------------------------------------------------------------------- main


def _broker_args(args: argparse.Namespace, devices: int) -> argparse.Namespace:
    overrides = list(args.set)
    if devices:
        overrides.append(f"devices.known={json.dumps(known_devices(devices))}")
    return argparse.Namespace(
        synchronous="full",
        inflight=20,
        set=overrides,
        mosquitto="",
        gateway_tree=REPO,
        connections=0,
    )


def _sample_with_clients(
    report: Report, stage: str, proc: BrokerProcess, ids: list[str], count: int
) -> None:
    """The gateway's memory with ``count`` subscribed clients connected."""
    clients = Clients(proc.port, ids, count)
    clients.start()
    try:
        report.sample(stage, proc)
    finally:
        clients.close()


def run(args: argparse.Namespace, workdir: Path) -> Report:
    report = Report(args, workdir)
    ids = list(known_devices(args.devices))
    (workdir / "bare").mkdir()
    bare = BrokerProcess("gateway", workdir / "bare", _broker_args(args, 0))
    try:
        bare.start()
        report.sample("start-up", bare)
    finally:
        bare.stop()
    (workdir / "full").mkdir()
    full = BrokerProcess("gateway", workdir / "full", _broker_args(args, args.devices))
    try:
        full.start(timeout=120)
        report.sample("sessions", full)
        asyncio.run(queue_commands(full.port, ids[: args.queued]))
        report.sample("queued", full)
        _sample_with_clients(report, "clients", full, ids, args.clients)
        if args.restart:
            full.stop()
            full.start(timeout=120)
            _sample_with_clients(report, "restarted", full, ids, args.clients)
    finally:
        full.stop()
    return report


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--devices", type=int, default=1000, help="declared eQ-3 thermostats")
    p.add_argument("--queued", type=int, default=100, help="devices given a waiting command")
    p.add_argument("--clients", type=int, default=100, help="subscribed MQTT clients")
    p.add_argument("--no-restart", dest="restart", action="store_false",
                   help="skip the restarted stage")  # fmt: skip
    p.add_argument("--census", action="store_true",
                   help="ask the gateway for pymalloc figures and objects by type")  # fmt: skip
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="gateway environment, e.g. MALLOC_ARENA_MAX=2 (repeatable)")  # fmt: skip
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="gateway config override as in bench_broker.py (repeatable)")  # fmt: skip
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = p.parse_args(argv)
    if not 0 <= args.queued <= args.devices:
        p.error("--queued must be between 0 and --devices")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    loadgen.raise_nofile_limit()
    workdir = Path(tempfile.mkdtemp(prefix="bench-rss-"))
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--env expects NAME=VALUE, got {item!r}")
        os.environ[name] = value
    if args.census:
        site = workdir / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(CENSUS_SITE)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p
        )
        os.environ["CENSUS_OUT"] = str(workdir / "census.json")
    env = " ".join(args.env) or "default environment"
    print(
        f"gateway RSS: {args.devices} eq3 device sessions, {args.queued} queued commands, "
        f"{args.clients} clients; {env}; python {sys.version.split()[0]}",
        flush=True,
    )
    try:
        report = run(args, workdir)
        print_summary(report, args)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
