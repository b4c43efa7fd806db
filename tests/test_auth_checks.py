"""Password checks under a flood (gateway/auth/checks.py): own threads, a bounded share per
source address, turns among addresses, cancellation, deadlines and back-off.

The hash is replaced by functions that block on events, so that the tests decide exactly
when a check is "running"; the end-to-end flood with real scrypt and real sockets is in
tests/test_flood.py.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.auth import authenticator as authenticator_module
from gateway.auth.authenticator import Authenticator
from gateway.auth.checks import (
    BACKOFF_INITIAL,
    FORGET_AFTER,
    CheckLimits,
    CheckRefused,
    PasswordChecks,
    source_address,
)
from gateway.auth.passwords import hash_password, write_password_file
from gateway.broker.effects import ConnectionInfo

RATE, BUSY = 0x9F, 0x89


class Gate:
    """A stand-in for the hash: each call blocks until released; records who ran, in order."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.running = threading.Semaphore(0)
        self._release: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def verify(self, name: str, result: bool = False) -> Callable[[], bool]:
        event = threading.Event()
        self._release[name] = event

        def run() -> bool:
            with self._lock:
                self.ran.append(name)
            self.running.release()
            assert event.wait(10), f"{name} never released"
            return result

        return run

    def release(self, name: str) -> None:
        self._release[name].set()

    def release_all(self) -> None:
        for event in self._release.values():
            event.set()

    async def started(self, count: int = 1) -> None:
        """Wait until ``count`` more checks are running in the pool."""
        for _ in range(count):
            got = await asyncio.to_thread(self.running.acquire, True, 5)
            assert got, f"no check started; ran so far: {self.ran}"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def gate() -> AsyncIterator[Gate]:
    g = Gate()
    yield g
    g.release_all()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_source_address() -> None:
    assert source_address("192.0.2.7:5000") == "192.0.2.7"
    assert source_address("::1:5000") == "::1"
    assert source_address("::ffff:192.0.2.7:5000") == "192.0.2.7"
    assert source_address("unix") == "unix"


async def test_checks_do_not_use_the_default_executor(gate: Gate) -> None:
    """Hashes waiting or running must not hold up asyncio.to_thread (a reload reads its
    config there): before, every check ran in the default executor."""
    checks = PasswordChecks(CheckLimits(workers=2, per_address=2, max_waiting=100))
    tasks = [
        asyncio.ensure_future(checks.check(f"10.0.0.{i}", gate.verify(f"c{i}"))) for i in range(40)
    ]
    await gate.started(2)
    assert await asyncio.wait_for(asyncio.to_thread(lambda: "reload read"), 5) == "reload read"
    gate.release_all()
    assert await asyncio.wait_for(asyncio.gather(*tasks), 10) == [False] * 40
    checks.close()


async def test_an_address_gets_a_bounded_share(gate: Gate) -> None:
    checks = PasswordChecks(CheckLimits(workers=1, per_address=2, max_waiting=100))
    first = asyncio.ensure_future(checks.check("10.0.0.1", gate.verify("a1")))
    second = asyncio.ensure_future(checks.check("10.0.0.1", gate.verify("a2")))
    await gate.started()
    # The third from the same address is refused at once, not queued.
    with pytest.raises(CheckRefused) as refused:
        await checks.check("10.0.0.1", gate.verify("a3"))
    assert refused.value.reason_code == RATE
    assert checks.stats.refused_rate == 1
    # Another address still gets its turn, before the address that already had one.
    other = asyncio.ensure_future(checks.check("10.0.0.2", gate.verify("b1", True)))
    await settle()
    gate.release("a1")
    await gate.started()
    assert gate.ran == ["a1", "b1"]
    gate.release("b1")
    assert await asyncio.wait_for(other, 5) is True
    await gate.started()
    gate.release("a2")
    assert await asyncio.wait_for(asyncio.gather(first, second), 5) == [False, False]
    assert gate.ran == ["a1", "b1", "a2"]
    checks.close()


