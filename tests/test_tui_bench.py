"""bench/bench_tui.py keeps working (a short run; its figures are not judged here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_bench_tui_quick_prints_its_figures() -> None:
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_tui.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("TUI with 50 devices, 100 sessions, 100 msgs/s")
    rows = {line.split()[0]: line.split()[1:] for line in lines if line.startswith("  ")}
    for key in ("tab", "cursor", "filter-open", "filter-type", "dialog-open", "dialog-close"):
        count, median, p95, worst = rows[key]
        assert int(count) >= 1 and 0 < float(median) <= float(p95) <= float(worst)
