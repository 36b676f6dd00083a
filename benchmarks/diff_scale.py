"""The data work of a version at scale: a version's manifest and diff against its parent's, on a synthetic
ImageFolder of many small files of which a share is new (the files' bytes are random: a manifest hashes files, it
does not decode them). Timed three ways: the parent's manifest with no hash cache (every file read), the new
version's with the cache the parent's left (only new files read) and, for the record, the new version's without it.

    .venv/bin/python -m benchmarks.diff_scale                       # one million files, 1% new (about 10 min here)
    .venv/bin/python -m benchmarks.diff_scale --files 20000         # a quick look

Writes benchmarks/results/diff_scale.{json,md} (another --name: its own files). Target: the
one-million-file diff with 1% new files in 20 s or less on this machine, with the same refusals.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from benchmarks.harness import engine_code, git_commit, machine
from pipeline.data import HashCache, build_manifest, diff_manifests

CLASSES, TEST_SHARE, FILE_BYTES = 10, 0.1, 600


def write_files(root: Path, split: str, start: int, count: int) -> None:
    """`count` files numbered from `start`, spread over the classes, each of random bytes (unique content)."""
    for index in range(start, start + count):
        folder = root / split / f"class{index % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{index:08d}.png").write_bytes(os.urandom(FILE_BYTES))


def settle(root: Path, start: int = 0) -> None:
    """The files numbered from `start` on dated a minute back, as files pulled or added a while ago (outside the
    cache's racy window); then every write flushed, so that no timed step pays for another's writeback."""
    past = time.time_ns() - 60 * 10**9
    for folder, _, files in os.walk(root):
        for name in files:
            if int(name.split(".")[0]) >= start:
                os.utime(Path(folder) / name, ns=(past, past))
    os.sync()


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, round(time.perf_counter() - start, 2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1_000_000, help="train and test files of the parent version")
    parser.add_argument("--new", type=float, default=0.01, help="new train files, as a share of the parent's")
    parser.add_argument("--work", type=Path, default=Path("work/diff_scale"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--name", default="diff_scale")
    args = parser.parse_args(argv)
    prov = {"commit": git_commit(), "code_hash": engine_code(), "machine": machine(), "cores": os.cpu_count(),
            "command": "python -m benchmarks.diff_scale " + " ".join(argv or []), "args": {k: str(v) for k, v in
                                                                                        vars(args).items()}}
    shutil.rmtree(args.work, ignore_errors=True)
    data, cache = args.work / "data", HashCache(args.work / "hashes.sqlite")
    test, train = round(args.files * TEST_SHARE), args.files - round(args.files * TEST_SHARE)
    _, write_s = timed(lambda: (write_files(data, "train", 0, train), write_files(data, "test", train, test)))
    settle(data)
    parent, parent_s = timed(build_manifest, data, cache)  # cold: every file read, then remembered
    os.sync()
    new = round(train * args.new)
    write_files(data, "train", args.files, new)
    settle(data, start=args.files)
    current, cached_s = timed(build_manifest, data, cache)
    changes, diff_s = timed(diff_manifests, parent, current)
    os.sync()
    _, uncached_s = timed(build_manifest, data, None)
    assert sum(changes.new_samples.values()) == new and not changes.problems, changes.summary()
    row = {"files": args.files, "new_files": new, "write_s": write_s, "parent_manifest_s": parent_s,
           "manifest_with_cache_s": cached_s, "diff_s": diff_s, "manifest_and_diff_s": round(cached_s + diff_s, 2),
           "manifest_without_cache_s": uncached_s, "target_s": 20,
           "met": cached_s + diff_s <= 20}
    (args.out / f"{args.name}.json").write_text(json.dumps({"provenance": prov, "rows": [row]}, indent=2))
    (args.out / f"{args.name}.md").write_text(
        f"# A version's manifest and diff at scale\n\ncommit {prov['commit']}, engine {prov['code_hash']}, "
        f"{prov['machine']}; `{prov['command'].strip()}`.\n\n"
        "| files | new | manifest + diff, hash cache | manifest, no cache (every file read) | parent's manifest, cold |"
        " target | met |\n|---|---|---|---|---|---|---|\n"
        f"| {args.files:,} | {new:,} | {row['manifest_and_diff_s']} s | {uncached_s} s | {parent_s} s | "
        f"≤ 20 s | {'yes' if row['met'] else 'no'} |\n")
    print(json.dumps(row, indent=2))
    shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
