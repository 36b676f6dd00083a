"""Writing files so that a crash leaves the old bytes or the new ones, never half of either."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from pipeline.faults import crash_point


def atomic_write(path: Path, data: bytes, failpoint: str = "store:staged") -> None:
    """Write a temporary dot-file beside `path`, fsync, rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        crash_point(failpoint)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
