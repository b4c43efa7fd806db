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
    assert "issue 13 goal" in proc.stdout
    # Written to disk per 1,000 messages: the durable rows of the enqueue run cost something.
    enqueue = re.search(r"^offline-enqueue .* (\d+)$", proc.stdout, re.MULTILINE)
    assert enqueue is not None and int(enqueue[1]) > 0, proc.stdout


def test_bench_devices_quick_prints_its_figures() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_devices.py"), "all", "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    # adverts: the idle row, the fixed-rate row and the sweep, with adverts fed and states
    # received (columns: target, fed, received, per advert, CPU, ...).
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("target adverts/s"))
    rows = []
    for line in lines[header + 1 :]:
        if not line[:1].isdigit():
            break
        rows.append([cell.replace(",", "") for cell in line.split()])
    assert [row[0] for row in rows] == ["0", "200", "1000", "5000"], out
    for row in rows[1:]:
        assert int(row[1]) > 0 and int(row[2]) > 0, row
        assert row[4].endswith("%"), row
    assert re.search(r"^adverts: gateway CPU at 200 adverts/s: \d+\.\d% of one core", out, re.M)
    assert re.search(r"^adverts: max sustained adverts/s, each published: ", out, re.M)
    assert re.search(r"^adverts: max state publishes/s: [\d,]+ ", out, re.M)
    # restore: the quick store (50 devices x 3 commands) was restored, and is really usable.
    restored = re.search(r"^50 x 3\s+50\s+50\s+150\s+100\s+(\d+\.\d\d)\s+(\d+\.\d\d)\s", out, re.M)
    assert restored is not None, out
    assert "got 3 of its 3 commands in order" in out
    assert re.search(r"^restore: start-up restore time: \d+\.\d\d s", out, re.M)
    assert re.search(r"^restore: RSS growth: -?\d+\.\d MB", out, re.M)


def test_bench_wake_quick_prints_its_figures() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_wake.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = dict(line.split() for line in proc.stdout.splitlines()[1:] if line.strip())
    assert float(figures["rounds"]) == 3
    assert float(figures["wake_to_write_p50_ms"]) > 0
    assert float(figures["fake_bluez_connect_p50_ms"]) > 0


def test_bench_admin_quick_prints_the_table() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_admin.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "== Admin API cost" in out, out
    # The table: every workload in every mode, a rate and CPU per message; the cost columns
    # relative to "off" for the other two modes.
    for workload in ("qos0-fanin", "qos1-clean"):
        for mode in ("off", "idle", "watched"):
            row = re.search(
                rf"^{workload}\s+{mode}\s+1\s+([\d,]+)\s+(\d+\.\d\d)\s+(\S+)\s+(\S+)\s+(\S+)$",
                out,
                re.MULTILINE,
            )
            assert row is not None, f"no row for {workload} {mode}:\n{out}"
            assert int(row[1].replace(",", "")) > 0, row[0]
            if mode == "off":
                assert (row[3], row[4]) == ("-", "-"), row[0]
            else:
                assert re.fullmatch(r"[+-]\d+\.\d%", row[3]) and re.fullmatch(
                    r"[+-]\d+\.\d%", row[4]
                ), row[0]
    # The watcher really was subscribed: the runs say what it got.
    assert re.search(
        r"^watched\s+gateway\s+qos0-fanin\s.*\| watcher got \d+ messages \(", out, re.M
    )
    assert "did not deliver everything" not in out


def test_bench_abuse_quick_prints_its_figures() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_abuse.py"), "--quick", "--no-mosquitto"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    figures = dict(line.split() for line in out.split("== figures\n", 1)[1].splitlines())
    for name in (
        "flood_login_p50_ms",
        "flood_login_max_ms",
        "flood_reload_s",
        "gateway_handshake_rss_mb",
        "gateway_handshake_closed_s",
        "gateway_handshake_legit_ms",
        "gateway_backpressure_rss_mb",
        "gateway_backpressure_rt_before_ms",
        "gateway_backpressure_rt_during_ms",
    ):
        assert float(figures[name]) >= 0, (name, out)  # NaN (nothing measured) fails too
    assert figures["flood_login_failed"] == "0", out
    assert "mosquitto" not in out.split("== figures", 1)[1]


def test_bench_ws_prints_both_transports() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_ws.py"), "--messages", "500", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for qos in (0, 1):
        assert re.search(rf"^  qos{qos}: tcp\s+[\d,]+\s+ws\s+[\d,]+\s+msgs/s", proc.stdout, re.M)
    assert "Mosquitto websockets listener:" in proc.stdout


def test_bench_topic_tree_prints_its_build_and_figures() -> None:
    script = str(REPO / "bench" / "bench_topic_tree.py")
    proc = subprocess.run(
        [sys.executable, script, "--subscriptions", "200", "--topics", "500"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.startswith("# gateway build: ")
    for name in ("add 200", "match, cache miss", "match, cache hit", "remove 200"):
        assert re.search(rf"^{name}.*\(\s*[\d.]+ µs/op\)$", proc.stdout, re.M), proc.stdout


def test_bench_rss_small_run_prints_every_stage() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "bench_rss.py"),
            "--devices",
            "20",
            "--queued",
            "5",
            "--clients",
            "5",
            "--no-restart",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for stage in ("start-up", "sessions", "queued", "clients"):
        assert re.search(rf"^\s*{stage}\b.*\d+(\.\d+)? MB", proc.stdout, re.MULTILINE), (
            f"no {stage} line:\n{proc.stdout}"
        )
