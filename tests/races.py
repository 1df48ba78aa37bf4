"""Running one step from several threads at the same moment (race tests)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Outcome:
    """What one racer got: a value or an exception."""

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value, self.error = value, error

    @property
    def ok(self) -> bool:
        return self.error is None

    def __repr__(self) -> str:
        return f"Outcome({self.value!r})" if self.ok else f"Outcome(error={self.error!r})"


def race(racers: int, step: Callable[[int], Any], *, timeout: float = 60.0) -> list[Outcome]:
    """Runs ``step(i)`` in ``racers`` threads released together by a barrier; returns their outcomes."""
    barrier = threading.Barrier(racers, timeout=timeout)
    outcomes: list[Outcome] = [Outcome(error=TimeoutError("did not finish"))] * racers

    def run(i: int) -> None:
        try:
            barrier.wait()
            outcomes[i] = Outcome(step(i))
        except BaseException as exc:  # noqa: BLE001 - reported to the test, which asserts on it
            outcomes[i] = Outcome(error=exc)

    threads = [threading.Thread(target=run, args=(i,), name=f"racer-{i}") for i in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(t.is_alive() for t in threads), "a racer hung"
    return outcomes
