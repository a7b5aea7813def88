"""A wall clock that leaves out the time the process was stopped, for the wall times of long benchmark runs.

A training of several hours is often paused: Ctrl-Z and ``fg``, or ``kill -STOP`` / ``kill -CONT`` of its
process group while something else needs the cores. ``time.perf_counter`` counts those pauses as training
time. :class:`RunningClock` does not: a daemon thread wakes every ``tick`` seconds, and a wake-up that comes
more than ``stop_after`` seconds after the previous one means that the whole process was not running; that gap,
less one tick, is counted as stopped. A busy process does not look stopped: the thread waits with the GIL
released and needs it for microseconds, which PyTorch's operators and Python's switch interval (5 ms) give it.
"""

from __future__ import annotations

import threading
import time

__all__ = ["RunningClock"]


class RunningClock:
    """Seconds of wall time since the clock started, without the time the process was stopped.

    Args:
        tick: seconds between the watching thread's wake-ups; the stopped time of each pause is known to
            about one tick.
        stop_after: a gap between two wake-ups longer than this counts as a pause (more than ``tick``).

    Example::

        clock = RunningClock()
        train()                       # paused for an hour with Ctrl-Z in between
        clock.elapsed()               # the training's seconds, the hour left out
        clock.stopped_seconds         # about 3600
        clock.close()

    It is also a context manager that closes itself.
    """

    def __init__(self, tick: float = 0.5, stop_after: float = 5.0) -> None:
        if not 0 < tick < stop_after:
            raise ValueError(f"need 0 < tick < stop_after, got tick={tick}, stop_after={stop_after}")
        self.tick = float(tick)
        self.stop_after = float(stop_after)
        self._lock = threading.Lock()
        self._start = self._last_wake = time.monotonic()
        self._stopped = 0.0
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="RunningClock", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._closed.wait(self.tick):
            self._wake(time.monotonic())

    def _wake(self, now: float) -> None:
        with self._lock:
            gap = now - self._last_wake
            if gap > self.stop_after:
                self._stopped += gap - self.tick
            self._last_wake = now

    @property
    def stopped_seconds(self) -> float:
        """The seconds counted as stopped so far."""
        with self._lock:
            return self._stopped

    def elapsed(self) -> float:
        """Wall seconds since the clock started, less the stopped seconds; after :meth:`close`, the reading at
        closing (with no thread watching, a later gap could not be told from a pause)."""
        if not self._closed.is_set():
            self._wake(time.monotonic())  # a pause that has just ended counts before the thread's next wake-up
        with self._lock:
            return self._last_wake - self._start - self._stopped

    def close(self) -> None:
        """Stop the watching thread and freeze the clock's readings."""
        if not self._closed.is_set():
            self._wake(time.monotonic())
            self._closed.set()
            self._thread.join()

    def __enter__(self) -> RunningClock:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
