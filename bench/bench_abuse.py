"""Abuse figures (issue 9 §2): what an attacker on the LAN costs the gateway and its users.
Figures only, no thresholds.

1. Password flood: 300 connections from 127.0.0.2 keep sending CONNECTs with a wrong
   password; real users (each a different user, so that no check is answered from the cache
   of recent logins) connect from 127.0.0.1 one after the other: their CONNACK latency p50 and
   max; the time a SIGHUP reload takes meanwhile (SIGHUP to READY=1 on NOTIFY_SOCKET).
2. Before the handshake: 1,500 TLS connections from one address, half silent and half
   stopping in the middle of their ClientHello: the broker's RSS growth (peak while they are
   held), the seconds until it closed them all, and how long a real TLS client from 127.0.0.1
   takes to connect meanwhile.
3. Back-pressure: a client that floods PINGREQs and reads nothing (4 KiB receive buffer):
   the broker's RSS growth during the flood, and an observer's QoS 0 round trip p50 before
   and during it.

Parts 2 and 3 run against Mosquitto too when /usr/sbin/mosquitto exists (same certificate,
same attack). Every broker is a fresh subprocess on free 127.0.0.1 ports. On a shared
machine the attackers (this process) and the broker compete for the same cores: compare
figures taken in one run, and the "before" with the "during" of the same broker.

`--gateway-src DIR` runs the gateway from another checkout (e.g. `git worktree add /tmp/old
<commit>`), for before/after figures of a change in one run; it must accept the same config.

Run: python bench/bench_abuse.py [--quick] [--parts flood,handshake,backpressure]
     [--no-mosquitto] [--gateway-src DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import yaml  # noqa: E402
from abuse_tools import (  # noqa: E402
    ATTACKER,
    HALF_CLIENT_HELLO,
    PINGREQ,
    NonReader,
    Observer,
    PasswordFlood,
    close_all,
    connect_packet,
    open_connections,
    rss_bytes,
    self_signed_cert,
    tls_connect,
    wait_closed,
)
from notify_helpers import NotifySocket, abstract_notify_socket  # noqa: E402

from gateway.auth.passwords import hash_password, write_password_file  # noqa: E402
from gateway.mqtt.codec import StreamDecoder  # noqa: E402
from gateway.mqtt.packets import PROTOCOL_V311, ConnAck  # noqa: E402

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Sizes:
    flood_connections: int
    flood_seconds: float
    users: int
    sockets: int
    connect_timeout: float
    backpressure_seconds: float


FULL = Sizes(300, 20.0, 20, 1500, 5.0, 20.0)
QUICK = Sizes(100, 3.0, 3, 300, 2.0, 3.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _raise_nofile() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


class Broker:
    """The gateway (`python -m gateway run`) or Mosquitto, with a TCP and a TLS listener."""

    def __init__(self, kind: str, workdir: Path, args: argparse.Namespace) -> None:
        self.kind = kind
        self.workdir = workdir
        self.port, self.tls_port = _free_port(), _free_port()
        self.cafile = workdir / "cert.pem"
        self.log_path = workdir / f"{kind}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.notify: NotifySocket | None = None
        self.src = Path(args.gateway_src).resolve() if args.gateway_src else REPO
        self.mosquitto = args.mosquitto

    def start(self, *, connect_timeout: float, password_file: Path | None = None) -> Broker:
        certfile, keyfile = self_signed_cert(self.workdir)
        env = dict(os.environ)
        if self.kind == "gateway":
            config = {
                "listeners": [
                    {"type": "tcp", "name": "tcp", "host": HOST, "port": self.port},
                    {
                        "type": "tls",
                        "name": "tls",
                        "host": HOST,
                        "port": self.tls_port,
                        "certfile": str(certfile),
                        "keyfile": str(keyfile),
                        "allow_anonymous": True,
                    },
                ],
                "persistence": {"path": str(self.workdir / "gw.db")},
                "limits": {"connect_timeout": connect_timeout},
                "auth": {"password_file": str(password_file) if password_file else None},
                "sys_interval": 0,
                "logging": {"level": "warning"},
            }
            path = self.workdir / "gateway.yaml"
            path.write_text(yaml.safe_dump(config))
            argv = [sys.executable, "-m", "gateway", "run", "--config", str(path)]
            self.notify = abstract_notify_socket()
            env.update(PYTHONPATH=str(self.src), NOTIFY_SOCKET=self.notify.address)
            cwd = self.src
        else:
            for path in (self.workdir, certfile, keyfile):
                path.chmod(0o755 if path.is_dir() else 0o644)  # mosquitto drops to its user
            path = self.workdir / "mosquitto.conf"
            path.write_text(
                f"listener {self.port} {HOST}\n"
                "allow_anonymous true\n"
                f"listener {self.tls_port} {HOST}\n"
                "allow_anonymous true\n"
                f"certfile {certfile}\nkeyfile {keyfile}\n"
                "persistence false\n"
                "log_dest stderr\nlog_type error\nlog_type warning\n"
            )
            argv = [self.mosquitto, "-c", str(path)]
            cwd = self.workdir
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                preexec_fn=_raise_nofile,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 0.2):
                break
            time.sleep(0.05)
        if self.notify is not None:
            self.notify.wait_for(lambda m: "READY" in m, timeout=30)
        time.sleep(0.3)  # let start-up allocations settle before measuring memory
        return self

    @property
    def rss(self) -> int:
        assert self.proc is not None
        return rss_bytes(self.proc.pid)

    def reload_seconds(self, timeout: float = 60) -> float:
        assert self.proc is not None and self.notify is not None
        self.notify.drain()
        started = time.monotonic()
        self.proc.send_signal(signal.SIGHUP)
        self.notify.wait_for(lambda m: m.get("RELOADING") == "1", timeout)
        self.notify.wait_for(lambda m: "READY" in m, timeout)
        return time.monotonic() - started

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.notify is not None:
            self.notify.close()


class RoundTrips:
    """An observer's QoS 0 round trips, one every 20 ms, in a thread until stop()."""

    def __init__(self, observer: Observer) -> None:
        self.observer = observer
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.samples.append(self.observer.round_trip(timeout=30))

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join(35)
        return self.samples


