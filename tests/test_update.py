"""The update recipe end to end on a tiny real stream: what it writes, what it measures, what it refuses."""

import json
import shutil

import pytest
import torch

from pipeline.cli import main
from pipeline.config import Settings
from pipeline.data import DataError
from pipeline.data.fashion_mnist import materialize
from pipeline.model import CheckpointError, load_model, trainable_groups
from pipeline.train import run_session
from tests.conftest import empty_params, tiny_params


def test_sgm_update_writes_a_verified_model_directory_with_all_metrics(sgm_update):
    out, metrics = sgm_update
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "card.json", "metrics.json", "curve.csv",
                                                "curve.png", "manifest.json", "README.md"}
    model, card = load_model(out)
    assert card["class_names"][-2:] == ["coat", "sandal"] and card["parent"]["weights_sha256"]
    assert not any("lora" in name for name in model.state_dict())
    for key in ["old_acc_before", "min_old_acc", "stability_gap", "transient_gap", "recovery_iters",
                "gap_S_parent", "min_acc", "final_old_acc", "final_new_acc", "final_all_acc", "per_class_acc",
                "negative_flip_rate", "iterations", "samples_seen", "train_flops", "wall_s", "eval_s",
                "new_acc_at_start", "lr_at_end"]:
        assert key in metrics, key
    assert json.loads((out / "metrics.json").read_text())["iterations"] == metrics["iterations"]
    stages = metrics["stages_s"]  # the session's wall, step by step: every step once, together within the wall
    assert list(stages) == ["manifest", "parent", "plan", "inputs", "baseline", "prepare", "train", "eval", "loop_rest",
                            "final"]
    assert all(seconds >= 0 for seconds in stages.values()) and sum(stages.values()) <= metrics["wall_s"] + 0.05
    assert stages["train"] == metrics["train_s"] and stages["eval"] == metrics["eval_s"]
    curve = (out / "curve.csv").read_text().splitlines()
    assert curve[0] == "iteration,old_acc,new_acc,all_acc,train_s" and curve[1].startswith("0,")
    assert metrics["final_new_acc"] > 40  # the new classes were learnt
    assert metrics["lr_at_end"] <= tiny_params().update.lr / 12  # annealed: the last of 12 cooldown steps
    assert set(metrics["lr_peak"]) == {tiny_params().update.lr, tiny_params().sgm.head_lr}  # new classes: full rates


def test_old_class_head_rows_are_bit_identical_after_an_sgm_session(sgm_update, base_model):
    parent, _ = load_model(base_model)
    child, _ = load_model(sgm_update[0])
    assert torch.equal(child.head.weight[:4], parent.head.weight)
    assert torch.equal(child.head.bias[:4], parent.head.bias)


def test_vanilla_rehearsal_shows_the_stability_gap(tmp_path, stream, base_model):
    metrics = run_session(base_model, stream[1], tmp_path / "vanilla", tiny_params("update.lr=0.01"), "vanilla")
    assert metrics["min_old_acc"] < metrics["old_acc_before_eval"] - 5, metrics


@pytest.mark.parametrize("iterations", [1, 10])
def test_short_sessions_get_a_valid_schedule(tmp_path, stream, base_model, iterations):
    # 10 iterations at warmup_share 0.1 made OneCycleLR divide by zero (a 1-step warm-up)
    params = tiny_params(f"update.max_iters={iterations}", f"update.min_iters={iterations}")
    assert run_session(base_model, stream[1], tmp_path / "m", params, "vanilla")["iterations"] == iterations


def test_update_refuses_a_removed_file_and_trains_nothing(tmp_path, stream, base_model):
    data = tmp_path / "data"
    shutil.copytree(stream[1], data)
    victim = sorted((data / "train" / "dress").glob("*.png"))[0]
    victim.unlink()
    with pytest.raises(DataError, match=victim.name):
        run_session(base_model, data, tmp_path / "out", tiny_params(), "sgm")
    assert not (tmp_path / "out").exists()


