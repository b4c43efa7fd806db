"""Password checks that a flood of wrong passwords cannot turn against everyone else.

scrypt is slow on purpose (~50 ms on a desktop core, several times that on a Pi). Run in
asyncio's default executor, 300 connections sending wrong passwords queued hundreds of hashes
ahead of every real user, and ahead of everything else that uses that pool (a reload reads
its config there). So:

* the hashing has its own few threads, never the default executor;
* a source address has at most ``per_address`` checks waiting or running; a CONNECT beyond
  that is refused at once, never queued;
* one check per address runs at a time and addresses take turns, so a user connecting from
  another address waits for at most one hash per busy address, not for a queue;
* every failed check from an address doubles the pause before its next one (capped); a
  success forgets the address; the table of addresses is bounded and forgets old entries;
* a check whose client left is dropped unless its hash already runs; one still waiting at
  the CONNECT's deadline is refused as "busy" so that the client is told, not cut off.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("gateway.auth")

# MQTT 5 CONNACK reasons of a refused check (3.1.1 clients get return code 3, "server
# unavailable", for both: 3.1.1 has nothing closer, and "bad user name or password" would be
# a lie that makes a client give up or ask its user for a password that may be right).
CONNECTION_RATE_EXCEEDED = 0x9F  # this address: too many checks at once, or backing off
SERVER_BUSY = 0x89  # every address: too many checks waiting, or the deadline passed

BACKOFF_INITIAL = 0.25  # seconds before the next check after a first failure; then doubled
FORGET_AFTER = 600.0  # seconds after an address's last failure that its back-off is forgotten
TABLE_SIZE = 4096  # addresses remembered with failures; the oldest are forgotten first
_LOG_EVERY = 1000  # refusals: the first one is logged, then every 1000th


@dataclass(frozen=True, slots=True)
class CheckLimits:
    workers: int = 2  # threads hashing passwords (fixed once the gateway runs)
    per_address: int = 2  # checks waiting or running per source address
    max_waiting: int = 64  # checks waiting for a thread, all addresses together
    backoff_max: float = 4.0  # longest pause after failures, seconds (0: no back-off)


class CheckRefused(Exception):
    """The check was not run; ``reason_code`` is the MQTT 5 CONNACK reason to answer with."""

    def __init__(self, reason_code: int, why: str) -> None:
        super().__init__(why)
        self.reason_code = reason_code


@dataclass(slots=True)
class CheckStats:
    hashed: int = 0  # checks run to the end
    failed: int = 0  # ... of which the password did not match
    refused_rate: int = 0  # refused at once: the address had its share, or backs off too long
    refused_busy: int = 0  # refused: too many waiting overall, or still waiting at the deadline
    cancelled: int = 0  # dropped before they ran: the client went away


@dataclass(eq=False, slots=True)
class _Job:
    address: str
    verify: Callable[[], bool]
    done: asyncio.Future[bool]
    started: bool = False
    dropped: bool = False


@dataclass(slots=True)
class _Failures:
    count: int = 0
    not_before: float = 0.0
    last: float = 0.0


def source_address(peer: str) -> str:
    """The address part of a ConnectionInfo.peer ("192.0.2.7:5000", "::1:5000", "unix").

    IPv4-mapped IPv6 addresses are folded onto IPv4, so that a dual-stack listener does not
    give one host two budgets.
    """
    host, sep, port = peer.rpartition(":")
    if not sep or not port.isdigit():
        return peer
    try:
        parsed = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


def _backoff(failures: int, cap: float) -> float:
    if cap <= 0 or failures <= 0:
        return 0.0
    return float(min(BACKOFF_INITIAL * 2 ** min(failures - 1, 30), cap))


class PasswordChecks:
    """Runs password checks in a small pool, fairly among source addresses (module doc).

    One instance lives as long as the gateway: a reload builds a new Authenticator but keeps
    this, so that neither the back-off of an attacker nor the threads start over.
    """

    def __init__(
        self,
        limits: CheckLimits = CheckLimits(),
        *,
        clock: Callable[[], float] = time.monotonic,
        table_size: int = TABLE_SIZE,
    ) -> None:
        self.limits = limits
        self.stats = CheckStats()
        self._clock = clock
        self._table_size = table_size
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, limits.workers), thread_name_prefix="password-check"
        )
        self._workers = max(1, limits.workers)
        self._waiting: dict[str, collections.deque[_Job]] = {}  # order = whose turn is next
        self._waiting_count = 0
        self._running: set[str] = set()  # addresses with a hash under way
        self._jobs: dict[str, int] = {}  # per address: waiting + running
        self._failures: collections.OrderedDict[str, _Failures] = collections.OrderedDict()
        self._timer: asyncio.TimerHandle | None = None

    def configure(self, limits: CheckLimits) -> None:
        """New limits for the next checks (reload); the number of threads stays as it is."""
        self.limits = limits

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    def backoff_of(self, address: str) -> float:
        """Seconds the next check from ``address`` must wait (0 if none)."""
        now = self._clock()
        return max(0.0, self._ready_at(address, now) - now)

    async def check(
        self, address: str, verify: Callable[[], bool], deadline: float | None = None
    ) -> bool:
        """Run ``verify`` (a password hash comparison) in the pool when it is this address's
        turn; its result. ``deadline`` (on the clock given) is when the client stops
        waiting. Raises CheckRefused when the check is not run."""
        limits = self.limits
        now = self._clock()
        if self._jobs.get(address, 0) >= limits.per_address:
            self._refuse(CONNECTION_RATE_EXCEEDED, address, "checks already under way")
        if self._waiting_count >= limits.max_waiting:
            self._refuse(SERVER_BUSY, address, "too many checks waiting")
        if deadline is not None and self._ready_at(address, now) > deadline:
            self._refuse(CONNECTION_RATE_EXCEEDED, address, "backing off after failed logins")
        job = _Job(address, verify, asyncio.get_running_loop().create_future())
        self._jobs[address] = self._jobs.get(address, 0) + 1
        self._waiting.setdefault(address, collections.deque()).append(job)
        self._waiting_count += 1
        self._dispatch()
        try:
            if deadline is not None and not job.started:
                await asyncio.wait({job.done}, timeout=max(0.0, deadline - self._clock()))
                if not job.started:
                    self._refuse(SERVER_BUSY, address, "still waiting at the connect timeout")
            return await job.done
        except asyncio.CancelledError:
            if not job.started:
                self.stats.cancelled += 1
            raise
        finally:
            if not job.started:
                self._drop(job)

    # --- scheduling -------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Start waiting checks while threads are free: each address in turn, skipping those
        with a hash running or a back-off still on; wake up again when one ends."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        now = self._clock()
        wake_at: float | None = None
        while len(self._running) < self._workers and self._waiting:
            chosen: str | None = None
            for address in self._waiting:
                if address in self._running:
                    continue
                ready_at = self._ready_at(address, now)
                if ready_at > now:
                    wake_at = ready_at if wake_at is None else min(wake_at, ready_at)
                    continue
                chosen = address
                break
            if chosen is None:
                break
            queue = self._waiting.pop(chosen)
            job = queue.popleft()
            if queue:
                self._waiting[chosen] = queue  # back of the line for its next check
            self._start(job)
        if wake_at is not None and self._waiting:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(max(0.0, wake_at - now), self._dispatch)

    def _start(self, job: _Job) -> None:
        job.started = True
        self._waiting_count -= 1
        self._running.add(job.address)
        loop = asyncio.get_running_loop()
        future = self._pool.submit(job.verify)

        def finished(result: concurrent.futures.Future[bool]) -> None:
            try:
                loop.call_soon_threadsafe(self._finished, job, result)
            except RuntimeError:  # the loop closed while this hash ran (shutdown)
                pass

        future.add_done_callback(finished)

    def _finished(self, job: _Job, result: concurrent.futures.Future[bool]) -> None:
        address = job.address
        self._running.discard(address)
        self._release(address)
        if result.cancelled():
            if not job.done.done():
                job.done.cancel()
        elif (exc := result.exception()) is not None:
            if not job.done.done():
                job.done.set_exception(exc)
        else:
            ok = result.result()
            self.stats.hashed += 1
            if ok:
                self._failures.pop(address, None)
            else:
                self._failed(address)
            if not job.done.done():
                job.done.set_result(ok)
        self._dispatch()

    def _drop(self, job: _Job) -> None:
        """Forget a check that never started (its client left, or it was refused)."""
        if job.dropped:
            return
        job.dropped = True
        queue = self._waiting.get(job.address)
        if queue is not None:
            queue.remove(job)
            if not queue:
                del self._waiting[job.address]
        self._waiting_count -= 1
        self._release(job.address)
        if not job.done.done():
            job.done.cancel()

    def _release(self, address: str) -> None:
        left = self._jobs.get(address, 0) - 1
        if left > 0:
            self._jobs[address] = left
        else:
            self._jobs.pop(address, None)

    # --- back-off ---------------------------------------------------------------------------

    def _ready_at(self, address: str, now: float) -> float:
        failures = self._failures.get(address)
        if failures is None:
            return 0.0
        if now - failures.last > FORGET_AFTER:
            del self._failures[address]
            return 0.0
        return failures.not_before

    def _failed(self, address: str) -> None:
        now = self._clock()
        self.stats.failed += 1
        failures = self._failures.pop(address, None)
        if failures is None or now - failures.last > FORGET_AFTER:
            failures = _Failures()
        failures.count += 1
        failures.last = now
        cap = self.limits.backoff_max
        delay = _backoff(failures.count, cap)
        failures.not_before = now + delay
        self._failures[address] = failures  # most recent last: the oldest are forgotten first
        while len(self._failures) > self._table_size:
            self._failures.popitem(last=False)
        if failures.count == 1:
            log.info("failed login from %s", address)
        elif (
            cap > 0
            and delay >= cap
            and (_backoff(failures.count - 1, cap) < cap or failures.count % 100 == 0)
        ):
            # Logged when the pause reaches its cap, then every 100 failures: one line per
            # attacker every few minutes, however fast it tries.
            log.warning(
                "%d failed logins in a row from %s: its next checks wait %.1f s each",
                failures.count,
                address,
                delay,
            )

    # --- refusals ---------------------------------------------------------------------------

    def _refuse(self, reason_code: int, address: str, why: str) -> None:
        if reason_code == CONNECTION_RATE_EXCEEDED:
            self.stats.refused_rate += 1
            count = self.stats.refused_rate
        else:
            self.stats.refused_busy += 1
            count = self.stats.refused_busy
        if count == 1 or count % _LOG_EVERY == 0:
            log.warning(
                "password check refused for %s: %s [reason 0x%02X; %d such refusals so far]",
                address,
                why,
                reason_code,
                count,
            )
        raise CheckRefused(reason_code, why)

    def figures(self) -> list[tuple[str, str]]:
        """$SYS/broker/... topics (relative) and values."""
        s = self.stats
        return [
            ("connections/auth/checks", str(s.hashed)),
            ("connections/auth/failed", str(s.failed)),
            ("connections/auth/cancelled", str(s.cancelled)),
            ("connections/refused/auth_rate", str(s.refused_rate)),
            ("connections/refused/auth_busy", str(s.refused_busy)),
            ("connections/auth/waiting", str(self._waiting_count)),
            ("connections/auth/backing_off", str(len(self._failures))),
        ]
