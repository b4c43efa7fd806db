"""Bluetooth LE devices: advertisement parsers (pure) and, around them, the bleak-based I/O."""
