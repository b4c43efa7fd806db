"""Smoke run of the end-to-end broker benchmark: every workload runs and reports a rate.

No performance threshold: only that the script works against the real gateway subprocess.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROWS = (
    "qos0-fanin",
    "qos1-clean",
    "qos1-persistent",
    "offline-enqueue",
    "offline-drain",
    "idle-conns",
)


def test_bench_broker_quick_runs_every_workload() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_broker.py"), "--quick", "--no-mosquitto"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ROWS:
        match = re.search(
            rf"^gateway\s+{re.escape(name)}\s+([\d,]+\.\d) (msgs/s|conns/s)\s+(\d+)/(\d+)",
            proc.stdout,
            re.MULTILINE,
        )
        assert match is not None, f"no result line for {name}:\n{proc.stdout}"
        assert float(match[1].replace(",", "")) > 0, match[0]
        # Everything sent in the quick run arrives: nothing here should ever be lost.
        assert match[3] == match[4], match[0]
    assert re.search(r"^mosquitto\s", proc.stdout, re.MULTILINE) is None  # --no-mosquitto
    assert "issue 2 target" in proc.stdout
