"""Progress of long work: a bar on a terminal (tqdm), plain log lines otherwise (CI logs, Prefect, files)."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm

log = logging.getLogger("pipeline")
LOG_STEPS = 10  # without a terminal: one line per tenth of the way


class Progress:
    """`advance(n)` as work is done; `total` may change on the way (a training session that stops early).
    `log_lines=False` where the work already logs its own milestones (training logs every evaluation)."""

    def __init__(self, desc: str, total: int, unit: str = "it", log_lines: bool = True):
        self.desc, self.total, self.unit, self.log_lines, self.done = desc, total, unit, log_lines, 0
        self.logged = 0
        shown = sys.stderr.isatty() and int(os.environ.get("RANK", "0")) == 0 and log.isEnabledFor(logging.INFO)
        self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True) if shown else None

    def advance(self, n: int = 1, total: int | None = None) -> None:
        self.done += n
        if total is not None and total != self.total:
            self.total = total
            if self.bar:
                self.bar.total = total
        if self.bar:
            self.bar.update(n)
        elif self.log_lines and self.total and self.done * LOG_STEPS // self.total > self.logged:
            self.logged = self.done * LOG_STEPS // self.total
            log.info("%s: %d/%d %s (%d%%)", self.desc, self.done, self.total, self.unit,
                     100 * self.done // self.total)

    def close(self) -> None:
        if self.bar:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextmanager
def timed(stages: dict[str, float], name: str) -> Iterator[None]:
    """Add the block's wall time to `stages[name]` (seconds): the breakdowns of a session and of the flow's version."""
    start = time.perf_counter()
    try:
        yield
    finally:
        stages[name] = stages.get(name, 0.0) + time.perf_counter() - start