def test_cli_update_and_evaluate(tmp_path, stream, base_model, capsys):
    args = ["--set", "update.max_iters=6", "--set", "update.min_iters=6", "--set", "gate.old_acc_margin=20"]
    for tiny in tiny_params().model.model_dump().items():
        args += ["--set", f"model.{tiny[0]}={tiny[1]}"]
    code = main(["update", "--parent", str(base_model), "--data", str(stream[1]), "--out", str(tmp_path / "m"),
                 "--method", "vanilla", "--params", str(empty_params(tmp_path)), *args])
    assert code == 0 and json.loads(capsys.readouterr().out)["iterations"] == 6
    report = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(tmp_path / "m"), "--data", str(stream[1]), "--output", str(report)]) == 0
    assert set(json.loads(report.read_text())["per_class_acc"]) == {"t-shirt_top", "trouser", "pullover", "dress",
                                                                    "coat", "sandal"}
    assert main(["update", "--parent", str(base_model), "--data", str(stream[1]), "--out", str(tmp_path / "x"),
                 "--method", "nonsense"]) == 2


def test_the_schedule_warms_up_holds_and_anneals_to_zero():
    from pipeline.train.loop import Schedule

    schedule = Schedule(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), 100, 0.1, 0.3)
    lrs = []
    for iteration in range(schedule.end):
        schedule.set(iteration)
        lrs.append(schedule.optimizer.param_groups[0]["lr"])
    assert lrs[:10] == sorted(lrs[:10]) and lrs[0] == pytest.approx(0.1) and lrs[9] == 1.0  # 10 steps of warm-up
    assert set(lrs[10:70]) == {1.0} and lrs[70:] == sorted(lrs[70:], reverse=True)  # then 30 of cooldown...
    assert lrs[-1] == pytest.approx(1 / 30)  # ...whose last step runs at a thirtieth of the rate


def test_the_budget_follows_what_arrived():
    from pipeline.config import UpdateParams
    from pipeline.methods.plan import sampling_weights, update_budget

    targets = torch.tensor([0] * 400 + [1] * 400 + [2] * 100)  # classes 0, 1 old; 2 new
    fresh = targets == 2
    weights = sampling_weights(targets, fresh, 0.5, 0.3)
    # one new class takes the new classes' share of a batch (not 1/3 of it); the old classes share the rest equally
    assert torch.allclose(torch.stack([weights[targets == c].sum() for c in range(3)]),
                          torch.tensor([0.25, 0.25, 0.5]))
    assert torch.allclose(torch.stack([w[targets == 2].sum() for w in (sampling_weights(targets, fresh, 0.2, 0.5),)]),
                          torch.tensor([0.2]))  # the grown classes' share plays no part
    p = UpdateParams(new_data_passes=2, batch_size=10, min_iters=5, max_iters=1000)
    assert update_budget(p, weights, fresh) == 40  # 2 passes over 100 new samples at half of a batch of 10
    assert update_budget(p.model_copy(update={"max_iters": 30}), weights, fresh) == 30
    # data growth: every class keeps its equal share of a batch, and inside a class its new files take the new
    # share of its draws, however few they are; a class that grew alone is not half of every batch
    grown = torch.zeros(900, dtype=torch.bool)
    grown[:100] = grown[400:410] = True
    weights = sampling_weights(targets, grown, 0.5, 0.25)
    assert torch.allclose(torch.stack([weights[targets == c].sum() for c in range(3)]), torch.full((3,), 1 / 3))
    assert weights[:100].sum() == pytest.approx(0.25 / 3) and weights[400:410].sum() == pytest.approx(0.25 / 3)
    burst = torch.zeros(900, dtype=torch.bool)
    burst[:100] = True  # only class 0 got new files
    weights = sampling_weights(targets, burst, 0.25, 0.5)
    assert weights[targets == 0].sum() == pytest.approx(1 / 3) and weights[burst].sum() == pytest.approx(1 / 6)


def test_a_new_class_takes_its_own_share_of_each_batch(stream, base_model):
    """The plan wires `update.new_class_share` to the new classes and `update.new_share` to grown classes only: on
    a new-class increment (v2 adds classes 4 and 5, 160 images) the new classes' share of the draws and the budget
    follow the first and ignore the second."""
    from pipeline.data import build_manifest
    from pipeline.methods.plan import plan_update
    from pipeline.train.session import read_parent

    manifest = build_manifest(stream[1])
    parent = read_parent(base_model, manifest, stream[1], torch.device("cpu"))
    for class_share, grown_share, budget in ((0.25, 0.5, 40), (0.5, 0.5, 20), (0.25, 0.2, 40)):
        params = tiny_params(f"update.new_class_share={class_share}", f"update.new_share={grown_share}",
                             "update.min_iters=0", "update.max_iters=1000")
        plan = plan_update("sgm", params, manifest, parent)
        new = torch.tensor([name in parent.diff.new_classes for _, name in plan.entries])
        batches = plan.draw(torch.Generator().manual_seed(0))
        drawn = torch.cat([next(batches) for _ in range(300)])
        assert plan.budget == budget  # 2 passes over 160 new images at their share of a batch of 32
        assert float(new[drawn].float().mean()) == pytest.approx(class_share, abs=0.02)


