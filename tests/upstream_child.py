"""`python -m tests.upstream_child CONFIG UPSTREAM.pickle`: the gateway as `edge-gateway run`
starts it, with pickled upstream entries (tests/upstream_helpers.py) added to its config."""

from __future__ import annotations

import pickle
import sys
from dataclasses import replace
from pathlib import Path

from gateway.app import run
from gateway.config import load_config


def main(config_path: str, upstream_path: str) -> int:
    upstreams = pickle.loads(Path(upstream_path).read_bytes())
    config = replace(load_config(config_path), upstream=upstreams)
    return run(config, config_path=Path(config_path))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
