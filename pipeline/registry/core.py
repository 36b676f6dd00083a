"""Versions are immutable (files, then a version.json with their SHA-256 written last); aliases move atomically."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from pipeline.faults import crash_point
from pipeline.files import clean_leftovers, file_sha256, scratch_prefix
from pipeline.model.checkpoint import CheckpointError, load_card
from pipeline.registry.store import DiskStore, Store, StoreError

ALIASES = ("champion", "challenger")
VERSION_FILE = "version.json"
SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")  # a registered file name: no separators, so no path out of a folder
RETRAIN_NAMES = ("retrain", "joint", "train")  # "joint" and "train": cards written before the rename


class RegistryError(ValueError):
    """A registry request that cannot be served; the message says what exists instead."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _json(data: dict) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True).encode()


class Registry:
    def __init__(self, store: Store, cache_dir: Path, min_free_mb: int = 256, lock_timeout_s: float = 600):
        self.store, self.cache_dir, self.min_free_mb = store, Path(cache_dir), min_free_mb
        self.lock_timeout_s = lock_timeout_s  # how long a writer waits for the registry's lock

    def preflight(self) -> None:
        """Before training: the store accepts writes and has room for a version (StoreError otherwise)."""
        self.store.check_writable(self.min_free_mb * 2**20)

    # ---- reading ---------------------------------------------------------------------------------------
    def versions(self) -> list[str]:
        """Complete versions, oldest first (an upload cut short has no version.json and is not a version)."""
        return sorted(k.split("/")[1] for k in self.store.list("versions/") if k.endswith(f"/{VERSION_FILE}"))

    def alias(self, name: str) -> dict | None:
        if name not in ALIASES:
            raise RegistryError(f"unknown alias {name!r}; aliases are {', '.join(ALIASES)}")
        raw = self.store.read(f"aliases/{name}.json")
        return json.loads(raw) if raw else None

    def resolve(self, ref: str) -> str:
        """An alias or a version name -> a complete version name."""
        if ref in ALIASES:
            record = self.alias(ref)
            if record is None:
                raise RegistryError(f"no {ref} in the registry at {self.store.description} yet; register and "
                                    "promote a model first (`pipeline register MODEL --alias champion`)")
            ref = record["version"]
        if ref not in self.versions():
            raise RegistryError(f"no version {ref!r} in {self.store.description}; known: {self.versions()}")
        return ref

    def reference(self) -> str | None:
        """The chain's fixed reference for the gate: the latest champion a retrain (or a first training) made, when
        the champion is an update made since (None when the champion is that model itself). Read from the champion's
        lineage, so a rollback moves it too. Holding every candidate within the margin of it, as well as of the
        champion, spends the margin once, not once per version."""
        record = self.alias("champion")
        for version in [record["version"], *reversed(record["lineage"])] if record else []:
            if self.info(version).get("method") in RETRAIN_NAMES:
                return None if version == record["version"] else version
        return None

    def info(self, ref: str) -> dict:
        version = self.resolve(ref)
        info = json.loads(self.store.read(f"versions/{version}/{VERSION_FILE}"))
        bad = [name for name in info.get("files", {}) if not SAFE_NAME.fullmatch(name) or name in (".", "..")]
        if bad or info.get("version") != version:  # names become local paths in fetch(): never outside the folder
            raise RegistryError(f"{self.store.description}: versions/{version}/{VERSION_FILE} is tampered (file "
                                f"names {bad}, version {info.get('version')!r}); do not use this version")
        return info

    def fetch(self, ref: str) -> Path:
        """A verified local directory of the version (downloaded once into the cache for remote stores)."""
        info = self.info(ref)
        if isinstance(self.store, DiskStore):
            local = self.store.root / "versions" / info["version"]
        else:
            where = hashlib.sha256(self.store.description.encode()).hexdigest()[:12]
            local = self.cache_dir / "registry" / where / info["version"]
            if not local.is_dir():
                local.parent.mkdir(parents=True, exist_ok=True)
                clean_leftovers(local.parent, info["version"])
                staging = Path(tempfile.mkdtemp(prefix=scratch_prefix(info["version"]), dir=local.parent))
                try:
                    for name in info["files"]:
                        self.store.download(f"versions/{info['version']}/{name}", staging / name)
                    os.rename(staging, local)
                except OSError:
                    if not local.is_dir():  # else another process (e.g. a torchrun rank) fetched it first
                        raise
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
        for name, digest in info["files"].items():
            if not (local / name).is_file() or file_sha256(local / name) != digest:
                raise CheckpointError(f"{local / name} is missing or differs from the SHA-256 recorded at "
                                      f"registration; version {info['version']} is corrupt, do not use it")
        return local

    def history(self) -> list[dict]:
        return [json.loads(self.store.read(key)) for key in self.store.list("events/")]

    def status(self) -> dict:
        aliases = {name: self.alias(name) for name in ALIASES}
        champion = aliases["champion"]
        return {"registry": self.store.description, "aliases": aliases,
                "champion": self.info(champion["version"]) if champion else None,
                "versions": self.versions(), "history": self.history()}

    # ---- writing (each under the store's lock) -----------------------------------------------------------
    def register(self, model_dir: Path, note: str = "") -> str:
        """Upload a model directory as the next immutable version vNNNN; returns its name."""
        model_dir = Path(model_dir)
        card = load_card(model_dir)
        files = {p.name: file_sha256(p) for p in sorted(model_dir.iterdir())
                 if p.is_file() and not p.name.startswith(".")}  # dot-files: temporaries of a killed write
        if card["weights_sha256"] != files.get("model.safetensors"):
            raise CheckpointError(f"{model_dir}/model.safetensors differs from its card; refusing to register it")
        with self.store.lock(self.lock_timeout_s):
            for known in reversed(self.versions()):  # a retried registration that did succeed: the same version
                info = json.loads(self.store.read(f"versions/{known}/{VERSION_FILE}"))
                if (info.get("files", {}).get("model.safetensors") == files["model.safetensors"]
                        and info.get("data_version") == card.get("data_version")):
                    return known
            taken = [int(k.split("/")[1][1:]) for k in self.store.list("versions/") if k.split("/")[1][1:].isdigit()]
            version = f"v{max(taken, default=0) + 1:04d}"
            for name in files:
                self.store.upload(f"versions/{version}/{name}", model_dir / name)
            crash_point("registry:uploaded")
            info = {"version": version, "files": files, "registered_at": _now(), "note": note,
                    "data_version": card.get("data_version"), "class_names": card["class_names"],
                    "method": card.get("method"), "metrics": card.get("metrics", {}), "gate": card.get("gate")}
            self.store.write(f"versions/{version}/{VERSION_FILE}", _json(info))
            self._event("register", version, note)
        return version

    def set_alias(self, name: str, ref: str, reason: str = "", action: str = "alias") -> dict:
        """Point an alias at a version with one atomic write. The record carries `lineage` (the champions
        this one replaced, oldest first), so rollback needs nothing but the record itself."""
        with self.store.lock(self.lock_timeout_s):
            version = self.resolve(ref)
            current = self.alias(name)
            lineage = list(current.get("lineage", [])) if current else []
            if action == "rollback":
                version = lineage.pop()
            elif current and current["version"] != version:
                lineage.append(current["version"])
            record = {"alias": name, "version": version, "previous": current["version"] if current else None,
                      "lineage": lineage, "at": _now(), "reason": reason}
            self.store.write(f"aliases/{name}.json", _json(record))  # the one atomic move
            self._event(action, version, reason, alias=name, previous=record["previous"])
        return record

    def promote(self, ref: str, reason: str = "", force: bool = False) -> dict:
        """Make a version the champion; one the gate rejected only with `force` (a person's override)."""
        gate = self.info(ref).get("gate") or {}
        rejected = gate.get("decision") == "reject"
        if rejected and not force:
            raise RegistryError(f"{self.resolve(ref)} was rejected by the gate ({'; '.join(gate['reasons'])}); "
                                "promote it anyway with --force")
        return self.set_alias("champion", ref, reason + (" (forced past a gate rejection)" if rejected else ""),
                              action="promote")

    def rollback(self, reason: str = "") -> dict:
        """Champion back to the one the current champion replaced (repeatable: v3 -> v2 -> v1)."""
        current = self.alias("champion")
        if current is None:
            raise RegistryError("no champion to roll back")
        if not current.get("lineage"):
            raise RegistryError(f"champion {current['version']} replaced no earlier champion; nothing to roll back to")
        return self.set_alias("champion", current["version"], reason or f"rollback from {current['version']}",
                              action="rollback")

    def save_report(self, name: str, files: list[Path]) -> str:
        """Keep a run's report files under reports/<name>/ (beside the versions: on S3 when the registry is)."""
        for path in files:
            self.store.upload(f"reports/{name}/{path.name}", path)
        return f"reports/{name}/"

    def _event(self, action: str, version: str, reason: str, **extra) -> None:
        event = {"action": action, "version": version, "reason": reason, "at": _now(), **extra}
        self.store.write(f"events/{time.time_ns():020d}-{action}-{version}.json", _json(event))


def open_registry(settings) -> Registry:
    """The S3 registry when PIPELINE_S3_BUCKET is set, else the folder PIPELINE_REGISTRY_DIR (models/)."""
    if settings.s3_bucket:
        from pipeline.registry.s3 import S3Store  # only the S3 backend imports boto3

        store = S3Store(settings.s3_bucket, settings.s3_prefix, settings.s3_lock_ttl_s, settings.s3_max_attempts)
        return Registry(store, settings.cache_dir, lock_timeout_s=settings.lock_timeout_s)
    return Registry(DiskStore(settings.registry_dir), settings.cache_dir, settings.min_free_mb,
                    settings.lock_timeout_s)


__all__ = ["ALIASES", "Registry", "RegistryError", "StoreError", "open_registry"]