async def test_one_check_per_address_at_a_time(gate: Gate) -> None:
    """Two threads, one address: its second check waits although a thread is free, so that
    one address never holds every thread."""
    checks = PasswordChecks(CheckLimits(workers=2, per_address=2, max_waiting=100))
    first = asyncio.ensure_future(checks.check("10.0.0.1", gate.verify("a1")))
    second = asyncio.ensure_future(checks.check("10.0.0.1", gate.verify("a2")))
    await gate.started()
    await settle()
    assert gate.ran == ["a1"]
    other = asyncio.ensure_future(checks.check("10.0.0.2", gate.verify("b1", True)))
    await gate.started()  # the free thread goes to the other address at once
    assert gate.ran == ["a1", "b1"]
    gate.release_all()
    await asyncio.wait_for(asyncio.gather(first, second, other), 5)
    checks.close()


async def test_too_many_waiting_is_refused_as_busy(gate: Gate) -> None:
    checks = PasswordChecks(CheckLimits(workers=1, per_address=1, max_waiting=2))
    running = asyncio.ensure_future(checks.check("10.0.0.1", gate.verify("r")))
    await gate.started()
    waiting = [
        asyncio.ensure_future(checks.check(f"10.0.1.{i}", gate.verify(f"w{i}"))) for i in range(2)
    ]
    await settle()
    with pytest.raises(CheckRefused) as refused:
        await checks.check("10.0.2.1", gate.verify("x"))
    assert refused.value.reason_code == BUSY
    assert checks.stats.refused_busy == 1
    gate.release_all()
    await asyncio.wait_for(asyncio.gather(running, *waiting), 5)
    assert "x" not in gate.ran
    checks.close()


async def test_a_check_whose_client_left_never_runs(gate: Gate) -> None:
    checks = PasswordChecks(CheckLimits(workers=1, per_address=2, max_waiting=100))
    running = asyncio.ensure_future(checks.check("10.0.0.1", gate.verify("r")))
    await gate.started()
    left = asyncio.ensure_future(checks.check("10.0.0.2", gate.verify("gone")))
    stays = asyncio.ensure_future(checks.check("10.0.0.3", gate.verify("stays", True)))
    await settle()
    left.cancel()
    await settle()
    assert checks.stats.cancelled == 1
    gate.release("r")
    await gate.started()
    gate.release("stays")
    assert await asyncio.wait_for(stays, 5) is True
    assert gate.ran == ["r", "stays"]
    await asyncio.wait_for(running, 5)
    # Its share is free again: the address may check twice more.
    again = [asyncio.ensure_future(checks.check("10.0.0.2", gate.verify(f"g{i}"))) for i in (1, 2)]
    await gate.started()
    gate.release_all()
    await asyncio.wait_for(asyncio.gather(*again), 5)
    checks.close()


async def test_a_running_check_is_let_finish_and_keeps_its_share(gate: Gate) -> None:
    """Cancelling a check whose hash already runs cannot stop the thread: the address's share
    stays taken until the hash is done, so reconnecting does not buy more hashes."""
    checks = PasswordChecks(CheckLimits(workers=2, per_address=1, max_waiting=100))
    task = asyncio.ensure_future(checks.check("10.0.0.1", gate.verify("h")))
    await gate.started()
    task.cancel()
    await settle()
    with pytest.raises(CheckRefused):
        await checks.check("10.0.0.1", gate.verify("more"))
    gate.release("h")
    for _ in range(100):
        if checks.stats.hashed:
            break
        await asyncio.sleep(0.01)
    assert checks.stats.hashed == 1 and checks.stats.failed == 1
    checks.close()


async def test_still_waiting_at_the_deadline_is_answered_busy(gate: Gate) -> None:
    loop = asyncio.get_running_loop()
    checks = PasswordChecks(CheckLimits(workers=1, per_address=2, max_waiting=100))
    running = asyncio.ensure_future(checks.check("10.0.0.1", gate.verify("r", True)))
    await gate.started()
    deadline = loop.time()  # checks use time.monotonic, which is the loop's clock here
    with pytest.raises(CheckRefused) as refused:
        await checks.check("10.0.0.2", gate.verify("late"), deadline=deadline)
    assert refused.value.reason_code == BUSY
    # ... while one that already runs past its deadline still gets its answer.
    gate.release("r")
    assert await asyncio.wait_for(running, 5) is True
    assert "late" not in gate.ran
    checks.close()


