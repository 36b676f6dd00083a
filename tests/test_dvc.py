"""The project's dvc.yaml on a real DVC repository: `dvc repro` runs update -> evaluate -> gate; data versions
travel through a local remote and through S3 (moto's server on loopback)."""

import json
import os
import shutil
import sys
from pathlib import Path

import boto3
import pytest
import yaml

from pipeline.cli import main
from pipeline.data import DataError, versions
from tests.conftest import PASSING, tiny_params

ROOT = Path(__file__).resolve().parents[1]

def test_dvc_repro_runs_update_evaluate_gate(tmp_path, stream, base_model, monkeypatch):
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PIPELINE_REGISTRY_DIR", str(tmp_path / "models"))
    repo = tmp_path / "repo"
    versions.init_repo(repo, str(tmp_path / "remote"))
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_params(*PASSING).model_dump()))
    shutil.copytree(stream[1], repo / "data")
    version = versions.add_and_push(repo, "data", "v2")
    assert main(["register", str(base_model), "--alias", "champion"]) == 0

    versions.dvc(repo, "repro")
    gate = json.loads((repo / "work" / "gate.json").read_text())
    evaluation = json.loads((repo / "work" / "evaluation.json").read_text())
    assert gate["decision"] == "promote" and evaluation["new_acc"] > 100 / 6  # the new classes learnt: above chance
    card = json.loads((repo / "work" / "candidate" / "card.json").read_text())
    assert card["data_version"] == version and "gate" not in card  # a stage output stays as the stage wrote it
    assert "Data and pipelines are up to date" in versions.dvc(repo, "status")
    shown = versions.dvc(repo, "metrics", "show")  # the flat headline file: one short row
    assert "old_acc_drop" in shown and "promoted" in shown and max(map(len, shown.splitlines())) <= 100, shown


def test_data_folder_edited_after_dvc_add_is_refused(tmp_path, stream):
    repo = tmp_path / "repo"
    versions.init_repo(repo, str(tmp_path / "remote"))
    shutil.copytree(stream[0], repo / "data")
    versions.add_and_push(repo)
    next(iter((repo / "data" / "train" / "dress").iterdir())).unlink()
    with pytest.raises(DataError, match="does not match the data folder.*dvc add"):
        versions.check_matches(repo)
    (repo / "data.dvc").write_text("outs: 3\n")
    with pytest.raises(DataError, match="malformed"):
        versions.read_data_version(repo / "data.dvc")
    (repo / "data.dvc").unlink()
    with pytest.raises(DataError, match="data.dvc is missing: track the data folder with `dvc add data`"):
        versions.read_data_version(repo / "data.dvc")


def test_data_versions_push_and_pull_through_s3(tmp_path, stream, bucket, s3_server):
    repo = tmp_path / "repo"
    versions.init_repo(repo, f"s3://{bucket}/dvc")
    versions.dvc(repo, "remote", "modify", "storage", "endpointurl", os.environ["AWS_ENDPOINT_URL_S3"])
    shutil.copytree(stream[0], repo / "data")
    version = versions.add_and_push(repo)
    assert boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix="dvc/")["KeyCount"] > 100
    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / ".dvc" / "cache")
    versions.pull(repo)
    versions.check_matches(repo)
    assert versions.read_data_version(repo / "data.dvc") == version
    assert len(list((repo / "data" / "train").rglob("*.png"))) == 4 * 80
    config = (repo / ".dvc" / "config").read_text()
    assert s3_server["AWS_SECRET_ACCESS_KEY"] not in config  # credentials stay in the environment
