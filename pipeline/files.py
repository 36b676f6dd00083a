"""Writing files so that a crash leaves the old bytes or the new ones, never half of either; and removing what a
killed writer left behind."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from pipeline.faults import crash_point


def scratch_prefix(name: str) -> str:
    """The prefix of a temporary file or folder written beside `name`: `.name.<pid>.` (the writer's process)."""
    return f".{name}.{os.getpid()}."


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def clean_leftovers(folder: Path, name: str) -> None:
    """Delete the temporaries of `name` in `folder` whose writer no longer runs (it was killed mid-write)."""
    for path in Path(folder).glob(f".{glob.escape(name)}.*"):
        pid = path.name[len(name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def atomic_write(path: Path, data: bytes, failpoint: str = "store:staged") -> None:
    """Write a temporary dot-file beside `path`, fsync, rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=scratch_prefix(path.name), dir=path.parent)
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


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
