"""Progress lines for long work: how far, how fast, and how long until done.

A stage that runs for minutes on a large history must not look hung. Every long loop reports
through one :class:`Progress`: a line at most every ``interval`` seconds (and one at the end)
with the count done, the total when it is known, the rate and the estimated time left, e.g.

    tokenize train: 120,000/600,000 commits (20.0%), 2,950 commits/s, 41,000,000 tokens, ETA 2m43s

The lines go to the stage's logger with ``extra={"progress": True}``, so
:func:`repotune.logs.run_logged` sends them to the rule's log *and* to the terminal, while other
log lines stay in the log.
"""

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
PROGRESS = "progress"
"""The ``extra`` attribute that marks a log record as a progress line."""


def duration(seconds: float) -> str:
    """``seconds`` as ``1h02m03s``, ``2m03s`` or ``3s``."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    """Counts units of work and logs a progress line every ``interval`` seconds.

    ``total`` may be None when the amount of work is not known ahead (no estimate then).
    Counters passed to :meth:`advance` as keywords (``tokens=...``) are summed and shown too.
    """

    def __init__(
        self,
        log: logging.Logger,
        what: str,
        total: int | None = None,
        unit: str = "commits",
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log, self.what, self.total, self.unit = log, what, total, unit
        self.interval, self.clock = interval, clock
        self.done = 0
        self.counters: dict[str, int] = {}
        self.started = self.last = clock()

    def advance(self, units: int = 1, **counters: int) -> None:
        """Record ``units`` more done; log a line when ``interval`` seconds have passed."""
        self.done += units
        for name, value in counters.items():
            self.counters[name] = self.counters.get(name, 0) + value
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self.log.info("%s", self.line(now), extra={PROGRESS: True})

    def finish(self) -> float:
        """Log the closing line (count, rate, time taken) and return the seconds taken."""
        now = self.clock()
        elapsed = now - self.started
        self.log.info(
            "%s: done, %s in %s",
            self.what,
            self._counts(elapsed),
            duration(elapsed),
            extra={PROGRESS: True},
        )
        return elapsed

    def line(self, now: float) -> str:
        """The progress line at time ``now``."""
        elapsed = now - self.started
        text = f"{self.what}: {self._counts(elapsed)}"
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.total is not None and rate > 0:
            text += f", ETA {duration(max(0, self.total - self.done) / rate)}"
        return text

    def _counts(self, elapsed: float) -> str:
        done = f"{self.done:,}"
        if self.total is not None:
            share = 100 * self.done / self.total if self.total else 100.0
            done += f"/{self.total:,} {self.unit} ({share:.1f}%)"
        else:
            done += f" {self.unit}"
        rate = f"{self.done / elapsed:,.0f} {self.unit}/s" if elapsed > 0 else f"- {self.unit}/s"
        extra = "".join(f", {value:,} {name}" for name, value in self.counters.items())
        return f"{done}, {rate}{extra}"


def tracked(items: Iterable[T], progress: Progress, size: Callable[[T], int]) -> Iterator[T]:
    """Yield ``items`` unchanged, advancing ``progress`` by ``size(item)`` for each."""
    for item in items:
        yield item
        progress.advance(size(item))
