"""Reconnect delays: doubling from ``minimum`` to ``maximum``, each drawn at random from the
upper half of its step, so that gateways cut off together do not come back together."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, minimum: float, maximum: float, rng: random.Random | None = None) -> None:
        self.minimum = max(0.0, minimum)
        self.maximum = max(self.minimum, maximum)
        self._rng = rng if rng is not None else random.Random()
        self._step = self.minimum

    def next_delay(self) -> float:
        step = self._step
        self._step = min(self.maximum, max(step * 2, 0.001))
        return self._rng.uniform(step / 2, step)

    def reset(self) -> None:
        self._step = self.minimum
