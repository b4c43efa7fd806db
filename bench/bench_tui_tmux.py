"""Key-to-screen latency of `edge-gateway tui` through a real terminal (tmux), against a real
gateway in demo mode.

bench_tui.py measures inside the process (Textual's Pilot); this one measures what a user
sees: a key is typed into a tmux pane (`tmux send-keys`), and the time until the pane shows
its effect (`tmux capture-pane`, polled) is recorded. Both the gateway and the TUI run as
users run them (`python -m gateway ...`) from `--repo` (default: this checkout), so the same
script measures an older checkout for a before/after figure.

    python bench/bench_tui_tmux.py [--rounds 20] [--size 80x24] [--repo PATH]

Figures include the polling of capture-pane (a few ms per poll on a small machine): they are
an upper bound of what the terminal shows.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

# (name, key, what the pane shows once the key took effect)
STEPS: tuple[tuple[str, str, Callable[[str], bool]], ...] = (
    ("tab", "2", lambda pane: "Client" in pane),
    ("tab-back", "1", lambda pane: "Kind" in pane),
    ("cursor", "Down", lambda pane: ">demo-sensor" in pane),  # the selected row has a ">"
    ("cursor-back", "Up", lambda pane: ">demo-plug" in pane),
    ("filter-open", "/", lambda pane: "filter:" in pane),
    ("filter-close", "Escape", lambda pane: "filter:" not in pane),
    ("dialog-open", "s", lambda pane: "Send a command" in pane),
    ("dialog-close", "Escape", lambda pane: "Send a command" not in pane),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Tmux:
    def __init__(self, name: str) -> None:
        self.base = ["tmux", "-L", name]

    def run(self, *args: str) -> str:
        return subprocess.run(
            [*self.base, *args], check=True, capture_output=True, text=True
        ).stdout

    def pane(self) -> str:
        return self.run("capture-pane", "-p", "-t", "bench")

    def wait(self, done: Callable[[str], bool], timeout: float = 10.0, raw: bool = False) -> float:
        began = time.perf_counter()
        while time.perf_counter() - began < timeout:
            if done(self.pane()):
                return time.perf_counter() - began
        raise TimeoutError(f"the pane never showed it:\n{self.pane()}")

    def key(self, key: str, done: Callable[[str], bool]) -> float:
        began = time.perf_counter()
        self.run("send-keys", "-t", "bench", key)
        self.wait(done)
        return time.perf_counter() - began


def config_text(directory: Path, port: int) -> str:
    return f"""
listeners:
  - {{type: tcp, host: 127.0.0.1, port: {port}}}
  - {{type: unix, path: {directory / "gw.sock"}, admin: true}}
persistence: {{path: {directory / "gw.db"}}}
devices: {{ble: {{enabled: false}}}}
demo: true
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--size", default="80x24")
    parser.add_argument("--repo", type=Path, default=HERE)
    args = parser.parse_args()
    if shutil.which("tmux") is None:
        print("tmux is not installed", file=sys.stderr)
        return 2
    width, height = (int(n) for n in args.size.split("x"))
    repo = args.repo.resolve()
    env = dict(os.environ, PYTHONPATH=str(repo))
    tmux = Tmux(f"tuibench-{os.getpid()}")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        port = free_port()
        (directory / "config.yaml").write_text(config_text(directory, port))
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(directory / "config.yaml")],
            cwd=directory,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 20
            while not (directory / "gw.sock").exists():
                if time.monotonic() > deadline or gateway.poll() is not None:
                    raise RuntimeError("the gateway did not start")
                time.sleep(0.05)
            command = (
                f"cd {directory} && PYTHONPATH={repo} TERM=xterm-256color "
                f"{sys.executable} -m gateway tui --socket {directory / 'gw.sock'}"
            )
            tmux.run("new-session", "-d", "-s", "bench", "-x", str(width), "-y", str(height),
                     command)  # fmt: skip
            started = time.perf_counter()
            tmux.wait(lambda pane: "demo-thermostat" in pane, timeout=30)
            first = time.perf_counter() - started
            times: dict[str, list[float]] = {name: [] for name, _, _ in STEPS}
            for _ in range(args.rounds):
                for name, key, done in STEPS:
                    times[name].append(tmux.key(key, done))
                    time.sleep(0.05)  # let the screen settle before the next key
        finally:
            subprocess.run([*tmux.base, "kill-server"], capture_output=True)
            gateway.terminate()
            gateway.wait(10)
    print(f"TUI through tmux ({width}x{height}), demo gateway, {args.rounds} rounds, {repo}")
    print(f"  start-to-devices {first * 1000:.0f} ms")
    print(f"  {'key':<14}{'n':>4}{'median':>9}{'p95':>9}{'worst':>9}  (ms)")
    for name, values in times.items():
        values.sort()
        p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
        print(f"  {name:<14}{len(values):>4}{statistics.median(values) * 1000:>9.1f}"
              f"{p95 * 1000:>9.1f}{values[-1] * 1000:>9.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
