"""The rate limiter's in-memory counts (portal.ratelimit_storage = "memory://", the default, and
each node's fallback while Redis is away) hold when many request threads count at once.

limits' MemoryStorage starts an expiry timer as it counts, without a lock: two threads at the
same instant could start two timers, or the same one twice, and that guest got a 500.
portal.extensions mends it until a release of limits does (see _mend_memory_storage).
"""

import sys
import threading
import time

import pytest
from limits.storage import MemoryStorage

import portal.extensions  # noqa: F401  (mends MemoryStorage as the app does)


@pytest.fixture
def thread_errors(monkeypatch):
    """Exceptions raised in any thread during the test, by type name."""
    errors = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_type.__name__))
    return errors


def test_threads_counting_at_one_instant_start_one_expiry_timer(monkeypatch, thread_errors):
    storage = MemoryStorage()
    storage.timer.join()  # the timer started with the storage has run: none is running now
    started = []

    class SlowTimer(threading.Timer):
        """A timer that takes a while to set up (so every thread finds no timer running before
        the first one starts) and then waits a second (so it is still running afterwards)."""

        def __init__(self, _interval, function):
            time.sleep(0.05)
            super().__init__(1.0, function)

        def start(self):
            started.append(self)
            super().start()

    monkeypatch.setattr(threading, "Timer", SlowTimer)
    barrier = threading.Barrier(8)
    counted = []

    def count(i):
        barrier.wait()
        counted.append(storage.incr(f"device:{i}", 60))

    threads = [threading.Thread(target=count, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert thread_errors == []
    assert counted == [1] * 8
    assert len(started) == 1
    started[0].join(5)


def test_many_threads_counting_and_expiring_raise_nothing(thread_errors):
    # Counts that expire after a second, read and raised by 32 threads for two seconds while
    # the expiry timer drops them: before the mend this raised in most runs (two timers at
    # once, or a KeyError in the timer). Thread switches as often as Python allows, to meet
    # the races sooner.
    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.00001)
    try:
        storage = MemoryStorage()
        stop = time.monotonic() + 2

        def count(i):
            n = 0
            while time.monotonic() < stop:
                storage.incr(f"device:{i}:{n % 50}", 1)
                n += 1

        threads = [threading.Thread(target=count, args=(i,)) for i in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        sys.setswitchinterval(previous)
    time.sleep(1.2)
    storage.incr("device:last", 1)  # starts one more expiry round
    time.sleep(0.2)
    assert thread_errors == []
    assert sorted(storage.storage) == ["device:last"]
