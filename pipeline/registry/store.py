"""Where registry objects live. A store knows bytes under keys and one lock; the registry gives them meaning."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

from pipeline.files import atomic_write

LOCK_POLL_S = 0.2


class StoreError(OSError):
    """The registry's storage cannot be used; the message says where and what to do."""


class Store(ABC):
    """Flat keys ("versions/v0001/card.json"); `write` replaces a key atomically; `lock` is exclusive."""

    description: str

    @abstractmethod
    def read(self, key: str) -> bytes | None: ...

    @abstractmethod
    def write(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def upload(self, key: str, path: Path) -> None: ...

    @abstractmethod
    def download(self, key: str, path: Path) -> None: ...

    @abstractmethod
    def list(self, prefix: str) -> list[str]: ...

    @abstractmethod
    def lock(self, timeout_s: float) -> contextlib.AbstractContextManager: ...

    @abstractmethod
    def check_writable(self, need_bytes: int) -> None:
        """Fail now, before hours of training, when a new version could not be stored."""


class DiskStore(Store):
    """A folder (`models/` by default). Keys are relative paths; dot-files are temporaries, never listed."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.description = str(self.root)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            raise StoreError(f"refusing registry key {key!r}: keys are plain relative names")
        return self.root.joinpath(*parts)

    def check_writable(self, need_bytes: int) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe."):
                pass
            free = shutil.disk_usage(self.root).free
        except OSError as err:
            raise StoreError(f"the registry folder {self.root} is not writable ({err.strerror or err}); fix its "
                             "permissions or set PIPELINE_REGISTRY_DIR") from err
        if free < need_bytes:
            raise StoreError(f"{self.root} has {free / 2**20:.0f} MiB free, a new version needs about "
                             f"{need_bytes / 2**20:.0f} MiB; free some space before updating")

    def read(self, key: str) -> bytes | None:
        path = self._path(key)
        return path.read_bytes() if path.is_file() else None

    def write(self, key: str, data: bytes) -> None:
        try:
            atomic_write(self._path(key), data)
        except OSError as err:
            raise StoreError(f"cannot write {self._path(key)} ({err.strerror or err}); check that the registry "
                             "folder is writable and the disk has space") from err

    def upload(self, key: str, path: Path) -> None:
        self.write(key, Path(path).read_bytes())

    def download(self, key: str, path: Path) -> None:
        data = self.read(key)
        if data is None:
            raise StoreError(f"{self._path(key)} is missing")
        atomic_write(Path(path), data)

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix if prefix else self.root
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*")
                      if p.is_file() and not any(part.startswith(".") for part in p.relative_to(self.root).parts))

    @contextlib.contextmanager
    def lock(self, timeout_s: float) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as handle:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as err:
                    if err.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                        raise StoreError(f"{self.root} is locked by another run for over {timeout_s:.0f} s; "
                                         "wait for it to finish") from err
                    time.sleep(LOCK_POLL_S)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)  # the OS also drops it if this process is killed
