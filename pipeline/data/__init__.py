"""Data: ImageFolder trees, manifests and their diffs, the Fashion-MNIST materializer."""

from pipeline.data.hashes import HashCache
from pipeline.data.imagefolder import DataError, ImageSet, load_images, scan_imagefolder
from pipeline.data.manifest import DataDiff, Manifest, build_manifest, diff_manifests

__all__ = [
    "DataDiff", "DataError", "HashCache", "ImageSet", "Manifest", "build_manifest", "diff_manifests", "load_images",
    "scan_imagefolder",
]
