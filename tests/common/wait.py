"""Bounded waits: bounded only so that a broken crispd fails a test instead
of hanging it; nothing measures time."""

import time

WAIT = 60.0


def wait_until(what, check, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while True:
        v = check()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
