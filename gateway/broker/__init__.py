"""The pure broker core (no asyncio, no sockets, no SQLite): see ``core.Broker``."""

from gateway.broker.core import Broker, SessionInfo
from gateway.broker.stats import BrokerStats

__all__ = ["Broker", "BrokerStats", "SessionInfo"]
