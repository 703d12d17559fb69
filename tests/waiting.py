"""Waiting on a condition with a deadline, instead of sleeping a guessed time and hoping it was enough."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], what: str, timeout: float = 60.0, interval: float = 0.01) -> T:
    """Call `condition` until it returns something truthy and return that; fail the test after `timeout` s.

    `what` names the awaited state in the failure ("timed out after 60 s waiting for <what>"). The condition is
    always called once more after the deadline, so a slow machine fails only when the state really never came.
    """
    deadline = time.monotonic() + timeout
    while True:
        late = time.monotonic() > deadline
        result = condition()
        if result:
            return result
        if late:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