def test_training_decisions_never_look_at_test_images(tmp_path, stream, base_model):
    """Other test images, the same model: nothing a session decides (init scale, budget, path) reads them."""
    data = tmp_path / "more-test"
    shutil.copytree(stream[1], data)
    materialize(Settings().fashion_mnist_dir, data, [0, 1, 2, 3, 4, 5], train_per_class=80, test_per_class=70)
    first = run_session(base_model, stream[1], tmp_path / "a", tiny_params(), "auto")
    second = run_session(base_model, data, tmp_path / "b", tiny_params(), "auto")
    assert first["path_choice"] == second["path_choice"]
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_existing_output_is_refused_before_any_training(tmp_path, stream, base_model):
    (tmp_path / "taken").mkdir()
    with pytest.raises(CheckpointError, match="immutable"):
        run_session(base_model, stream[1], tmp_path / "taken", tiny_params(), "sgm")


def test_a_data_growth_update_starts_exactly_at_the_parent(tmp_path, stream, base_model):
    """Iteration 0 is the parent itself: nothing before the first step (e.g. the FLOP count's forward pass)
    may move BatchNorm statistics. A single-class first batch once cost a tiny model 60 points here."""
    data = tmp_path / "grown"
    shutil.copytree(stream[0], data)
    materialize(Settings().fashion_mnist_dir, data, [0, 1, 2, 3], train_per_class=90, test_per_class=40)
    parent, _ = load_model(base_model)
    p = tiny_params()
    for method in ("sgm", "vanilla"):
        metrics = run_session(base_model, data, tmp_path / method, p, method)
        first = (tmp_path / method / "curve.csv").read_text().splitlines()[1].split(",")
        assert metrics["kind"] == "data-growth" and float(first[1]) == metrics["old_acc_before_eval"], method
        # the same rates as a class-incremental session: the trained layers at update.lr, the head at its own
        assert sorted(set(metrics["lr_peak"])) == pytest.approx(sorted({p.update.lr, p.sgm.head_lr}))
        # no new output units: the head learns (old-row freezing is for sessions that add classes)
        assert not torch.equal(load_model(tmp_path / method)[0].head.weight, parent.head.weight), method


def test_a_warm_start_is_the_retrains_recipe_from_the_parents_weights(tmp_path, stream, base_model):
    """The baseline beside an update: the retrain's epochs over every training file at the retrain's rate, but its
    first evaluation is the parent itself."""
    data = tmp_path / "grown"
    shutil.copytree(stream[0], data)
    materialize(Settings().fashion_mnist_dir, data, [0, 1, 2, 3], train_per_class=90, test_per_class=40)
    p = tiny_params("train.epochs=1")
    metrics = run_session(base_model, data, tmp_path / "warm", p, "warm_start")
    first = (tmp_path / "warm" / "curve.csv").read_text().splitlines()[1].split(",")
    assert metrics["method"] == "warm_start" and float(first[1]) == metrics["old_acc_before_eval"]
    assert metrics["iterations"] == -(-4 * 90 // p.train.batch_size) and set(metrics["lr_peak"]) == {p.train.lr}


def test_an_update_keeps_the_parents_batchnorm_statistics(stream, base_model, sgm_update):
    def statistics(model):
        return {n: b for n, b in model.named_buffers() if "running_" in n}

    parent, _ = load_model(base_model)
    trained = tuple(f"backbone.{g}" for g in trainable_groups(parent, tiny_params().model.frozen_groups))
    before, kept = statistics(parent), statistics(load_model(sgm_update[0])[0])
    assert any(n.startswith(trained) for n in before) and any(not n.startswith(trained) for n in before)
    assert all(torch.equal(before[n], kept[n]) for n in before)  # the trained stages' too (screened: docs)
