"""Model registry: immutable versions, aliases (champion, challenger) and their history, on disk or in S3."""

from pipeline.registry.core import ALIASES, Registry, RegistryError, open_registry
from pipeline.registry.store import DiskStore, Store

__all__ = ["ALIASES", "DiskStore", "Registry", "RegistryError", "Store", "open_registry"]
