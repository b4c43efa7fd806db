"""The subscription trie alone: matches that miss its per-topic cache, adds and removes.

The broker caches a match per topic name, so bench_broker_core.py (a few topics) mostly
measures the cache; this is the cost on a topic seen for the first time, and of the
(un)subscribe that clears the cache. Figures only.

    python bench/bench_topic_tree.py [--subscriptions N] [--topics N]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.broker.records import SubscriptionRecord
from gateway.broker.topic_tree import SubscriptionTree
from gateway.compiled import describe as describe_build


def subscriptions(n: int) -> list[SubscriptionRecord]:
    """A home gateway's mix: exact device topics, per-room wildcards, a few catch-alls."""
    records = []
    for i in range(n):
        client = f"client-{i % 50}"
        match i % 10:
            case 0:
                topic_filter = f"home/room{i % 40}/+/state"
            case 1:
                topic_filter = f"home/room{i % 40}/#"
            case 2:
                topic_filter = f"$share/g{i % 3}/home/room{i % 40}/sensor{i}/set"
            case _:
                topic_filter = f"home/room{i % 40}/sensor{i}/state"
        records.append(SubscriptionRecord(client, topic_filter, i % 3))
    return records


def timed(name: str, n: int, fn: Callable[[], object]) -> None:
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    print(f"{name:<52} {n / elapsed:>12,.0f} ops/s  ({elapsed * 1e6 / n:5.2f} µs/op)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscriptions", type=int, default=2000)
    parser.add_argument("--topics", type=int, default=19_000, help="below the cache's limit")
    args = parser.parse_args()
    print(f"# gateway build: {describe_build()}")
    records = subscriptions(args.subscriptions)
    tree = SubscriptionTree()

    def add_all() -> None:
        for rec in records:
            tree.add(rec)

    timed(f"add {len(records)} subscriptions", len(records), add_all)
    # Distinct topics, each a cache miss; rooms 40-59 have no subscriber, the others a few.
    topics = [f"home/room{i % 60}/sensor{i % args.subscriptions}/state" for i in range(args.topics)]

    def match_all() -> None:
        for topic in topics:
            tree.match(topic)

    timed(f"match, cache miss ({len(topics)} topics)", len(topics), match_all)
    timed(f"match, cache hit ({len(topics)} topics)", len(topics), match_all)

    def remove_all() -> None:
        for rec in records:
            tree.remove(rec.client_id, rec.topic_filter)

    timed(f"remove {len(records)} subscriptions", len(records), remove_all)


if __name__ == "__main__":
    main()
