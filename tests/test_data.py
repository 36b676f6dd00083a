import os
import shutil
import time
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.data import DataError, HashCache, ImageSet, build_manifest, diff_manifests, scan_imagefolder
from pipeline.data.fashion_mnist import CLASS_NAMES, materialize


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_fashion_mnist_materializer_is_deterministic_and_grows_by_superset(tmp_path):
    source = Settings().fashion_mnist_dir
    materialize(source, tmp_path / "a", [0, 6], train_per_class=5, test_per_class=3)
    materialize(source, tmp_path / "b", [0, 6], train_per_class=5, test_per_class=3)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "a" / "train").iterdir()) == sorted([CLASS_NAMES[0], CLASS_NAMES[6]])
    materialize(source, tmp_path / "a", [0, 6], train_per_class=8, test_per_class=3)
    grown = _files(tmp_path / "a")
    assert len(grown) == 2 * 8 + 2 * 3 and all(grown[k] == v for k, v in _files(tmp_path / "b").items())


def test_imageset_reads_grayscale_and_colour_at_model_size(stream, tmp_path):
    from PIL import Image

    root = tmp_path / "colour"
    shutil.copytree(stream[0], root)
    Image.new("RGB", (300, 120), (200, 10, 10)).save(root / "train" / "dress" / "big.jpg")
    data = ImageSet.load(root, build_manifest(root).entries("train"), sorted(CLASS_NAMES[:4]), 48)
    assert data.images.shape[1:] == (3, 48, 48) and data.images.dtype.is_floating_point is False


@pytest.fixture()
def two_versions(stream, tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    shutil.copytree(stream[0], old)
    shutil.copytree(stream[1], new)
    return old, new


def test_diff_finds_new_classes_and_new_samples(two_versions):
    old, new = two_versions
    materialize(Settings().fashion_mnist_dir, new, [1], train_per_class=83, test_per_class=40)
    diff = diff_manifests(build_manifest(old), build_manifest(new))
    assert diff.new_classes == ["coat", "sandal"]
    assert diff.new_samples == {"trouser": 3}
    assert diff.kind == "class-incremental" and not diff.problems


def test_diff_refuses_removed_relabelled_and_leaked_files_naming_them(two_versions):
    old, new = two_versions
    removed = sorted((new / "train" / "dress").glob("*.png"))[0]
    removed.unlink()
    moved = sorted((new / "train" / "pullover").glob("*.png"))[0]
    moved.rename(new / "train" / "trouser" / moved.name)
    leaked = sorted((new / "train" / "trouser").glob("*.png"))[1]
    shutil.copy(leaked, new / "test" / "trouser" / "copy_of_train.png")
    diff = diff_manifests(build_manifest(old), build_manifest(new))
    assert diff.removed == [f"train/dress/{removed.name}"]
    assert diff.relabelled == [f"train/pullover/{moved.name}"]
    assert diff.kind == "refused"
    text = "\n".join(diff.problems)
    assert removed.name in text and moved.name in text and "copy_of_train.png" in text
    with pytest.raises(DataError, match="refusing"):
        diff.raise_if_refused()


def test_diff_reports_duplicates_within_a_class(two_versions):
    old, new = two_versions
    first = sorted((new / "train" / "dress").glob("*.png"))[0]
    shutil.copy(first, new / "train" / "dress" / "dup.png")
    diff = diff_manifests(build_manifest(old), build_manifest(new))
    assert "train/dress/dup.png" in diff.duplicates and not diff.problems


@pytest.mark.parametrize("breakage, message", [
    ("empty_class", "holds no images"),
    ("corrupt", "cannot read image"),
    ("missing", "does not exist"),
])
def test_bad_input_gives_an_error_naming_the_place(stream, tmp_path, breakage, message):
    root = tmp_path / "data"
    shutil.copytree(stream[0], root)
    if breakage == "empty_class":
        (root / "train" / "empty").mkdir()
        culprit = "empty"
    elif breakage == "corrupt":
        (root / "train" / "dress" / "broken.png").write_bytes(b"\x89PNG not really")
        culprit = "broken.png"
    else:
        root = tmp_path / "nowhere"
        culprit = "nowhere"
    with pytest.raises(DataError, match=message) as err:
        entries = scan_imagefolder(root)["train"]
        ImageSet.load(root, entries, sorted({c for _, c in entries}), 32)
    assert culprit in str(err.value)


def _settled(root: Path) -> None:
    """Every file's mtime an hour back: older than the hash cache's racy window."""
    for path in root.rglob("*.png"):
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns - 3600 * 10**9))


def test_a_hash_cache_reads_only_new_and_changed_files_with_the_same_refusals(stream, tmp_path):
    """A file whose stat is unchanged is not read again (shown by a rewrite that keeps size, mtime and inode: the
    cache trusts the stat, as DVC's state does, and a full rehash sees it); a changed mtime is read again, so an
    edited file is still refused; a file hashed within a second of its last write is not remembered."""
    data, cache = tmp_path / "data", HashCache(tmp_path / "hashes.sqlite")
    shutil.copytree(stream[0], data, copy_function=shutil.copy)  # written now (copy2 would keep the old mtimes)
    fresh = build_manifest(data, cache)
    assert cache.known(data) == {}  # just written: inside the racy window, nothing remembered
    _settled(data)
    assert build_manifest(data, cache) == fresh and len(cache.known(data)) == sum(map(len, fresh.files.values()))
    edited = sorted((data / "train").glob("*/*.png"))[0]
    stat = edited.stat()
    with open(edited, "r+b") as file:  # the same size and inode, other bytes, the mtime put back
        file.seek(stat.st_size - 1)
        file.write(bytes([edited.read_bytes()[-1] ^ 0xFF]))
    os.utime(edited, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert build_manifest(data, cache) == fresh  # trusted by stat
    rehashed = build_manifest(data)  # no cache: every file read
    assert rehashed != fresh and diff_manifests(fresh, rehashed).removed == [str(edited.relative_to(data))]
    edited.touch()  # an edit as tools make it: a new mtime
    assert diff_manifests(fresh, build_manifest(data, cache)).removed == [str(edited.relative_to(data))]
    # the racy window is measured from when the manifest began, however long the hashing took: a file written half a
    # second before is not remembered, one written two seconds before is
    began, late = time.time_ns() + 3600 * 10**9, HashCache(tmp_path / "late.sqlite")
    hashed = {"a.png": ((1, began - 5 * 10**8, 1), "0" * 64), "b.png": ((1, began - 2 * 10**9, 2), "1" * 64)}
    late.remember(data, hashed, began)
    assert set(late.known(data)) == {"b.png"}
    (tmp_path / "broken.sqlite").write_bytes(b"not a database")
    assert build_manifest(data, HashCache(tmp_path / "broken.sqlite")) == rehashed  # a damaged cache: a full hash
