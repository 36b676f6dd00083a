"""The promotion gate on real updates: it passes a rehearsed update, rejects a forgetful one, errors on nonsense."""

import json
import shutil

import pytest
import torch

from pipeline.cli import main
from pipeline.gate import GateError, drop_upper_bound, judge
from pipeline.model import load_card, load_model, save_model
from pipeline.train import update
from tests.conftest import LENIENT, tiny_params


@pytest.fixture(scope="module")
def forgetful(tmp_path_factory, stream, base_model):
    """Fine-tuned on the new classes alone: no rehearsal, so it forgets the old classes."""
    out = tmp_path_factory.mktemp("forgetful") / "v2"
    update(base_model, stream[1], out, tiny_params("update.rehearsal_per_class=0"), "vanilla")
    return out


@pytest.fixture(scope="module")
def rehearsed(tmp_path_factory, stream, base_model):
    out = tmp_path_factory.mktemp("rehearsed") / "v2"
    update(base_model, stream[1], out, tiny_params("update.max_iters=60", "update.min_iters=60"), "sgm")
    return out


def test_the_gate_rejects_fine_tuning_without_rehearsal(forgetful, rehearsed, base_model, stream):
    rules = tiny_params(*LENIENT).gate
    bad, good = judge(forgetful, base_model, stream[1], rules), judge(rehearsed, base_model, stream[1], rules)
    assert bad["decision"] == "reject"
    for rule in ("among old classes", "all outputs", "negative flip rate"):  # forgetting shows in each
        assert any(rule in reason for reason in bad["reasons"]), rule
    assert bad["evidence"]["candidate_old_acc"] < good["evidence"]["candidate_old_acc"] - 20
    assert good["decision"] == "promote", good["reasons"]
    # the bound sits above the point estimate, unless the two agree on every one of the 160 old test images
    assert good["evidence"]["old_acc_drop_bound"] >= good["evidence"]["old_acc_drop"]


def test_gate_cli_exit_codes_and_decision_recorded_in_the_card(forgetful, rehearsed, base_model, stream, tmp_path,
                                                                 capsys):
    args = ["--champion", str(base_model), "--data", str(stream[1])] + [f"--set={s}" for s in LENIENT]
    candidate = tmp_path / "candidate"
    shutil.copytree(forgetful, candidate)
    assert main(["gate", "--candidate", str(candidate), "--output", str(tmp_path / "gate.json"), *args]) == 1
    assert "REJECT" in capsys.readouterr().out and load_card(candidate)["gate"]["decision"] == "reject"
    assert json.loads((tmp_path / "gate.json").read_text())["decision"] == "reject"
    shutil.rmtree(candidate)
    shutil.copytree(rehearsed, candidate)
    assert main(["gate", "--candidate", str(candidate), *args]) == 0
    assert load_card(candidate)["gate"]["evidence"]["champion"] == load_card(base_model)["weights_sha256"]


def test_a_candidate_not_grown_from_the_champion_is_an_error(rehearsed, base_model, stream, capsys):
    args = ["--data", str(stream[1])]
    assert main(["gate", "--candidate", str(base_model), "--champion", str(rehearsed), *args]) == 2
    assert "do not extend the champion" in capsys.readouterr().err


def test_a_class_without_test_images_is_an_error_not_a_pass(rehearsed, base_model, stream, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(stream[1], data)
    shutil.rmtree(data / "test" / "coat")
    with pytest.raises(GateError, match="'coat' has no test images"):
        judge(rehearsed, base_model, data, tiny_params(*LENIENT).gate)


def test_the_drop_bound_is_wider_on_small_test_sets():
    champion = torch.ones(1000, dtype=torch.bool)
    candidate = champion.clone()
    candidate[:20] = False  # 2 points lower
    assert drop_upper_bound(candidate, champion, 0.95) == pytest.approx(2.0 + 1.645 * 100 * 0.14 / 31.6, abs=0.05)
    assert drop_upper_bound(candidate[::10], champion[::10], 0.95) > 4  # same 2-point drop on 100 images


def _regressed(base_model, out, class_index: int, delta: float):
    """The champion with one class's bias lowered: the same classes, a few of its images now lost."""
    model, card = load_model(base_model)
    with torch.no_grad():
        model.head.bias[class_index] += delta
    save_model(out, model, {k: v for k, v in card.items() if k not in ("weights_sha256", "num_classes")})
    return out


def test_non_inferiority_promotes_an_equal_model_and_rejects_a_small_regression(base_model, stream, tmp_path):
    rules = tiny_params("gate.min_class_acc=0").gate  # the defaults: not worse, bound within old_acc_margin
    equal = judge(base_model, base_model, stream[0], rules)
    assert equal["decision"] == "promote" and equal["evidence"]["old_acc_drop"] == 0, equal["reasons"]
    for delta in (-0.5, -1.0, -2.0, -4.0, -8.0):  # the smallest push that loses some of class 0's images
        worse = judge(_regressed(base_model, tmp_path / f"worse{delta}", 0, delta), base_model, stream[0], rules)
        if worse["evidence"]["old_acc_drop"] > 0:
            break
    assert worse["decision"] == "reject" and worse["evidence"]["old_acc_drop"] > 0
    assert any("drop among old classes" in reason for reason in worse["reasons"])
