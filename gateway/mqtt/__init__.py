"""MQTT 3.1.1 / 5.0 protocol layer: packets, sans-I/O codec, topic aliases, typed errors.

Standard library only; no asyncio and no sockets here (DESIGN.md §5).
"""
