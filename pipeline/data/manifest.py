"""Manifests (relative path, class, content hash) of a data version, and the diff between two of them."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.data.hashes import HashCache, Stat, file_stat, unchanged
from pipeline.data.imagefolder import SPLITS, DataError, scan_imagefolder
from pipeline.files import file_sha256
from pipeline.progress import Progress

HASH_CHUNK = 256  # files per hashing task


@dataclass
class Manifest:
    """Per split: relative path -> (class, sha256)."""

    files: dict[str, dict[str, tuple[str, str]]]
    _json: str | None = field(default=None, repr=False, compare=False)

    def classes(self, split: str = "train") -> list[str]:
        return sorted({c for c, _ in self.files[split].values()})

    def entries(self, split: str) -> list[tuple[str, str]]:
        return [(path, c) for path, (c, _) in sorted(self.files[split].items())]

    def digest(self) -> str:
        """Content hash of the whole version (paths, classes and bytes): of its JSON text."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def to_json(self) -> str:
        """The manifest as canonical JSON (made once: a manifest is not changed after it is built)."""
        if self._json is None:
            self._json = json.dumps(self.files, sort_keys=True)  # (class, sha256) pairs as JSON lists
        return self._json

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        raw = json.loads(text)
        return cls({split: {p: (v[0], v[1]) for p, v in rows.items()} for split, rows in raw.items()})

    def problems(self) -> list[str]:
        """Everything that makes this version unusable on its own, at once: a class in one split only (a misspelt
        folder shows as both), the same content under two classes, test files in train."""
        found = []
        train, test = set(self.classes("train")), set(self.classes("test"))
        if untested := sorted(train - test):
            found.append(f"classes {untested} have training images but no test images: the gate could not judge "
                         "them; add images under test/<class>/")
        if unknown := sorted(test - train):
            found.append(f"classes {unknown} have test images but no training images: no model can learn them; "
                         "a misspelt folder under test/ (rename it to its class under train/) or a class to add "
                         "under train/")
        rows = self.files["train"]
        pairs = set(rows.values())
        digests = {d for _, d in pairs}
        conflicting = []
        if len(digests) < len(pairs):  # some content under two classes: name its files
            classes_of: dict[str, set[str]] = defaultdict(set)
            for c, d in pairs:
                classes_of[d].add(c)
            conflicting = sorted(p for p, (_, d) in rows.items() if len(classes_of[d]) > 1)
        if conflicting:
            found.append(f"{len(conflicting)} train files have identical content under different classes: "
                         f"{_sample(conflicting)}; keep each image in one class")
        leaked = sorted(p for p, (_, d) in self.files["test"].items() if d in digests)
        if leaked:
            found.append(f"{len(leaked)} test files also appear in train: {_sample(leaked)}; "
                         "remove them from test or from train")
        return found


def _sample(paths: list[str], k: int = 5) -> str:
    return ", ".join(paths[:k]) + (f" (and {len(paths) - k} more)" if len(paths) > k else "")


def build_manifest(root: Path, hashes: HashCache | None = None, splits: tuple[str, ...] = SPLITS) -> Manifest:
    """Every file's class and SHA-256 (of `splits`: the gate reads test/ alone). With `hashes`, a file whose stat is
    unchanged since it was hashed is not read (pipeline/data/hashes.py): the cost follows the new and changed files,
    plus a stat per file."""
    root, began_ns = Path(root), time.time_ns()
    scanned = scan_imagefolder(root, splits)
    # the stats in one thread (cheaper than handing them over), the unknown files' bytes in the pool
    digests, unread = unchanged(hashes, root, (path for entries in scanned.values() for path, _ in entries))
    hashed: dict[str, tuple[Stat, str]] = {}

    def read(chunk: list[str]) -> int:
        for path in chunk:
            where = os.path.join(root, path)
            hashed[path] = file_stat(where), file_sha256(where)  # the stat before the bytes: a later write shows
        return len(chunk)

    # a task per HASH_CHUNK files: threads overlap cold reads, and one future per small file would cost more than
    # hashing it (ThreadPoolExecutor.map ignores chunksize)
    with (ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool,
          Progress(f"hashing {root}", len(unread), "files") as progress):
        for done in pool.map(read, [unread[i:i + HASH_CHUNK] for i in range(0, len(unread), HASH_CHUNK)]):
            progress.advance(done)
    digests.update((path, digest) for path, (_, digest) in hashed.items())
    if hashes:
        hashes.remember(root, hashed, began_ns)
    return Manifest({split: {path: (c, digests[path]) for path, c in entries} for split, entries in scanned.items()})


@dataclass
class DataDiff:
    """What changed in train between the parent's data version and the current one."""

    new_classes: list[str] = field(default_factory=list)
    new_samples: dict[str, int] = field(default_factory=dict)  # known class -> count of new files
    removed: list[str] = field(default_factory=list)  # parent paths whose content is gone
    relabelled: list[str] = field(default_factory=list)  # same content, other class now
    duplicates: list[str] = field(default_factory=list)  # extra copies of content within a class
    problems: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        if self.problems:
            return "refused"
        if self.new_classes:
            return "class-incremental"
        return "data-growth" if self.new_samples else "unchanged"

    def summary(self) -> str:
        parts = [f"kind={self.kind}", f"new classes={self.new_classes}",
                 f"new samples of known classes={sum(self.new_samples.values())}"]
        if self.duplicates:
            parts.append(f"duplicate files={len(self.duplicates)}")
        return ", ".join(parts)

    def raise_if_refused(self) -> None:
        if self.problems:
            raise DataError("refusing to train on this data version:\n  - " + "\n  - ".join(self.problems))


def diff_manifests(parent: Manifest, current: Manifest) -> DataDiff:
    old, new = parent.files["train"], current.files["train"]
    new_pairs = set(new.values())
    new_digests = {d for _, d in new_pairs}
    old_digests = {d for _, d in old.values()}
    known = set(parent.classes())
    diff = DataDiff(new_classes=sorted(set(current.classes()) - known))

    diff.removed = sorted(p for p, (c, d) in old.items() if d not in new_digests)
    diff.relabelled = sorted(p for p, (c, d) in old.items() if d in new_digests and (c, d) not in new_pairs)
    if len(new_pairs) < len(new):  # some content twice within a class: name its files
        counts = Counter(new.values())
        diff.duplicates = sorted(p for p, pair in new.items() if counts[pair] > 1)
    diff.new_samples = dict(Counter(c for c, d in new.values() if c in known and d not in old_digests))

    if diff.removed:
        diff.problems.append(f"{len(diff.removed)} files of the parent's data version are gone or changed: "
                             f"{_sample(diff.removed)}; restore them (data only grows) or retrain with "
                             "`pipeline train`")
    if diff.relabelled:
        diff.problems.append(f"{len(diff.relabelled)} files now carry another class than in the parent's "
                             f"version: {_sample(diff.relabelled)}; relabelling needs `pipeline train`")
    gone = sorted(known - set(current.classes()))
    if gone:
        diff.problems.append(f"classes {gone} of the parent have no training files any more; restore them")
    diff.problems += current.problems()
    return diff
