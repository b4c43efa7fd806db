"""Durable storage of broker state (DESIGN §4): SQLite in WAL mode with group commit."""

from gateway.persistence.base import Store, StoreError, StoreStats
from gateway.persistence.memory import MemoryStore
from gateway.persistence.sqlite import SqliteStore

__all__ = ["MemoryStore", "SqliteStore", "Store", "StoreError", "StoreStats"]
