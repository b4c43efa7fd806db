"""Durability across kill -9: whatever commit() returned for is on disk after a restart."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from gateway.persistence import SqliteStore

REPO = Path(__file__).resolve().parent.parent

# Eight concurrent writers, so commits are grouped as under real load. Each line is printed
# only after its commit() returned: the parent treats a printed number as "acknowledged".
CHILD = r"""
import asyncio
import sys

from gateway.broker.records import Message, PutMessage, PutQueueEntry, QueueEntry
from gateway.persistence import SqliteStore


async def main(path: str) -> None:
    store = SqliteStore(path, synchronous=sys.argv[2])
    await store.open()
    print("ready", flush=True)

    async def writer(w: int) -> None:
        for i in range(1_000_000):
            n = i * 8 + w
            await store.commit(
                [
                    PutMessage(Message(n, f"t/{n}", n.to_bytes(8, "big") * 16, 1, False)),
                    PutQueueEntry(QueueEntry("sub", n, n, 1)),
                ]
            )
            sys.stdout.write(f"{n}\n")
            sys.stdout.flush()

    await asyncio.gather(*(writer(w) for w in range(8)))


asyncio.run(main(sys.argv[1]))
"""


def run_and_kill(path: Path, synchronous: str, kill_after: int) -> set[int]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), synchronous],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=env,
        text=True,
    )
    assert proc.stdout is not None
    acknowledged: set[int] = set()
    deadline = time.monotonic() + 30
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr
        while len(acknowledged) < kill_after:
            assert time.monotonic() < deadline, "child too slow"
            line = proc.stdout.readline()
            assert line, f"child died: {proc.stderr.read() if proc.stderr else ''}"
            acknowledged.add(int(line))
        os.kill(proc.pid, signal.SIGKILL)
        # Lines written before the kill are still in the pipe: they were acknowledged too.
        acknowledged.update(int(line) for line in proc.stdout.read().split())
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return acknowledged


async def test_acknowledged_commits_survive_sigkill(tmp_path: Path) -> None:
    rng = random.Random()
    for synchronous in ("full", "normal"):
        path = tmp_path / f"{synchronous}.db"
        acknowledged = run_and_kill(path, synchronous, kill_after=rng.randint(200, 800))

        store = SqliteStore(path)
        snap = await store.open()
        assert store.moved_aside is None
        stored = {m.msg_id for m in snap.messages}
        queued = {e.msg_id for e in snap.queue}
        assert acknowledged <= stored, sorted(acknowledged - stored)[:10]
        assert acknowledged <= queued
        # Each commit() is atomic: no message without its queue entry or the reverse.
        assert stored == queued
        for m in snap.messages:
            assert m.payload == m.msg_id.to_bytes(8, "big") * 16
        await store.commit([])  # and the recovered store takes commits again
        await store.close()
