"""Log lines about limits being hit, rate-limited: a flood must not flood the log too."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimitedLog:
    """At most one line per ``interval`` seconds; the lines held back are counted into the
    next one that is written, so that nothing is lost from view."""

    def __init__(
        self,
        logger: logging.Logger,
        level: int,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._level = level
        self._interval = interval
        self._clock = clock
        self._next = float("-inf")
        self._held = 0

    def __call__(self, message: str, *args: object) -> None:
        now = self._clock()
        if now < self._next:
            self._held += 1
            return
        self._next = now + self._interval
        if self._held:
            message += " (and %d more like it since the last such line)"
            args = (*args, self._held)
            self._held = 0
        self._logger.log(self._level, message, *args)