async def test_failures_back_off_per_address() -> None:
    clock = FakeClock()
    checks = PasswordChecks(CheckLimits(backoff_max=2.0), clock=clock)
    for expected in (BACKOFF_INITIAL, BACKOFF_INITIAL * 2, 1.0, 2.0, 2.0):
        assert not await asyncio.wait_for(checks.check("10.0.0.1", lambda: False), 5)
        assert checks.backoff_of("10.0.0.1") == expected
        assert checks.backoff_of("10.0.0.2") == 0
        clock.now += expected
    assert checks.stats.failed == 5
    # A check whose deadline falls inside the back-off is refused at once (0x9F), unrun.
    assert not await checks.check("10.0.0.1", lambda: False)  # (clock is past not_before)
    with pytest.raises(CheckRefused) as refused:
        await checks.check("10.0.0.1", lambda: True, deadline=clock.now + 1.0)
    assert refused.value.reason_code == RATE
    # Success forgets the address.
    clock.now += 2.0
    assert await asyncio.wait_for(checks.check("10.0.0.1", lambda: True), 5)
    assert checks.backoff_of("10.0.0.1") == 0
    # Failures long ago are forgotten too.
    assert not await asyncio.wait_for(checks.check("10.0.0.3", lambda: False), 5)
    clock.now += FORGET_AFTER + 1
    assert checks.backoff_of("10.0.0.3") == 0
    checks.close()


async def test_failed_logins_are_logged_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    checks = PasswordChecks(CheckLimits(backoff_max=4.0), clock=clock)
    with caplog.at_level(logging.INFO, logger="gateway.auth"):
        for _ in range(250):
            assert not await asyncio.wait_for(checks.check("10.0.0.1", lambda: False), 5)
            clock.now += 4.0
    lines = [r.getMessage() for r in caplog.records]
    # The first failure, the back-off reaching its cap (5th), then every 100th.
    assert lines == [
        "failed login from 10.0.0.1",
        "5 failed logins in a row from 10.0.0.1: its next checks wait 4.0 s each",
        "100 failed logins in a row from 10.0.0.1: its next checks wait 4.0 s each",
        "200 failed logins in a row from 10.0.0.1: its next checks wait 4.0 s each",
    ]
    checks.close()


async def test_a_check_waits_for_its_back_off() -> None:
    clock = FakeClock()
    checks = PasswordChecks(CheckLimits(backoff_max=4.0), clock=clock)
    assert not await asyncio.wait_for(checks.check("10.0.0.1", lambda: False), 5)
    ran = threading.Event()

    def verify() -> bool:
        ran.set()
        return True

    waiting = asyncio.ensure_future(checks.check("10.0.0.1", verify))
    # Real time passes (the pause is 0.25 s), the clock the checks read does not: no run.
    await asyncio.sleep(BACKOFF_INITIAL * 2)
    assert not ran.is_set() and not waiting.done()
    clock.now += BACKOFF_INITIAL
    assert await asyncio.wait_for(waiting, 5) is True
    checks.close()


async def test_the_table_of_addresses_is_bounded() -> None:
    clock = FakeClock()
    checks = PasswordChecks(CheckLimits(backoff_max=4.0), clock=clock, table_size=3)
    for i in range(5):
        assert not await asyncio.wait_for(checks.check(f"10.0.0.{i}", lambda: False), 5)
    assert [checks.backoff_of(f"10.0.0.{i}") > 0 for i in range(5)] == [
        False,
        False,
        True,
        True,
        True,
    ]
    checks.close()


async def test_authenticator_answers_refusals_with_their_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gate: Gate
) -> None:
    path = tmp_path / "users.pw"
    write_password_file(path, {"alice": hash_password("right")})
    checks = PasswordChecks(CheckLimits(workers=1, per_address=1, max_waiting=100))
    auth = Authenticator(path, checks=checks)
    blocker = gate.verify("blocker")
    monkeypatch.setattr(authenticator_module, "verify_password", lambda p, e: blocker())
    info = ConnectionInfo(conn_id=1, listener="lan", peer="192.0.2.9:4000", allow_anonymous=False)
    first = asyncio.ensure_future(auth.authenticate("alice", b"wrong", info))
    await gate.started()
    busy = await auth.authenticate("alice", b"wrong", info)
    assert (busy.ok, busy.reason_code) == (False, RATE)
    gate.release("blocker")
    assert (await asyncio.wait_for(first, 5)).reason_code == 0x86
    checks.close()
