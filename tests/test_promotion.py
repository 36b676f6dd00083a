"""Promotion safety: the cheaper path is chosen before training, a rejected update falls back to a retrain,
bad input is refused before any training, and an interrupted command says so with exit code 130."""

import os
import shutil
import signal
import subprocess
import sys

import pytest

from pipeline.cli import main
from pipeline.train import run_session
from tests.conftest import LENIENT, TINY, empty_params, flow_repo_at_v2, tiny_params


@pytest.mark.parametrize(("epochs", "chosen"), [(12, "sgm"), (1, "retrain")])
def test_auto_trains_the_cheaper_path(tmp_path, stream, base_model, epochs, chosen):
    """The update's budget is 40 iterations of 32 samples; a retrain of 480 images costs 12 epochs (5760
    samples: update) or 1 epoch (480 samples: retrain)."""
    metrics = run_session(base_model, stream[1], tmp_path / "m", tiny_params(f"train.epochs={epochs}"), "auto")
    choice = metrics["path_choice"]
    assert metrics["method"] == choice["chosen"] == chosen
    assert choice["estimated_samples"] == {"sgm": 40 * 32, "retrain": 12 * 15 * 32 if epochs == 12 else 15 * 32}


def test_a_misspelt_test_folder_is_refused_by_the_cli_naming_both_sides(tmp_path, stream, base_model, capsys):
    """test/coat renamed test/caot: the refusal names the class without test images and the folder that explains
    it, in one message, exit 2, before anything trains."""
    data = tmp_path / "data"
    shutil.copytree(stream[1], data)
    (data / "test" / "coat").rename(data / "test" / "caot")
    args = [arg for override in TINY for arg in ("--set", override)]
    assert main(["update", "--parent", str(base_model), "--data", str(data), "--out", str(tmp_path / "out"),
                 *args]) == 2
    error = capsys.readouterr().err
    assert "['coat'] have training images but no test images" in error
    assert "['caot'] have test images but no training images" in error
    assert not (tmp_path / "out").exists()


def test_ctrl_c_exits_130_and_leaves_nothing(tmp_path, stream, base_model):
    args = [arg for override in [*TINY, "update.max_iters=100000", "update.min_iters=100000"]
            for arg in ("--set", override)]
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "update", "--parent", str(base_model), "--data", str(stream[1]),
         "--out", str(out), "--method", "sgm", "--params", str(empty_params(tmp_path)), *args],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PIPELINE_FEATURE_CACHE_MB": "0"},
        # a background job of a non-interactive shell inherits SIGINT ignored; a person's terminal does not
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in process.stderr:
        if " iter " in line and "iter    0" not in line:  # training has started
            break
    process.send_signal(signal.SIGINT)
    rest = process.stderr.read()
    assert process.wait(timeout=60) == 130
    assert "interrupted" in rest and "Traceback" not in rest
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


@pytest.mark.slow  # two whole flows
def test_a_rejected_update_falls_back_to_a_retrain(prefect_harness, tmp_path, stream, monkeypatch):
    from flows.update_model import update_model
    from pipeline.registry import DiskStore, Registry

    # one update step cannot learn the new classes (new-class accuracy below the gate's 30); a retrain can
    params = tiny_params(*LENIENT, "update.method=sgm", "update.max_iters=1", "update.min_iters=1")
    repo = flow_repo_at_v2(tmp_path, stream, params, monkeypatch)
    state = update_model(workspace=str(repo), return_state=True)
    out = state.result(raise_on_failure=False)
    assert state.is_completed(), state.message
    assert set(out["metrics"]) == {"sgm", "retrain (fallback)"} and out["version"] == "v0003"
    registry = Registry(DiskStore(tmp_path / "models"), tmp_path / "cache")
    assert registry.info("v0002")["gate"]["decision"] == "reject" and registry.resolve("champion") == "v0003"
    assert registry.info("v0003")["method"] == "retrain"
    report = open(out["report"]).read()
    assert "v0002 (sgm" in report and "v0003 (retrain" in report

