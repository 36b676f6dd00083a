"""Failpoints for fault-injection tests: PIPELINE_CRASH_AT=name[,name...] SIGKILLs the process at those points.

Points: train:step<N> (after update step N), checkpoint:staged (model files written, not yet renamed into
place), card:staged (a new card.json written, not yet replacing the old), store:staged (a registry object or
alias written to a temporary file, not yet renamed), registry:uploaded (a version's files uploaded, its
version.json not yet). `name@rankN` fires only in rank N of a distributed run (torchrun's RANK). Read once at
import; unset in production, each check is one empty-set test.
"""

import os
import signal

_ARMED = frozenset(filter(None, os.environ.get("PIPELINE_CRASH_AT", "").split(",")))
_RANK = os.environ.get("RANK", "0")


def crash_point(name: str) -> None:
    if name in _ARMED or f"{name}@rank{_RANK}" in _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
