"""Errors that cross from the device layer to the gateway's answers."""

from __future__ import annotations


class InvalidCommand(ValueError):
    """The command cannot be expressed for this device (unknown key, value out of range).

    Raised before anything reaches the device; sending the same command again cannot help,
    so it is answered ``failed`` (reason ``invalid``) at once instead of being retried.
    """
