"""The promotion gate on real updates: it passes a rehearsed update, rejects a forgetful one, errors on nonsense."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from pipeline.cli import main
from pipeline.data import build_manifest
from pipeline.evaluate import PredictionCache
from pipeline.evaluate.paired import images_needed
from pipeline.gate import GateError, decide, judge
from pipeline.model import load_card, load_model, save_model
from pipeline.runtime import Runtime
from pipeline.train import run_session
from tests.conftest import LENIENT, TINY, tiny_params


@pytest.fixture(scope="module")
def forgetful(tmp_path_factory, stream, base_model):
    """Fine-tuned on the new classes alone: no rehearsal, so it forgets the old classes."""
    out = tmp_path_factory.mktemp("forgetful") / "v2"
    run_session(base_model, stream[1], out, tiny_params("update.rehearsal_per_class=0"), "vanilla")
    return out


@pytest.fixture(scope="module")
def rehearsed(tmp_path_factory, stream, base_model):
    out = tmp_path_factory.mktemp("rehearsed") / "v2"
    run_session(base_model, stream[1], out, tiny_params("update.max_iters=60", "update.min_iters=60"), "sgm")
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


def test_a_class_without_test_images_is_an_error_not_a_pass(rehearsed, base_model, stream, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(stream[1], data)
    shutil.rmtree(data / "test" / "coat")
    code = main(["gate", "--candidate", str(rehearsed), "--champion", str(base_model), "--data", str(data),
                 "--no-record", *[f"--set={s}" for s in LENIENT]])
    assert code == 2 and "'coat' has no test images" in capsys.readouterr().err


def test_a_metric_that_cannot_be_computed_is_an_error_never_a_pass():
    rules, none = tiny_params(*LENIENT).gate, torch.tensor([], dtype=torch.long)
    new_only = torch.tensor([2, 2, 3, 3])  # not one old-class test image: every old-class metric is NaN
    with pytest.raises(GateError, match="old_acc_drop_bound is nan: nothing to judge it on"):
        decide(none, new_only, none, new_only, ["a", "b", "c", "d"], 2, rules)
    labelled = torch.tensor([0, 0, 1, 1, 2, 2])  # class d has no test image: its accuracy is missing
    with pytest.raises(GateError, match="class 'd' has no test images"):
        decide(labelled[:4], labelled, labelled[:4], labelled, ["a", "b", "c", "d"], 2, rules)


def _regressed(base_model, out, classes: int | list[int], delta: float):
    """The champion with some classes' biases lowered: the same classes, a few of their images now lost."""
    model, card = load_model(base_model)
    with torch.no_grad():
        model.head.bias[classes] += delta
    save_model(out, model, {k: v for k, v in card.items() if k not in ("weights_sha256", "num_classes")})
    return out


def test_non_inferiority_promotes_an_equal_model_and_rejects_a_regression_beyond_the_margin(base_model, stream,
                                                                                           tmp_path):
    rules = tiny_params("gate.min_class_acc=0", "gate.max_negative_flip_rate=100").gate  # the bound alone
    equal = judge(base_model, base_model, stream[0], rules)
    assert equal["decision"] == "promote" and equal["evidence"]["old_acc_drop"] == 0, equal["reasons"]
    # the smallest push that costs more than the margin: class 0 alone (its 40 of the 160 images) may not reach 20
    # points on every machine's model, so the push widens to more classes
    pushes = [([0], delta) for delta in (-1.0, -2.0, -4.0, -8.0, -16.0)] + [([0, 1], -16.0), ([0, 1, 2], -16.0)]
    for classes, delta in pushes:
        worse = judge(_regressed(base_model, tmp_path / f"worse{len(classes)}{delta}", classes, delta), base_model,
                      stream[0], rules)
        if worse["evidence"]["old_acc_drop"] > rules.old_acc_margin:
            break
    assert worse["decision"] == "reject" and worse["evidence"]["old_acc_drop"] > rules.old_acc_margin
    assert worse["reasons"] == [f"old-class accuracy drop among old classes (upper bound) "
                                f"{worse['evidence']['old_acc_drop_bound']} violates <= {rules.old_acc_margin}"]


def test_a_test_split_too_small_for_the_margin_is_refused_before_training(base_model, stream, tmp_path, capsys):
    """160 old-class test images cannot decide at a 2-point margin: exit 2 before anything trains, naming how often
    an equally good candidate would pass and the images needed; a wider margin lets it run."""
    out = tmp_path / "out"
    args = ["update", "--parent", str(base_model), "--data", str(stream[1]), "--out", str(out),
            *[arg for override in TINY for arg in ("--set", override)]]
    assert main([*args, "--set", "gate.old_acc_margin=2"]) == 2
    error = capsys.readouterr().err
    assert "160 old-class test images cannot decide at gate.old_acc_margin=2.0" in error
    needed = int(error.split("About ")[1].split(" old-class test images are needed")[0])
    error_rate = 1 - json.loads((base_model / "metrics.json").read_text())["final_all_acc"] / 100
    assert needed == images_needed(0.6 * error_rate, 2, 0.95, 0.95) > 160
    assert not out.exists()
    assert main([*args, "--set", "gate.old_acc_margin=20"]) == 0 and (out / "model.safetensors").exists()


