"""lesionseg.utils.clock.RunningClock: wall time without the time the process was stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from lesionseg.utils.clock import RunningClock


def test_a_gap_between_wake_ups_longer_than_stop_after_counts_as_stopped_less_one_tick():
    """The watching thread's wake-ups, given explicit times: gaps up to ``stop_after`` are running time, a
    longer gap is a pause of the gap less one tick."""
    clock = RunningClock(tick=0.5, stop_after=5.0)
    clock.close()  # drive the wake-ups by hand
    start = clock._start
    for now in (0.5, 1.0, 5.9):  # 4.9 s: slow, not stopped
        clock._wake(start + now)
    assert clock.stopped_seconds == 0.0
    clock._wake(start + 5.9 + 60.5)  # stopped for about a minute
    assert clock.stopped_seconds == pytest.approx(60.0)
    clock._wake(start + 66.9)
    assert clock.stopped_seconds == pytest.approx(60.0)
    assert clock._last_wake - clock._start - clock.stopped_seconds == pytest.approx(6.9)


def test_a_running_process_is_not_stopped():
    with RunningClock(tick=0.05, stop_after=1.0) as clock:
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:  # busy, holding the GIL between bytecodes
            sum(range(1000))
        assert clock.stopped_seconds == 0.0
        assert 0.5 <= clock.elapsed() < 1.5


def test_readings_are_frozen_at_close():
    """Read after its ``with`` block, the clock gives its reading at closing: time after it is neither counted
    nor mistaken for a pause."""
    with RunningClock(tick=0.05, stop_after=0.2) as clock:
        time.sleep(0.1)
    closed = clock.elapsed()
    time.sleep(0.4)  # longer than stop_after, with no thread watching
    assert clock.elapsed() == closed and clock.stopped_seconds == 0.0
    clock.close()  # closing again changes nothing


@pytest.mark.parametrize("tick, stop_after", [(0, 1), (1, 1), (2, 1)])
def test_bad_settings_are_refused(tick, stop_after):
    with pytest.raises(ValueError, match="tick < stop_after"):
        RunningClock(tick=tick, stop_after=stop_after)


CHILD = """
import json, sys, time
from lesionseg.utils.clock import RunningClock
with RunningClock(tick=0.1, stop_after=1.0) as clock:
    start = time.monotonic()
    print("ready", flush=True)
    while time.monotonic() - start < 4.0:
        time.sleep(0.01)
    print(json.dumps({"elapsed": clock.elapsed(), "stopped": clock.stopped_seconds}), flush=True)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP and SIGCONT")
def test_kill_stop_and_cont_are_left_out_of_the_elapsed_time():
    """A real pause: a child process is stopped for 2.5 s of its 4 s; its clock counts about 1.5 s."""
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        os.kill(child.pid, signal.SIGSTOP)
        time.sleep(2.5)
        os.kill(child.pid, signal.SIGCONT)
        out, _ = child.communicate(timeout=30)
    finally:
        child.kill()
    reading = json.loads(out)
    assert reading["stopped"] == pytest.approx(2.5, abs=0.3)
    assert reading["elapsed"] + reading["stopped"] == pytest.approx(4.0, abs=0.3)
