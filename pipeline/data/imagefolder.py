"""Read an ImageFolder tree (`<root>/<split>/<class>/<file>`) into uint8 tensors at the model's input size."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

if TYPE_CHECKING:
    from pipeline.model.feature_cache import FeatureRows

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLITS = ("train", "test")
# Larger images than this are refused instead of decoded (decompression bombs).
MAX_PIXELS = 64_000_000
MIN_TRAIN_IMAGES = 2


class DataError(ValueError):
    """Bad input data; the message names the file or folder and what to do."""


def _check_name(name: str, folder: str) -> str:
    """`name` (of a class folder or a file inside `folder`), refused when no path could carry it."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as err:  # shown with its bad bytes escaped, so the message itself prints
        shown = os.fsencode(os.path.join(folder, name)).decode("utf-8", "backslashreplace")
        raise DataError(f"{shown}: name is not valid UTF-8; rename it") from err
    if name in {".", ".."} or "/" in name or "\\" in name or "\x00" in name:
        raise DataError(f"{os.path.join(folder, name)}: {name!r} is not a usable class or file name; rename it")
    return name


def scan_imagefolder(root: Path, splits: tuple[str, ...] = SPLITS) -> dict[str, list[tuple[str, str]]]:
    """(relative path, class name) per split of `splits`, sorted; errors name the offending folder."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist; create it or pass --data to an ImageFolder tree")
    found: dict[str, list[tuple[str, str]]] = {}
    for split in splits:
        split_dir = root / split
        if not split_dir.is_dir():
            raise DataError(f"{split_dir} is missing: expected {root}/{split}/<class>/<image files>")
        entries = []
        class_dirs = sorted((d for d in os.scandir(split_dir) if d.is_dir() and not d.name.startswith(".")),
                            key=lambda d: d.name)
        if not class_dirs:
            raise DataError(f"{split_dir} has no class folders: expected {split_dir}/<class>/<image files>")
        for class_dir in class_dirs:
            name = _check_name(class_dir.name, split_dir)
            files = []
            for f in os.scandir(class_dir):  # a million files: no Path object per file
                if f.name.startswith(".") or os.path.splitext(f.name)[1].lower() not in IMAGE_SUFFIXES:
                    continue
                if not f.is_file():  # a dangling link, a folder or a device named like an image
                    raise DataError(f"{f.path} is not a readable file; replace it with the image or remove it")
                files.append(f.name)
            files.sort()
            if not files:
                raise DataError(f"{class_dir.path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                                "add images or remove the folder")
            if split == "train" and len(files) < MIN_TRAIN_IMAGES:
                raise DataError(f"{class_dir.path} holds {len(files)} training image(s); a class needs at least "
                                f"{MIN_TRAIN_IMAGES} to be learnt and checked; add images or remove the folder")
            entries += [(f"{split}/{name}/{_check_name(f, class_dir.path)}", name) for f in files]
        found[split] = entries
    return found


def decode_image(path: Path, img_size: int) -> np.ndarray:
    """uint8 [3, img_size, img_size] RGB; DataError naming the file when it cannot be read."""
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_PIXELS:
                raise DataError(f"{path}: {img.width}x{img.height} pixels is too large; downscale it")
            img.draft("RGB", (img_size, img_size))  # JPEG: decode at reduced size
            rgb = img.convert("RGB").resize((img_size, img_size), Image.Resampling.BILINEAR)
            return np.array(rgb).transpose(2, 0, 1)
    except DataError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: cannot read image ({err}); replace or remove the file") from err


def load_images(root: Path, rel_paths: list[str], img_size: int) -> torch.Tensor:
    """Decode images to a uint8 tensor [N, 3, img_size, img_size] (grayscale becomes 3 equal channels)."""
    out = torch.empty((len(rel_paths), 3, img_size, img_size), dtype=torch.uint8)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for i, arr in enumerate(pool.map(lambda p: decode_image(Path(root) / p, img_size), rel_paths, chunksize=64)):
            out[i] = torch.from_numpy(arr)
    return out


class ImageFiles:
    """Image files decoded only when rows are asked for: indexes like the uint8 tensor [N, 3, S, S] it stands
    for (`files[3:9]`, `files[index]` decode those rows), so a folder larger than memory streams through."""

    def __init__(self, root: Path, paths: list[str], img_size: int):
        self.root, self.paths, self.img_size = Path(root), paths, img_size

    def __len__(self) -> int:
        return len(self.paths)

    def select(self, index: torch.Tensor) -> ImageFiles:
        """The files at `index` (a mask or positions), still undecoded."""
        chosen = torch.arange(len(self.paths))[index].tolist()
        return ImageFiles(self.root, [self.paths[i] for i in chosen], self.img_size)

    def __getitem__(self, index: slice | torch.Tensor) -> torch.Tensor:
        chosen = self.paths[index] if isinstance(index, slice) else self.select(index).paths
        return load_images(self.root, chosen, self.img_size)


class _Rows(torch.utils.data.Dataset):
    """Batches of rows for a DataLoader's workers (a batch sampler hands over whole batches of indices)."""

    def __init__(self, images: torch.Tensor | ImageFiles, targets: torch.Tensor):
        self.images, self.targets = images, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitems__(self, index: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(index)
        return self.images[index], self.targets[index]


def _same(batch):
    return batch


@dataclass
class ImageSet:
    """Images (uint8 [N, 3, H, W], or cached trunk features) with integer targets into `class_names`. The rows
    are in memory (a tensor), image files decoded as they are asked for (`ImageFiles`) or cached features read
    from their shards as they are asked for (`FeatureRows`); `batches` serves any of them to a training loop."""

    images: torch.Tensor | ImageFiles | FeatureRows
    targets: torch.Tensor  # int64 [N]
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def streamed(self) -> bool:
        """Decoded from image files as rows are asked for (over the memory budget)."""
        return isinstance(self.images, ImageFiles)

    @property
    def in_memory(self) -> bool:
        return isinstance(self.images, torch.Tensor)

    def subset(self, index: torch.Tensor) -> ImageSet:
        images = self.images[index] if self.in_memory else self.images.select(index)
        return ImageSet(images, self.targets[index], self.class_names)

    def decoded(self) -> ImageSet:
        """In memory (a small set read many times, e.g. a continual-evaluation subset)."""
        return self if self.in_memory else ImageSet(self.images[:], self.targets, self.class_names)

    def batches(self, indices: Iterator[torch.Tensor], device: torch.device,
                workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(rows, targets) for each batch of indices, in that order, on `device` (rows uint8 until there). In
        memory: taken from the tensor (moved to a GPU once if it takes under a quarter of its free memory).
        Streamed: decoded by `workers` DataLoader processes ahead of the loop, pinned for the copy to a GPU."""
        cuda = device.type == "cuda"
        if not self.streamed:  # a tensor, or cached features read batch by batch (a few rows of each shard)
            images = self.images
            if cuda and images.nbytes < torch.cuda.mem_get_info(device)[0] // 4:  # to the GPU once, when it fits
                images = images[:].to(device)
            on = images.device if isinstance(images, torch.Tensor) else torch.device("cpu")
            targets = self.targets.to(device)
            for index in indices:
                rows = images[index.to(on)]
                yield (rows.pin_memory() if cuda and not rows.is_cuda else rows).to(device, non_blocking=True), \
                    targets[index.to(device)]
            return
        loader = torch.utils.data.DataLoader(_Rows(self.images, self.targets), batch_sampler=indices,
                                             collate_fn=_same, num_workers=workers, pin_memory=cuda,
                                             prefetch_factor=4 if workers else None)
        for rows, targets in loader:
            yield rows.to(device, non_blocking=True), targets.to(device, non_blocking=True)

    def stratified(self, per_class: int, seed: int) -> ImageSet:
        """The same (for a given seed) `per_class` random samples of every class, in their original order."""
        generator = torch.Generator().manual_seed(seed)
        chosen = []
        for label in self.targets.unique():
            members = torch.nonzero(self.targets == label).flatten()
            chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
        return self.subset(torch.cat(chosen).sort().values)

    @classmethod
    def load(cls, root: Path, entries: list[tuple[str, str]], class_names: list[str], img_size: int,
             stream: bool = False) -> ImageSet:
        """The images of `entries` (relative path, class), decoded now or (`stream`) as they are asked for."""
        position = {name: i for i, name in enumerate(class_names)}
        unknown = sorted({c for _, c in entries} - position.keys())
        if unknown:
            raise DataError(f"classes {unknown} are not among the model's classes {class_names}")
        files = ImageFiles(root, [path for path, _ in entries], img_size)
        return cls(files if stream else files[:], torch.tensor([position[c] for _, c in entries], dtype=torch.long),
                   class_names)
