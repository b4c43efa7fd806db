"""A real Mosquitto (Debian's /usr/sbin/mosquitto) for tests: started on a free loopback port
with a throw-away config, stopped, frozen (SIGSTOP), thawed and killed by its PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def available() -> bool:
    return Path(MOSQUITTO).exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """One mosquitto process. ``extra`` lines go into its config after the listener line
    (e.g. ``password_file``, ``certfile``, a bridge ``connection`` block). Its queues for
    offline sessions have no limit (the stock 1,000 would drop what the tests count)."""

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        *,
        extra: Iterable[str] = (),
        allow_anonymous: bool = True,
        persistent: bool = False,
        name: str = "mosquitto",
    ) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.extra = list(extra)
        self.allow_anonymous = allow_anonymous
        # Sessions kept in a file across a clean stop (SIGTERM) and the next start.
        self.persistent = persistent
        self.name = name
        self.conf = directory / f"{name}.conf"
        self.log_path = directory / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self) -> None:
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
            *(
                ["persistence true", f"persistence_location {self.directory}/"]
                if self.persistent
                else ["persistence false"]
            ),
            "max_queued_messages 0",  # no limit: the tests count what arrives
            # Run as root (a CI container), mosquitto would switch to its own user, which
            # cannot write its persistence file into the test's private directory.
            *(["user root"] if os.geteuid() == 0 else []),
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            *self.extra,
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> Mosquitto:
        self.write_config()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"mosquitto did not start: {self.log_path.read_text()[-2000:]}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def freeze(self) -> None:
        """SIGSTOP: its connections stay open, nothing is answered."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: an outage (with `persistence false`, its sessions are gone)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a frozen process dies too, but say so
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
