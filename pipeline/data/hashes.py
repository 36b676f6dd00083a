"""Content hashes remembered by file identity, so that a version's manifest costs reading its new and changed files.

As DVC's state database and git's index do, a file whose (size, mtime in ns, inode) is what it was when it was hashed
is not read again: its SHA-256 is taken from an SQLite file under the cache directory. What is trusted is the file
system's stat, not the bytes: a tool that rewrites a file in place and restores its mtime, size and inode would go
unseen, as it would by DVC. A file modified within a second before its manifest began is not remembered (a coarse
mtime could then hide a second write), and `PIPELINE_HASH_CACHE=false` (or no cache) hashes every file every time.
A cache that cannot be read or written costs time, never a wrong hash: a damaged file is dropped, a locked or
unwritable one is passed over.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

Stat = tuple[int, int, int]  # size, mtime_ns, inode
RACY_NS = 1_000_000_000  # a file modified this close before its manifest began is hashed again next time


def file_stat(path: str | Path) -> Stat:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino


class HashCache:
    """SHA-256 per (root, relative path), valid while the file's stat is unchanged."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(self.path, timeout=60)) as db, db:  # one transaction, then closed
            db.execute("CREATE TABLE IF NOT EXISTS hashes (root TEXT, path TEXT, size INTEGER, mtime_ns INTEGER, "
                       "inode INTEGER, sha256 TEXT, PRIMARY KEY (root, path))")
            yield db

    def known(self, root: Path) -> dict[str, tuple[Stat, str]]:
        """Every remembered file under `root`: relative path -> (stat when hashed, sha256)."""
        try:
            with self._db() as db:
                rows = db.execute("SELECT path, size, mtime_ns, inode, sha256 FROM hashes WHERE root = ?",
                                  (str(Path(root).resolve()),)).fetchall()
        except (sqlite3.OperationalError, OSError):  # locked, unreadable, unwritable: hash every file this time
            return {}
        except sqlite3.DatabaseError:  # not a database (damaged): dropped, rebuilt by this manifest
            self.path.unlink(missing_ok=True)
            return {}
        return {path: ((size, mtime, inode), digest) for path, size, mtime, inode, digest in rows}

    def remember(self, root: Path, hashed: dict[str, tuple[Stat, str]], began_ns: int) -> None:
        """Store freshly hashed files, except those modified within RACY_NS before the manifest began (`began_ns`)."""
        self._store(root, {path: seen for path, seen in hashed.items() if seen[0][1] < began_ns - RACY_NS})

    def remember_written(self, root: Path, path: str, digest: str) -> None:
        """A file this process has just written whole, by an atomic rename (the feature cache's shards): any later
        rewrite is another rename and gives it a new inode, so it has no racy window and is remembered at once."""
        self._store(root, {path: (file_stat(Path(root) / path), digest)})

    def _store(self, root: Path, hashed: dict[str, tuple[Stat, str]]) -> None:
        rows = [(str(Path(root).resolve()), path, *stat, digest) for path, (stat, digest) in hashed.items()]
        if not rows:
            return
        try:
            with self._db() as db:
                db.executemany("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?, ?)", rows)
        except (sqlite3.Error, OSError):  # a cache that cannot be written only costs time next run
            pass


def unchanged(hashes: HashCache | None, root: Path, paths: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """The digests `hashes` holds for those of `paths` (relative to `root`) whose stat is what it was when they were
    hashed, and the paths that must be read (all of them without a cache)."""
    known = hashes.known(root) if hashes else {}
    digests, unread = {}, []
    for path in paths:
        if (seen := known.get(path)) and seen[0] == file_stat(os.path.join(root, path)):
            digests[path] = seen[1]
        else:
            unread.append(path)
    return digests, unread
