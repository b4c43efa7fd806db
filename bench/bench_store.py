"""Store throughput and commit latency for the broker's two durable hot paths.

  offline-enqueue   each message: commit([PutMessage, PutQueueEntry])  (target >= 25k msgs/s)
  qos1-persistent   each message: commit([PutMessage, PutQueueEntry]), then, once "delivered",
                    commit([DeleteQueueEntry, DeleteMessage])          (target >= 20k msgs/s)

Many concurrent producers stand in for many publishing connections; every commit() is awaited,
as the server awaits it before sending PUBACK. CPU/msg counts both threads (event loop and the
SQLite connection's) and includes building the ops. Run: python bench/bench_store.py [--help]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.broker.records import (
    DeleteMessage,
    DeleteQueueEntry,
    Message,
    PutMessage,
    PutQueueEntry,
    QueueEntry,
)
from gateway.persistence import SqliteStore


async def run(
    workload: str, synchronous: str, args: argparse.Namespace, db: Path, max_mb: int
) -> None:
    store = SqliteStore(
        db, synchronous=synchronous, group_window=args.window, max_size_bytes=max_mb << 20
    )
    await store.open()
    payload = b"x" * args.payload
    ids = itertools.count()
    latencies: list[float] = []
    per_producer = args.messages // args.concurrency
    clock = time.perf_counter

    async def producer(p: int) -> None:
        client = f"subscriber-{p % 16}"
        for _ in range(per_producer):
            n = next(ids)
            t0 = clock()
            await store.commit(
                [
                    PutMessage(Message(n, "bench/topic", payload, 1, False, created_at=0.0)),
                    PutQueueEntry(QueueEntry(client, n, n, 1)),
                ]
            )
            latencies.append(clock() - t0)
            if workload == "qos1-persistent":
                t0 = clock()
                await store.commit([DeleteQueueEntry(client, n), DeleteMessage(n)])
                latencies.append(clock() - t0)

    start, cpu_start = clock(), time.process_time()
    await asyncio.gather(*(producer(p) for p in range(args.concurrency)))
    elapsed, cpu = clock() - start, time.process_time() - cpu_start
    stats = store.stats
    await store.close()

    msgs = per_producer * args.concurrency
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    print(
        f"{workload:16} sync={synchronous:6} limit={max_mb:4d} MiB {msgs / elapsed:9.0f} msgs/s "
        f"{stats.ops / elapsed:8.0f} ops/s {cpu / msgs * 1e6:5.1f} µs CPU/msg  "
        f"commit p50 {p50:5.2f} ms p99 {p99:5.2f} ms  "
        f"{stats.commits:5d} transactions ({stats.ops / max(stats.commits, 1):6.1f} ops each, "
        f"avg {stats.avg_commit_ms:5.2f} ms, max {stats.max_commit_ms:6.2f} ms)"
    )


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for synchronous in args.synchronous:
            for workload in args.workload:
                for max_mb in args.max_size_mb:
                    db = Path(tmp) / f"{workload}-{synchronous}-{max_mb}.db"
                    await run(workload, synchronous, args, db, max_mb)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=40_000)
    parser.add_argument("--concurrency", type=int, default=200, help="concurrent producers")
    parser.add_argument("--payload", type=int, default=64, help="payload bytes")
    parser.add_argument("--window", type=float, default=0.002, help="group window (s)")
    parser.add_argument(
        "--synchronous", nargs="+", default=["full", "normal"], choices=["full", "normal", "off"]
    )
    parser.add_argument(
        "--workload",
        nargs="+",
        default=["offline-enqueue", "qos1-persistent"],
        choices=["offline-enqueue", "qos1-persistent"],
    )
    parser.add_argument("--dir", default=None, help="directory for the database files")
    parser.add_argument(
        "--max-size-mb",
        type=int,
        nargs="+",
        default=[0],
        help="persistence.max_size_mb (0 = no limit); several compare in one run",
    )
    parser.add_argument("--no-uvloop", action="store_true", help="use the default event loop")
    cli = parser.parse_args()
    if not cli.no_uvloop:
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass
    asyncio.run(main(cli))