def _chain_of_two_regressions(base_model, data, tmp_path, rules) -> tuple[Path, Path, float, float]:
    """v1 = the base with class 0's bias lowered, v2 = v1 with class 1's lowered, each by the smallest push of a
    ladder that makes the premise true on the model this machine trained (another CPU's kernels train another
    model, on which a fixed push may even help): v1 below the base, v2 below v1, and v2 further below the base
    than below v1. Returns v1, v2 and v2's drop bounds against v1 and against the base."""
    pushes = (-1.0, -2.0, -3.0, -4.0, -6.0, -8.0, -12.0)
    for first in pushes:
        v1 = _regressed(base_model, tmp_path / f"v1{first}", 0, first)
        if judge(v1, base_model, data, rules)["evidence"]["old_acc_drop"] <= 0:
            continue
        for second in pushes:
            v2 = _regressed(v1, tmp_path / f"v2{first}{second}", 1, second)
            to_champion = judge(v2, v1, data, rules)["evidence"]
            to_reference = judge(v2, base_model, data, rules)["evidence"]["old_acc_drop_bound"]
            if to_champion["old_acc_drop"] > 0 and 0 < to_champion["old_acc_drop_bound"] < to_reference:
                return v1, v2, to_champion["old_acc_drop_bound"], to_reference
    raise AssertionError("no pair of bias pushes makes a chain of two small regressions: the premise is unbuilt")


def test_a_chain_of_small_regressions_is_stopped_by_the_fixed_reference(base_model, stream, tmp_path):
    """v1 a little below the base, v2 a little below v1: against its champion v1 alone v2 passes, against the
    base (the chain's reference) it does not; the card records how much of the margin the chain has used."""
    loose = tiny_params("gate.min_class_acc=0", "gate.max_negative_flip_rate=100", "gate.old_acc_margin=100").gate
    v1, v2, to_champion, to_reference = _chain_of_two_regressions(base_model, stream[0], tmp_path, loose)
    rules = loose.model_copy(update={"old_acc_margin": (to_champion + to_reference) / 2})
    assert judge(v2, v1, stream[0], rules)["decision"] == "promote"
    chained = judge(v2, v1, stream[0], rules, reference_dir=base_model)
    assert chained["decision"] == "reject"
    assert chained["reasons"] == [f"old-class accuracy drop against the reference (upper bound) {to_reference} "
                                  f"violates <= {rules.old_acc_margin}"]
    reference = chained["evidence"]["reference"]
    assert reference["weights_sha256"] == load_card(base_model)["weights_sha256"]
    assert reference["margin_used"] == pytest.approx(reference["old_acc_drop"] / rules.old_acc_margin, abs=0.01)
    assert reference["margin_used"] > 0


def test_the_gate_reads_predictions_made_once_and_drops_a_tampered_cache(base_model, stream, tmp_path):
    """The update writes its candidate's logits; the base's are written by a first gate. A second gate then decodes
    no test image at all (they are overwritten with noise here, and its evidence is unchanged); a cache file whose
    checksum fails is dropped and its rows predicted again."""
    cache = PredictionCache(tmp_path / "predictions")
    runtime = Runtime(predictions=cache)
    candidate = tmp_path / "candidate"
    run_session(base_model, stream[1], candidate, tiny_params(), "sgm", runtime=runtime)
    weights = load_card(candidate)["weights_sha256"]
    assert (tmp_path / "predictions" / f"{weights}.safetensors").exists()
    rules = tiny_params(*LENIENT).gate
    data = tmp_path / "data"
    shutil.copytree(stream[1], data)
    manifest = build_manifest(data)
    first = judge(candidate, base_model, data, rules, runtime, manifest=manifest)
    for image in (data / "test").glob("*/*.png"):
        image.write_bytes(b"not an image")
    again = judge(candidate, base_model, data, rules, runtime, manifest=manifest)
    assert again["evidence"] == first["evidence"]
    (tmp_path / "predictions" / f"{weights}.safetensors").write_bytes(b"tampered")
    shutil.rmtree(data)
    shutil.copytree(stream[1], data)
    recomputed = judge(candidate, base_model, data, rules, runtime, manifest=manifest)
    assert recomputed["evidence"] == first["evidence"]
    assert (tmp_path / "predictions" / f"{weights}.safetensors").stat().st_size > 1000
