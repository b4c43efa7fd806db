"""The persistence section: the SQLite store of sessions and messages."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.config.reader import Map

SYNCHRONOUS_MODES = ("off", "normal", "full", "extra")


@dataclass(frozen=True, slots=True)
class PersistenceConfig:
    enabled: bool = True
    path: Path = Path("edge-gateway.db")
    synchronous: str = "full"  # SQLite PRAGMA synchronous: off | normal | full | extra
    group_commit_ms: float = 0.0
    # Database and its WAL, in MiB; 0 = unlimited. A LAN client must not be able to fill the
    # SD card: 256 MiB holds many thousands of queued commands and readings.
    max_size_mb: int = 256


def read_persistence(section: Map) -> PersistenceConfig:
    defaults = PersistenceConfig()
    result = PersistenceConfig(
        enabled=section.boolean("enabled", defaults.enabled),
        path=section.file_path("path", defaults.path),
        synchronous=section.choice("synchronous", defaults.synchronous, SYNCHRONOUS_MODES),
        group_commit_ms=section.number("group_commit_ms", defaults.group_commit_ms, 0, 1000),
        max_size_mb=section.integer("max_size_mb", defaults.max_size_mb, 0),
    )
    section.finish()
    return result