class PeakRss:
    """Samples a process's RSS every 50 ms in a thread; the highest seen."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.peak = broker.rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            with contextlib.suppress(OSError, RuntimeError):
                self.peak = max(self.peak, self.broker.rss)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.peak


def _mb(n: float) -> str:
    return f"{n / 2**20:+.1f} MB"


def _login_seconds(port: int, user: str, password: bytes, timeout: float) -> float | None:
    """CONNECT with a password from 127.0.0.1; seconds to a successful CONNACK (None: none
    within the timeout, or a refusal)."""
    started = time.perf_counter()
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(connect_packet(user, user, password, PROTOCOL_V311))
            decoder = StreamDecoder(protocol_version=PROTOCOL_V311)
            while True:
                data = sock.recv(4096)
                if not data:
                    return None
                for packet in decoder.feed(data):
                    if isinstance(packet, ConnAck):
                        ok = packet.reason_code == 0
                        return time.perf_counter() - started if ok else None
    except OSError:
        return None


# ------------------------------------------------------------------ 1. password flood


def part_flood(workdir: Path, args: argparse.Namespace, sizes: Sizes) -> list[str]:
    users = {f"user{i}": f"pw-{i}" for i in range(sizes.users)}
    users["alice"] = "alice-pw"
    passwords = workdir / "passwd"
    write_password_file(passwords, {u: hash_password(p) for u, p in users.items()})
    broker = Broker("gateway", workdir, args).start(connect_timeout=10, password_file=passwords)
    figures = []
    try:
        quiet_reload = broker.reload_seconds()
        flood = PasswordFlood(broker.port, connections=sizes.flood_connections).start()
        time.sleep(min(2.0, sizes.flood_seconds / 3))  # in full swing
        started = time.monotonic()
        budget = started + sizes.flood_seconds + 15  # a starved broker must not hold us up
        latencies: list[float] = []
        failed = 0
        reload_s: float | None = None
        for i in range(sizes.users):
            timeout = min(15.0, budget - time.monotonic())
            took = None
            if timeout > 0:
                took = _login_seconds(broker.port, f"user{i}", f"pw-{i}".encode(), timeout)
            if took is None:
                failed += 1
            else:
                latencies.append(took)
            if i == sizes.users // 2:
                reload_s = broker.reload_seconds(timeout=30)
            # Spread the logins over the flood.
            time.sleep(max(0.0, sizes.flood_seconds / sizes.users - (took or 0)))
        elapsed = time.monotonic() - started
        tally = flood.stop()
    finally:
        broker.stop()
    p50 = statistics.median(latencies) * 1000 if latencies else float("nan")
    worst = max(latencies) * 1000 if latencies else float("nan")
    answers = ", ".join(f"{k} {v}" for k, v in sorted(tally.items()))
    print(
        f"gateway   {sizes.flood_connections} attackers for {elapsed:.0f} s: real users' "
        f"CONNACK p50 {p50:.0f} ms, max {worst:.0f} ms ({len(latencies)} ok, {failed} not "
        f"answered in time, 15 s at most); reload {reload_s or float('nan'):.3f} s during "
        f"the flood ({quiet_reload:.3f} s without)\n          attackers were answered: {answers}"
    )
    figures.append(f"flood_login_p50_ms {p50:.1f}")
    figures.append(f"flood_login_max_ms {worst:.1f}")
    figures.append(f"flood_login_failed {failed}")
    figures.append(f"flood_reload_s {reload_s if reload_s is not None else float('nan'):.3f}")
    return figures


# ------------------------------------------------------------------ 2. before the handshake


def part_handshake(workdir: Path, args: argparse.Namespace, sizes: Sizes) -> list[str]:
    figures = []
    for kind in args.brokers:
        rundir = workdir / f"handshake-{kind}"
        rundir.mkdir()
        broker = Broker(kind, rundir, args).start(connect_timeout=sizes.connect_timeout)
        socks: list[socket.socket] = []
        try:
            tls_connect(broker.tls_port, broker.cafile, "warm-up")
            before = broker.rss
            peak = PeakRss(broker)
            opened_at = time.monotonic()
            half = sizes.sockets // 2
            socks = open_connections(broker.tls_port, sizes.sockets - half, source=ATTACKER)
            socks += open_connections(
                broker.tls_port, half, source=ATTACKER, first_bytes=HALF_CLIENT_HELLO
            )
            held = broker.rss - before
            legit = tls_connect(broker.tls_port, broker.cafile, "real-user", timeout=30)
            limit = sizes.connect_timeout + 10
            closed, _ = wait_closed(socks, limit)
            closed_after = time.monotonic() - opened_at if closed == len(socks) else None
            growth = peak.stop() - before
        finally:
            close_all(socks)
            broker.stop()
        when = (
            f"all closed {closed_after:.1f} s after the first was opened"
            if closed_after is not None
            else f"{len(socks) - closed} of {len(socks)} still open after {limit:.0f} s"
        )
        print(
            f"{kind:<9} {len(socks)} TLS sockets from {ATTACKER}: RSS {_mb(held)} once open, "
            f"peak {_mb(growth)}; {when}; a real TLS client connected in "
            f"{legit * 1000:.0f} ms meanwhile"
        )
        figures.append(f"{kind}_handshake_rss_mb {growth / 2**20:.1f}")
        figures.append(f"{kind}_handshake_closed_s {closed_after or float('nan'):.1f}")
        figures.append(f"{kind}_handshake_legit_ms {legit * 1000:.0f}")
    return figures


# ------------------------------------------------------------------ 3. back-pressure


def part_backpressure(workdir: Path, args: argparse.Namespace, sizes: Sizes) -> list[str]:
    figures = []
    for kind in args.brokers:
        rundir = workdir / f"backpressure-{kind}"
        rundir.mkdir()
        broker = Broker(kind, rundir, args).start(connect_timeout=10)
        try:
            observer = Observer(broker.port)
            quiet = observer.round_trips(200)
            before = broker.rss
            peak = PeakRss(broker)
            flooder = NonReader(broker.port, "flooder")
            watcher = RoundTrips(observer)
            started = time.monotonic()
            while time.monotonic() - started < sizes.backpressure_seconds:
                flooder.flood(
                    PINGREQ,
                    seconds=sizes.backpressure_seconds - (time.monotonic() - started),
                    max_requests=10**9,
                    stall=sizes.backpressure_seconds,
                )
            during = watcher.stop()
            growth = peak.stop() - before
            end = broker.rss - before
            flooder.close()
            observer.close()
        finally:
            broker.stop()
        p50_quiet = statistics.median(quiet) * 1000
        p50_during = statistics.median(during) * 1000 if during else float("nan")
        print(
            f"{kind:<9} PINGREQ flood for {sizes.backpressure_seconds:.0f} s from a client "
            f"that reads nothing ({flooder.sent:,} sent): RSS peak {_mb(growth)}, "
            f"{_mb(end)} at the end; observer QoS 0 round trip p50 {p50_quiet:.2f} ms before, "
            f"{p50_during:.2f} ms during ({len(during)} samples)"
        )
        figures.append(f"{kind}_backpressure_rss_mb {growth / 2**20:.1f}")
        figures.append(f"{kind}_backpressure_rt_before_ms {p50_quiet:.2f}")
        figures.append(f"{kind}_backpressure_rt_during_ms {p50_during:.2f}")
    return figures


PARTS: dict[str, Callable[[Path, argparse.Namespace, Sizes], list[str]]] = {
    "flood": part_flood,
    "handshake": part_handshake,
    "backpressure": part_backpressure,
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small and short (smoke test)")
    p.add_argument("--parts", default=",".join(PARTS), help="comma-separated: " + ",".join(PARTS))
    p.add_argument("--no-mosquitto", action="store_true", help="the gateway only")
    p.add_argument("--mosquitto", default="/usr/sbin/mosquitto", help="mosquitto binary")
    p.add_argument("--gateway-src", default=None, help="run the gateway from this checkout")
    args = p.parse_args()
    sizes = QUICK if args.quick else FULL
    args.brokers = ["gateway"]
    if not args.no_mosquitto and (Path(args.mosquitto).exists() or shutil.which(args.mosquitto)):
        args.brokers.append("mosquitto")
    _raise_nofile()
    with contextlib.suppress(OSError):
        load = Path("/proc/loadavg").read_text().split()[0]
        source = args.gateway_src or REPO
        print(f"{os.cpu_count()} CPUs, load average {load} at the start; gateway from {source}")
    figures: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-abuse-"))
    workdir.chmod(0o755)
    try:
        for name in args.parts.split(","):
            print(f"== {name}", flush=True)
            part_dir = workdir / name
            part_dir.mkdir()
            part_dir.chmod(0o755)
            figures += PARTS[name](part_dir, args, sizes)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("== figures")
    for line in figures:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
