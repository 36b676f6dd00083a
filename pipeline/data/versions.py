"""Data versions tracked by DVC: the md5 DVC records for the data folder. The only code that knows DVC."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.data.imagefolder import DataError


def dvc_file_for(data_root: Path) -> Path:
    """DVC's convention: `data/` is tracked by `data.dvc` beside it."""
    data_root = Path(data_root)
    return data_root.with_name(data_root.name + ".dvc")


def read_data_version(dvc_file: Path) -> str:
    """The md5 that `dvc add` recorded for the tracked folder (e.g. '3f2c...e1.dir')."""
    dvc_file = Path(dvc_file)
    if not dvc_file.is_file():
        raise DataError(f"{dvc_file} is missing: track the data folder with `dvc add {dvc_file.stem}` and commit "
                        f"{dvc_file.name}")
    try:
        outs = yaml.safe_load(dvc_file.read_text())["outs"]
        md5 = outs[0]["md5"]
    except (yaml.YAMLError, TypeError, KeyError, IndexError) as err:
        raise DataError(f"{dvc_file} is malformed (expected `outs: [{{md5: ..., path: ...}}]`): {err!r}; "
                        f"restore it from git or rerun `dvc add {dvc_file.stem}`") from err
    if not isinstance(md5, str) or not md5:
        raise DataError(f"{dvc_file}: outs[0].md5 is empty; rerun `dvc add {dvc_file.stem}`")
    return md5


def data_version_of(data_root: Path) -> str | None:
    """The DVC data version of a folder, or None when it is not DVC-tracked."""
    dvc_file = dvc_file_for(data_root)
    return read_data_version(dvc_file) if dvc_file.exists() else None


def dvc(repo: Path, *args: str) -> str:
    """Run the DVC command line in `repo`; a failure is a DataError carrying DVC's own message."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        raise DataError(f"`dvc {' '.join(args)}` failed in {repo}: {(result.stderr or result.stdout).strip()[-800:]}")
    return result.stdout


def pull(repo: Path, target: str = "data.dvc") -> None:
    dvc(repo, "pull", "--quiet", target)


def check_matches(repo: Path, target: str = "data.dvc") -> None:
    """Refuse a data folder that differs from what its .dvc file records (edited after `dvc add`)."""
    changes = json.loads(dvc(repo, "status", "--json", target) or "{}")
    if changes:
        raise DataError(f"{Path(repo) / target} does not match the data folder ({json.dumps(changes)[:400]}); "
                        f"run `dvc add {Path(target).stem}` to record the new version, or `dvc checkout` to "
                        "restore the recorded one")


def init_repo(repo: Path, remote: str) -> None:
    """A git + DVC repository whose default DVC remote is `remote` (a folder, or s3://bucket/prefix)."""
    repo.mkdir(parents=True, exist_ok=True)
    if not (repo / ".git").exists():
        _git(repo, "init", "--quiet")
    if not (repo / ".dvc").exists():
        dvc(repo, "init", "--quiet")
    ignore = repo / ".gitignore"
    if "/work/" not in (ignore.read_text() if ignore.exists() else ""):  # candidates and reports: not for git
        with open(ignore, "a") as handle:
            handle.write("/work/\n")
    dvc(repo, "remote", "add", "--force", "--default", "storage", remote)
    dvc(repo, "config", "core.autostage", "true")


def _git(repo: Path, *args: str) -> None:
    identity = ["-c", "user.name=pipeline", "-c", "user.email=pipeline@localhost"]
    subprocess.run(["git", *identity, *args], cwd=repo, check=True, capture_output=True, text=True)


def add_and_push(repo: Path, data: str = "data", message: str | None = None) -> str:
    """Record the folder as a new version, push it to the default remote, commit data.dvc; returns the version."""
    dvc(repo, "add", "--quiet", data)
    dvc(repo, "push", "--quiet", data + ".dvc")
    version = read_data_version(Path(repo) / (data + ".dvc"))
    _git(repo, "add", data + ".dvc", ".gitignore")
    _git(repo, "commit", "--quiet", "--allow-empty", "-m", message or f"data version {version}")
    return version
