"""The benchmarks' arithmetic: the growth stream's sizes and its cumulative cost ratios; where they run and what
they record (no training)."""

import argparse
import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from benchmarks.gate_oc import draws, pushed
from benchmarks.growth import ARRIVAL, VERSIONS, per_class, summarize
from benchmarks.harness import (
    BURST,
    NEW_CLASS,
    benchmark_runtime,
    class_counts,
    git_commit,
    machine,
    materialize_streams,
    reuse_or_run,
    source_tag,
)
from benchmarks.harness import VERSIONS as PRODUCTION_VERSIONS
from benchmarks.production import summarize as summarize_production
from pipeline.config import load_params
from pipeline.device import DeviceError


def test_every_class_arrives_with_a_sixth_and_ends_with_all_of_its_images():
    for label, arrival in ARRIVAL.items():
        assert per_class(arrival - 1, label, "train", 0.5) == 0
        assert per_class(arrival, label, "train", 0.5) == 500
        assert per_class(VERSIONS, label, "train", 0.5) == 3000
        sizes = [per_class(v, label, "train", 0.5) for v in range(arrival, VERSIONS + 1)]
        assert sizes == sorted(sizes)


def _run(acc: float, wall: float, flops: int, train_s: float | None = None) -> dict:
    return {"final_all_acc": acc, "stability_gap": 1.0, "iterations": 10, "wall_s": wall,
            "train_s": train_s if train_s is not None else wall, "eval_s": 0.1 * wall, "train_flops": flops}


def _retrain(acc: float, wall: float, flops: int, shorter: dict[str, tuple[float, float, int]]) -> dict:
    run = _run(acc, wall, flops)
    run["budgets"] = {"3": {k: run[k] for k in ("final_all_acc", "iterations", "wall_s", "train_flops")}}
    for epochs, (a, w, f) in shorter.items():
        run["budgets"][epochs] = {"final_all_acc": a, "iterations": 5, "wall_s": w, "train_flops": f}
    return run


def test_cumulative_ratios_and_the_cheapest_retrain_that_reaches_the_update():
    rows = [
        # the 1-epoch retrain already reaches the update: iso cost is its 20 s
        {"version": 2, "default": _run(90.0, 10.0, 100, train_s=8.0),
         "retrain": _retrain(91.0, 60.0, 600, {"1": (90.5, 20.0, 200), "2": (90.8, 40.0, 400)})},
        # no retrain reaches the update: the session is left out of the iso ratio
        {"version": 3, "default": _run(95.0, 10.0, 100, train_s=8.0),
         "retrain": _retrain(94.0, 90.0, 900, {"1": (92.0, 30.0, 300), "2": (93.0, 60.0, 600)})},
    ]
    summary = summarize([rows], ["default"])
    cumulative = summary["cumulative"]["default"]
    assert cumulative["wall_ratio"] == 7.5 and cumulative["flops_ratio"] == 7.5  # (60 + 90) / (10 + 10)
    assert cumulative["iso_wall_ratio"] == 2.0 and cumulative["iso_flops_ratio"] == 2.0  # 20 / 10, version 2 only
    assert cumulative["iso_reached"] == "1 of 2 sessions" and cumulative["iso_budgets"] == ["1", "2", "3"]
    assert cumulative["update_fixed_share"] == 0.2 and cumulative["update_eval_share"] == 0.1
    assert [row["version"] for row in summary["table"]] == [2, 3]
    assert summary["table"][1]["retrain"]["final_all_acc"] == (94.0, 0.0)
    # accuracy against cost: the update and each retrain budget, per seed summed and averaged over its sessions
    points = {p["arm"]: p for p in summary["frontier"]}
    assert list(points) == ["default", *(f"retrain, train.epochs {e}" for e in (1, 2, 3))]
    assert points["default"] == {"arm": "default", "seeds": 1, "wall_s": (20, 0.0), "train_flops": (200, 0.0),
                                 "mean_acc": (92.5, 0.0), "mean_vs_retrain": (0.0, 0.0), "worst_vs_retrain": -1.0,
                                 "within_1": "2 of 2"}
    assert points["retrain, train.epochs 1"]["train_flops"] == (500, 0.0)
    assert points["retrain, train.epochs 1"]["within_1"] == "1 of 2"
    assert points["retrain, train.epochs 2"]["worst_vs_retrain"] == -1.0
    assert points["retrain, train.epochs 3"]["mean_acc"] == (92.5, 0.0)
    # a second seed whose update ends 3 points lower at v2; a third still under way (v2 only) is left out
    second = [{**rows[0], "default": _run(87.0, 30.0, 300)}, rows[1]]
    points = {p["arm"]: p for p in summarize([rows, second, rows[:1]], ["default"])["frontier"]}
    assert points["default"]["seeds"] == 2 and points["default"]["wall_s"] == (30, 14.142)
    assert points["default"]["mean_acc"] == (91.75, 1.061)  # per seed 92.5 and 91.0
    assert points["default"]["mean_vs_retrain"] == (-0.75, 1.061)  # per seed 0.0 and -1.5
    assert points["default"]["worst_vs_retrain"] == -4.0 and points["default"]["within_1"] == "3 of 4"


def test_benchmarks_run_on_the_device_the_settings_name(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_DEVICE", "cpu")
    assert benchmark_runtime(tmp_path / "features").device == torch.device("cpu")
    monkeypatch.setenv("PIPELINE_DEVICE", "cuda:7")  # not there, here or on a one-GPU host
    with pytest.raises(DeviceError, match="cuda:7"):
        benchmark_runtime(tmp_path / "features")


def test_a_copy_of_the_tree_without_git_names_its_commit(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_COMMIT", "08ebfb1")
    monkeypatch.chdir(tmp_path)  # not a git checkout
    assert git_commit() == "08ebfb1"
    monkeypatch.setenv("PATH", str(tmp_path))  # no git at all
    assert git_commit() == "08ebfb1"


def test_results_files_rewritten_beside_a_run_leave_its_commit_clean_and_code_does_not(tmp_path, monkeypatch):
    import subprocess

    monkeypatch.chdir(tmp_path)
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    for path in ("code.py", "benchmarks/results/parity.json"):
        (tmp_path / path).write_text("1")
    for command in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c"]):
        subprocess.run(["git", *command], check=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    (tmp_path / "benchmarks/results/parity.json").write_text("2")
    assert git_commit() == head
    (tmp_path / "code.py").write_text("2")
    assert git_commit() == f"{head}-dirty"


def test_an_unknown_stream_is_refused_before_anything_is_written(tmp_path):
    args = argparse.Namespace(streams=["class-incremental", "growth"], per_class=10, growth_from=5, growth_to=6,
                              test_per_class=5, imagefolder=None)
    with pytest.raises(SystemExit, match="--streams growth: not a stream; give class-incremental and/or data-growth"):
        materialize_streams(tmp_path / "data", args)
    assert not (tmp_path / "data").exists()


def _folder(root, classes: list[str], train: int, test: int):
    for split, count in [("train", train), ("test", test)]:
        for number, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for index in range(count):  # distinct grey images, but test image 0 repeats train image 0 (a leak)
                shade = number * 10 + index if split == "train" or index == 0 else 100 + number * 10 + index
                Image.new("L", (8, 8), shade).save(root / split / name / f"{index:03d}.png")


def test_any_imagefolder_becomes_a_class_incremental_stream_and_a_growth_stream(tmp_path):
    _folder(tmp_path / "src", ["a", "b", "c", "d", "e"], train=6, test=4)
    args = argparse.Namespace(streams=["class-incremental", "data-growth"], per_class=5, growth_from=2, growth_to=4,
                              test_per_class=3, imagefolder=tmp_path / "src")
    tag = source_tag(args)
    streams = materialize_streams(tmp_path / "data", args, tag)

    def listing(version, split):
        return {c.name: sorted(f.name for f in c.iterdir()) for c in (version / split).iterdir()}

    v1, v2, v3 = streams["class-incremental"]
    assert sorted(listing(v1, "train")) == ["a", "b", "c"]  # five classes: 3, +1, +1
    assert sorted(listing(v2, "train")) == ["a", "b", "c", "d"] and sorted(listing(v3, "train")) == list("abcde")
    assert listing(v3, "train")["e"] == [f"{i:03d}.png" for i in range(5)]  # the first --per-class by name
    assert listing(v3, "test")["e"] == ["001.png", "002.png", "003.png"]  # the leaked copy of a train image is out
    growth = [listing(v, "train") for v in streams["data-growth"]]
    assert [len(g["c"]) for g in growth] == [2, 4] and sorted(growth[0]) == list("abcde")
    assert materialize_streams(tmp_path / "data", args, tag) == streams  # built once, then reused
    assert tag.startswith("src-") and all(v.parent.name.startswith(tag) for vs in streams.values() for v in vs)
    Image.new("L", (8, 8), 255).save(tmp_path / "src" / "train" / "a" / "new.png")
    assert source_tag(args) != tag  # a changed tree is a new source: its versions and runs are not reused

    _folder(tmp_path / "two", ["a", "b"], train=2, test=1)
    with pytest.raises(SystemExit, match="2 class\\(es\\); a class-incremental stream needs 3 or more"):
        materialize_streams(tmp_path / "data", argparse.Namespace(**{**vars(args), "imagefolder": tmp_path / "two"}))


def test_a_finished_run_is_reused_only_with_the_same_params_code_and_machine(tmp_path):
    out, params, calls = tmp_path / "v2-default", load_params(Path("params.yaml")), []

    def run(acc: float) -> dict:
        calls.append(acc)
        out.mkdir(exist_ok=True)
        (out / "metrics.json").write_text(json.dumps({"final_all_acc": acc}))
        return {"final_all_acc": acc}

    assert reuse_or_run(out, params, run, 90.0) == {"final_all_acc": 90.0}
    assert reuse_or_run(out, params, run, 91.0) == {"final_all_acc": 90.0} and calls == [90.0]  # resumed
    other = load_params(Path("params.yaml"), ["update.lr=1e-3"])
    assert reuse_or_run(out, other, run, 92.0) == {"final_all_acc": 92.0}  # other params: redone
    stamp = tmp_path / "v2-default.provenance.json"
    assert json.loads(stamp.read_text())["machine"] == machine()  # e.g. "CPU AMD EPYC, AVX2 (2 cores, ...)"
    stamp.write_text(json.dumps({**json.loads(stamp.read_text()), "machine": "CPU of another machine"}))
    assert reuse_or_run(out, other, run, 93.0) == {"final_all_acc": 93.0} and calls == [90.0, 92.0, 93.0]


def test_a_run_of_an_engine_proven_identical_is_reused_at_todays_params(tmp_path, monkeypatch):
    """Runs made by an earlier engine count as today's only when equivalence.json proves that engine gives the same
    models, and only at today's params hash."""
    from benchmarks import harness

    params, out, calls = load_params(Path("params.yaml")), tmp_path / "v2-update", []
    stamp = {"params_hash": params.digest(), "code_hash": "0123456789abcdef", "machine": machine()}

    def made_before(params_hash: str) -> None:
        out.mkdir(exist_ok=True)
        (out / "metrics.json").write_text(json.dumps({"method": "sgm", "final_all_acc": 90.0}))
        out.with_name(out.name + ".provenance.json").write_text(json.dumps({**stamp, "params_hash": params_hash}))

    def run():
        calls.append(1)
        return {"method": "sgm", "final_all_acc": 91.0}

    made_before(params.digest())
    record = tmp_path / "benchmarks" / "results" / "equivalence.json"
    record.parent.mkdir(parents=True)
    proof = {"identical": True, "provenance": {"before": {"code_hash": "0123456789abcdef"},
                                               "after": {"code_hash": harness.engine_code()}}}
    record.write_text(json.dumps(proof))
    monkeypatch.chdir(tmp_path)
    harness.proven_equal.cache_clear()
    assert reuse_or_run(out, params, run) == {"method": "sgm", "final_all_acc": 90.0} and not calls
    made_before(load_params(Path(__file__).parents[1] / "params.yaml", ["update.new_class_share=0.25"]).digest())
    assert reuse_or_run(out, params, run) == {"method": "sgm", "final_all_acc": 91.0} and calls == [1]  # other params
    made_before(params.digest())
    record.write_text(json.dumps({**proof, "identical": False}))  # a model differed: nothing is reused
    harness.proven_equal.cache_clear()
    assert reuse_or_run(out, params, run) == {"method": "sgm", "final_all_acc": 91.0} and calls == [1, 1]
    harness.proven_equal.cache_clear()


def test_a_retrain_is_reused_when_what_it_reads_is_the_same(tmp_path):
    """A retrain reads seed, model, train and eval: another update setting leaves it the same run; another train
    setting does not."""
    from benchmarks import harness

    made = load_params(Path("params.yaml"), ["update.lr=1e-3"])
    out, calls = tmp_path / "v4-retrain", []

    def made_before():
        out.mkdir(exist_ok=True)
        (out / "metrics.json").write_text(json.dumps({"method": "retrain", "final_all_acc": 90.0}))
        (out / "card.json").write_text(json.dumps({"params": made.model_dump()}))
        out.with_name(out.name + ".provenance.json").write_text(json.dumps(
            {"params_hash": made.digest(), "code_hash": harness.engine_code(), "machine": machine()}))

    def run():
        calls.append(1)
        return {"method": "retrain", "final_all_acc": 91.0}

    made_before()
    other_update = load_params(Path("params.yaml"), ["update.new_share=0.25"])
    assert reuse_or_run(out, other_update, run) == {"method": "retrain", "final_all_acc": 91.0}  # reads nothing
    made_before()
    assert reuse_or_run(out, other_update, run, reads=harness.RETRAIN_READS)["final_all_acc"] == 90.0
    other_train = load_params(Path("params.yaml"), ["update.lr=1e-3", "train.epochs=2"])
    assert reuse_or_run(out, other_train, run, reads=harness.RETRAIN_READS)["final_all_acc"] == 91.0
    assert calls == [1, 1]


def test_gate_oc_draws_are_disjoint_and_stratified_and_a_push_costs_the_asked_drop():
    targets = torch.arange(10).repeat_interleave(130)  # 130 images per class
    chosen = draws(targets, 40)
    assert len(chosen) == 3 and all(torch.bincount(targets[index]).tolist() == [40] * 10 for index in chosen)
    assert len(torch.cat(chosen).unique()) == 3 * 400
    logits = torch.nn.functional.one_hot(targets, 10).float() * 2 + torch.rand(len(targets), 10)
    correct = logits.argmax(1) == targets
    moved = pushed(logits, correct, targets, 3, 2.0)
    lost = 100 * (correct.float().mean() - (moved.argmax(1) == targets).float().mean()).item()
    assert 2.0 <= lost < 2.0 + 100 / len(targets) + 1e-6  # the smallest push that loses 2 points (one image finer)
    assert pushed(logits, correct, targets, 3, 20.0) is None  # one class holds 10% of the images


def test_the_production_stream_grows_by_a_few_percent_with_two_new_classes_and_one_burst():
    counts = class_counts()
    assert len(counts) == PRODUCTION_VERSIONS >= 21
    for version, (before, after) in enumerate(zip(counts, counts[1:], strict=False), start=2):
        assert all(after[label] >= n for label, n in before.items())  # files are only added
        added = set(after) - set(before)
        growth = sum(after.values()) / sum(before.values()) - 1
        if version in NEW_CLASS:
            assert added == {NEW_CLASS[version][0]} and all(after[c] == before[c] for c in before)
        elif version in BURST:
            label, share = BURST[version]
            assert [c for c in before if after[c] != before[c]] == [label]
            assert after[label] == round(before[label] * (1 + share))
        else:
            assert not added and 0.009 <= growth <= 0.051, (version, growth)
    assert max(n for c in counts for n in c.values()) <= 6000  # Fashion-MNIST's train images per class


def _session(acc: float, flops: int, wall: float, method: str = "sgm", decision: str = "promote") -> dict:
    return {"method": method, "decision": decision, "final_all_acc": acc, "stability_gap": 1.0,
            "train_flops": flops, "wall_s": wall}


def test_a_data_growth_version_below_its_parent_is_beyond_the_noise_when_the_retrain_never_stepped_down():
    """The drift target's noise floor is the retrain's worst step down; a retrain that only rose gives none, so any
    drop below the parent counts, and a chain that rose less than the retrain did is not drift."""
    rows = [{"version": 1, "kind": "first version", "chain_all_acc": 90.0, "retrain_all_acc": 90.0}]
    for version, chain, retrain in ((2, 90.2, 90.5), (3, 90.1, 90.8)):
        rows.append({"version": version, "kind": "data-growth", "parent_all_acc": rows[-1]["chain_all_acc"],
                     "chain": [_session(chain, 10, 2.0)], "promoted": True, "chain_all_acc": chain,
                     "retrain": _session(retrain, 100, 20.0, "retrain", None), "retrain_all_acc": retrain})
    targets = summarize_production([rows])["targets"]
    assert targets["retrain_step_worst"] == 0.3 and targets["retrain_below_previous_version"] == [0, 2]
    assert [p["version"] for p in targets["data_growth_pairs_below_retrain_noise"]] == [3]  # 0.1 below v2's


def test_the_production_block_has_the_agreed_shape_and_its_ratios_count_fallbacks(monkeypatch):
    def seed(retrain_every: bool) -> list[dict]:
        rows = [{"version": 1, "kind": "first version", "chain_all_acc": 90.0, "retrain_all_acc": 91.5}]
        for version in (2, 3):
            chain = [_session(89.0, 10, 2.0, decision="reject"), _session(91.0, 100, 20.0, "retrain")] \
                if version == 3 else [_session(90.5, 10, 2.0)]
            if version == 2 and retrain_every:  # its gate saw a drop larger than the test split resolves
                chain[0]["gate_evidence"] = {"old_acc_drop": 0.9, "old_acc_drop_bound": 1.5, "resolvable_drop": 0.6,
                                             "discordance": 4.0}
            row = {"version": version, "kind": "data-growth", "parent_all_acc": 90.0, "chain": chain,
                   "promoted": True, "chain_all_acc": chain[-1]["final_all_acc"]}
            if retrain_every or version == 3:
                row["retrain"] = _session(91.0, 100, 20.0, "retrain", None)
                row["retrain_all_acc"] = 91.0
            if retrain_every:  # the shorter retrains: 1 epoch a point below, 2 epochs within ISO_TOLERANCE
                row["baselines"] = {"retrain, 1 epoch": _session(90.0, 33, 7.0, "retrain", None),
                                    "retrain, 2 epochs": _session(90.95, 67, 14.0, "retrain", None)}
            rows.append(row)
        return rows

    block = summarize_production([seed(True), seed(False)])
    assert block["seeds"] == 2
    v2, v3 = block["versions"]
    assert set(v2) >= {"version", "kind", "chain_all_acc", "chain_all_acc_std", "retrain_all_acc", "parent_all_acc",
                       "promoted", "chain_train_flops", "retrain_train_flops", "chain_wall_s", "retrain_wall_s"}
    assert v2["retrain_seeds"] == 1 and v3["retrain_seeds"] == 2 and v3["fallbacks"] == 2
    assert v3["chain_train_flops"] == 110  # the rejected update and its fallback retrain
    # only the seed that retrained at every version: (100 + 100) / (10 + 110)
    assert block["cumulative"]["flops_ratio"] == round(200 / 120, 2)
    assert block["cumulative"]["seeds_with_every_retrain"] == 1
    # every session that ran a retrain beside it, from both seeds: (100 + 100 + 100) / (10 + 110 + 110)
    assert block["cumulative"]["paired_flops_ratio"] == round(300 / 230, 2)
    assert block["cumulative"]["paired_sessions"] == 3
    # the whole stream per seed, a retrain not run costed at the seed's measured FLOPs per training image
    n2, n3 = (sum(c.values()) for c in class_counts(3)[1:])
    assert block["cumulative"]["stream_flops_ratio"] == round(((200 / 120) + (100 * n2 / n3 + 100) / 120) / 2, 3)
    # the targets: v2 -0.5 (seed 0's retrain alone), v3 0.0 (both seeds served the fallback retrain); no version
    # below its parent; half of the first candidates promoted; the retrain stepped down once in two pairs (v1 -> v2)
    targets = block["targets"]
    assert targets["chain_minus_retrain_mean"] == -0.25 and targets["chain_minus_retrain_worst"] == {
        "version": 2, "value": -0.5} and targets["versions_within_1"] == [2, 2]
    assert targets["data_growth_below_parent"] == [] and targets["first_candidate_promoted"] == 0.5
    assert targets["retrain_below_previous_version"] == [1, 2] and targets["retrain_step_worst"] == -0.5
    # per (seed, version) pair: seed 0's v2 and v3, seed 1's v3
    assert targets["pairs"] == 3 and targets["pairs_shared_versions"] == 1  # v3: both seeds weigh the same
    assert targets["pairs_chain_minus_retrain_mean"] == 0.0
    assert targets["pairs_worst"] == {"seed": 0, "version": 2, "value": -0.5} and targets["pairs_within_1"] == [3, 3]
    assert targets["data_growth_pairs_worst"]["value"] == 0.5 and targets["data_growth_pairs_below_retrain_noise"] == []
    resolved, gated = targets["data_growth_pairs_resolved_below_parent"]
    assert gated == 1 and [(p["seed"], p["version"], p["old_acc_drop"]) for p in resolved] == [(0, 2, 0.9)]
    assert targets["data_growth_pairs_resolved_above_parent"] == 0
    # the baselines against the 3-epoch retrain on the pairs that ran both; 2 epochs is the cheapest as accurate
    compared = block["baselines"]
    assert compared["retrain, 1 epoch"]["minus_retrain"] == -1.0 and compared["retrain, 2 epochs"]["pairs"] == 2
    assert compared["cheapest_equal"] == {"name": "retrain, 2 epochs", "flops_share": 0.67, "wall_share": 0.7}
    assert block["cumulative"]["iso_flops_ratio"] == round(round(200 / 120, 2) * 0.67, 2)
    # at the chain's own accuracy on those pairs (seed 0: v2 -0.5, v3 0.0), 1 epoch is -1.0: 2 epochs is the cheapest
    assert compared["retrain, 2 epochs"]["chain_minus_retrain"] == -0.25
    assert compared["cheapest_as_chain"] == {"name": "retrain, 2 epochs", "over_chain_flops": round(134 / 120, 2),
                                             "over_chain_wall": round(28 / 24, 2)}
    from benchmarks.tables import production_drift, production_headline, production_targets
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the gate's confidence, from params.yaml
    assert production_drift(block).startswith("of 1 served data-growth updates, the gate's paired test at its "
                                              "one-sided 95% resolves 1 below their parent")
    verdicts = production_targets(block)
    assert "3 of 3 pairs within 1.0 of their retrain (target all: met)" in verdicts
    assert "the mean over the pairs of the 1 versions every seed retrained +0.00 (target within 0.3: met)" in verdicts
    assert "(targets 20x and 10x: missed)" in verdicts  # 1.12x against the 2-epoch retrain
    assert "1 of the 1 served data-growth updates resolved below their parent by the gate's paired test" in verdicts
    prov = {"commit": "abc1234", "code_hash": "0" * 16, "params_hash": "1" * 16, "machine": "a CPU"}
    rendered = production_headline({**block, "provenance": prov, "runs": [seed(True), seed(False)]})
    assert "retrain, 1 epoch -1.00 (worst -1.00) at 0.33 of its train FLOPs" in rendered
    assert f"is the retrain, 2 epochs: against it the chain saves {block['cumulative']['iso_flops_ratio']}x" in rendered
    assert ("At the chain's own accuracy on the pairs that ran the baselines (-0.25 against the retrain), the cheapest "
            "baseline is the retrain, 2 epochs, at 1.12x the chain's train FLOPs" in rendered)


def test_a_seed_that_waits_for_its_machine_is_left_out_of_every_figure_and_summarized_apart(tmp_path):
    """A seed whose remaining runs wait for the machine that began them (empty in `runs`, its rows kept as
    `waiting_runs`) weighs in no pooled figure; its pairs so far are counted apart, and read back by --report."""
    from benchmarks.production import write_results
    from benchmarks.tables import production_claim

    def seed(chain_acc: float, versions: tuple[int, ...]) -> list[dict]:
        rows = [{"version": 1, "kind": "first version", "chain_all_acc": 90.0, "retrain_all_acc": 90.0}]
        for version in versions:
            rows.append({"version": version, "kind": "data-growth", "parent_all_acc": 90.0, "promoted": True,
                         "chain": [_session(chain_acc, 10, 2.0)], "chain_all_acc": chain_acc,
                         "retrain": _session(91.0, 100, 20.0, "retrain", None), "retrain_all_acc": 91.0})
        return rows

    whole, waiting = seed(90.5, (2, 3)), seed(89.5, (2,))
    prov = {"commit": "abc1234", "code_hash": "0" * 16, "params_hash": "1" * 16, "machine": "a CPU", "torch": "2",
            "command": "python -m benchmarks.production", "seconds": 1}
    write_results(tmp_path, prov, [[], whole], figure=False, name="p", waiting_runs={0: waiting})
    saved = json.loads((tmp_path / "p.json").read_text())
    assert saved["seeds"] == 1 and saved["runs"] == [[], whole] and saved["waiting_runs"] == {"0": waiting}
    targets = saved["targets"]  # seed 1 alone: both versions shared, each pair -0.5
    assert targets["pairs_shared_versions"] == 2 and targets["pairs_chain_minus_retrain_mean"] == -0.5
    assert targets["pairs_within_1"] == [2, 2] and saved["cumulative"]["seeds_with_every_retrain"] == 1
    assert saved["waiting"] == {"seeds": [0], "last_versions": [2], "pairs": 1, "pairs_within_1": 0,
                                "pairs_mean": -1.5, "pairs_worst": {"seed": 0, "version": 2, "value": -1.5}}
    assert ("Seed(s) 0 wait for the machine that began them (after v2) and are left out of every figure; their 1 "
            "(seed, version) pairs so far: 0 within 1.0 of their retrain, -1.50 on average, the worst seed 0 at v2, "
            "-1.50.") in (tmp_path / "p.md").read_text()
    write_results(tmp_path, saved["provenance"], saved["runs"], figure=False, name="q",
                  waiting_runs=saved["waiting_runs"])
    assert json.loads((tmp_path / "q.json").read_text()) == saved  # --report: the same file from the JSON
    assert production_claim(saved).endswith("; seed(s) 0, begun on another machine and not yet whole, are left out: "
                                            "0 of their 1 pairs so far within 1.0, -1.50 on average, the worst -1.50")


def test_the_chains_wall_is_split_into_the_sessions_steps_the_process_and_the_gate():
    from benchmarks.production import wall_shares

    session = {"stages_s": {"manifest": 1.0, "train": 5.0, "eval": 1.0}, "session_wall_s": 8.0, "gate_s": 2.0,
               "wall_s": 10.0}
    shares = wall_shares([session, session])
    assert shares == {"manifest": 0.1, "train": 0.5, "eval": 0.1, "outside the session's steps": 0.1, "gate": 0.2,
                      "outside_train_loop": 0.5, "seconds": 20.0}
    assert wall_shares([session, {**session, "stages_s": None}]) is None  # a run from before sessions timed steps


def test_the_docs_tables_are_the_results_files_rendered_and_a_stale_one_is_named(tmp_path, monkeypatch, capsys):
    from benchmarks import tables

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    assert tables.main(["--check"]) == 0, capsys.readouterr().err
    readme = Path("README.md").read_text()
    assert "<!-- table:make_run -->" in readme
    assert len(readme.splitlines()) <= 300, "README.md is the user guide: the rest belongs in docs/"
    assert any("<!-- table:parity_500.md#1,3,5 -->" in doc.read_text() for doc in tables.DOCS)
    stale = tmp_path / "README.md"  # a hand edit inside a generated table
    stale.write_text(readme.replace("| v1 |", "| v1 (edited) |", 1))
    monkeypatch.setattr(tables, "DOCS", [stale])
    assert tables.main(["--check"]) == 1 and "make_run" in capsys.readouterr().err
    assert tables.main([]) == 0 and stale.read_text() == readme  # rewritten from the results file
    with pytest.raises(ValueError, match="make_run"):  # a block the renderer cannot see is an error, not skipped
        tables.render("<!-- table:make_run -->\n<!-- /table:make_run -->\n")


def test_a_number_in_a_sentence_is_its_results_files_value_in_the_numbers_own_style(tmp_path, monkeypatch):
    from benchmarks import tables

    (tmp_path / "x.json").write_text(json.dumps({"rows": [{"seed": 0, "gap": -1.234, "share": 0.4489},
                                                          {"seed": 1, "gap": 0.5}], "files": 1234567, "commit": "abc"}))
    monkeypatch.setattr(tables, "RESULTS", tmp_path)

    def value(path: str, written: str) -> str:
        return f"<!-- value:x.json:{path} -->{written}<!-- /value -->"

    text = "figures: " + " ".join([value("rows[seed=0].gap", "−1.00"), value("rows[1].gap", "+0.5"),
                     value("rows[seed=0].share", "40%"), value("files", "1,000"),
                     value("rows[seed=0].gap|abs", "1.2"), value("commit", "0123abc")])
    rendered, stale = tables.render(text)
    assert rendered == "figures: " + " ".join([value("rows[seed=0].gap", "−1.23"), value("rows[1].gap", "+0.5"),
                                 value("rows[seed=0].share", "45%"), value("files", "1,234,567"),
                                 value("rows[seed=0].gap|abs", "1.2"), value("commit", "abc")])
    assert stale == ["value:x.json:rows[seed=0].gap", "value:x.json:rows[seed=0].share", "value:x.json:files",
                     "value:x.json:commit"]
    assert tables.render(rendered)[1] == []
    with pytest.raises(ValueError, match=r"rows\[seed=7\]"):  # a path that names nothing is an error, not skipped
        tables.render(value("rows[seed=7].gap", "1.0"))
    with pytest.raises(ValueError, match="starts a line"):  # the site would break the sentence into paragraphs
        tables.render("a sentence ends\n" + value("files", "1") + " files later")
    difference = "d " + value("rows[seed=0].gap - rows[1].gap", "−1.00")  # two values of one file, and a default
    assert tables.render(difference)[0] == "d " + value("rows[seed=0].gap - rows[1].gap", "−1.73")
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    default = "lr <!-- value:params.yaml:update.lr -->1.0e-9<!-- /value -->"
    lr = f"{load_params(Path('params.yaml')).update.lr:.1e}".replace("e-0", "e-")
    assert tables.render(default)[0] == default.replace("1.0e-9", lr)


def test_a_decimal_typed_into_a_section_fails_unless_the_section_quotes_archived_files_only():
    from benchmarks.tables import typed_figures

    found = {"old.json": ({}, "e1", "archived: an earlier engine"), "new.json": ({}, "e2", "current")}
    checked = ("# A\n\nMeasured <!-- value:new.json:x -->0.42<!-- /value --> with `lr=0.5` "
               "([v1.5](https://x/1.5.html), torch 2.14.1).\n\n```\n# B\nrate 0.3\n```\n")
    assert typed_figures(checked, found) == []
    typed = typed_figures(checked + "## C\n\nThe update ended 0.37 below.\n", found)
    assert len(typed) == 1 and "§ C: typed figures 0.37" in typed[0]
    assert typed_figures("## C\n<!-- archived: old.json -->\n\nIt ended 0.37 below.\n", found) == []
    assert "types no figure" in typed_figures("## C\n<!-- archived: old.json -->\n\nIt ended below.\n", found)[0]
    wrong = typed_figures("## C\n<!-- archived: new.json, gone.json -->\n\nIt ended 0.37 below.\n", found)
    assert len(wrong) == 2 and "which is current" in wrong[0] and "which is no results file" in wrong[1]


def test_only_make_paritys_run_writes_the_parity_headline():
    from benchmarks.parity import HEADLINE, headline_run

    run = argparse.Namespace(quick=False, imagefolder=None, streams=["class-incremental", "data-growth"], **HEADLINE)
    assert headline_run(run)
    for change in ({"per_class": 6000}, {"quick": True}, {"streams": ["class-incremental"]},
                   {"imagefolder": Path("x")}):
        assert not headline_run(argparse.Namespace(**{**vars(run), **change})), change


def test_peers_are_named_by_a_list_that_refuses_an_unknown_name_before_anything_runs():
    from benchmarks.peers import PEERS, peer_names

    assert peer_names(",".join(PEERS)) == list(PEERS)  # no name holds the separator
    with pytest.raises(argparse.ArgumentTypeError, match="'all old data'"):
        peer_names("replay, all old data")


def test_peers_pad_der_logits_of_older_widths_and_compare_the_update_with_the_best_peer():
    from benchmarks.peers import _pad_logits, overview, resolved, summarize, targets

    batch = [(torch.zeros(2), 0, 0, torch.tensor([1.0, 2.0])), (torch.ones(2), 2, 0, torch.tensor([4.0, 5.0, 6.0]))]
    x, y, _, logits = _pad_logits(batch)
    assert x.shape == (2, 2) and y.tolist() == [0, 2] and logits.shape == (2, 3)
    assert logits[0, 2].isnan() and logits[0, :2].tolist() == [1.0, 2.0] and logits[1].tolist() == [4.0, 5.0, 6.0]

    def row(version: int, acc: float, gap: float) -> dict:
        return {"version": version, "final_all_acc": acc, "final_old_acc": acc, "final_new_acc": 90.0,
                "stability_gap": gap, "min_old_acc": acc - gap, "iterations": 10, "samples_seen": 640,
                "train_flops": 1e12, "train_s": 1.0}

    runs = {"s": {"update": [[row(2, 85.0, 3.0)], [row(2, 86.0, 5.0)]],
                  "replay": [[row(2, 86.0, 9.0)], [row(2, 86.0, 15.0)]], "naive": [[row(2, 20.0, 90.0)]] * 2}}
    assert targets(summarize(runs), runs)[2:] == [
        "| s | v2 | -0.50 (replay) | 4.00 / 12.00 (replay): 0.33 | replay open, naive win |"]
    # three seeds resolve a difference well outside its spread, and not one inside it
    assert [resolved(d) for d in ([1.0, 1.2, 0.9], [-1.0, -1.1, -0.9], [1.0, -0.5, 0.8])] == ["win", "loss", "open"]
    update = next(r for r in overview(runs) if r["method"] == "update")
    assert update["all_mean"] == (85.5, 0.707) and update["gap_new_class"] == (4.0, 1.414)


def documented_commands() -> list[tuple[str, str]]:
    """Every `python -m benchmarks.X ...` the README and the docs give (not decisions.md: a record of commands at the
    commits it names), as (document, command); templates with <placeholders> or `...` aside, and a command that
    starts with `git checkout COMMIT &&` (an archived result's, run at its commit)."""
    import re

    found = []
    for doc in [Path("README.md"), *sorted(p for p in Path("docs").glob("*.md") if p.name != "decisions.md")]:
        text = doc.read_text()
        spans = re.findall(r"```.*?```", text, re.S)  # fenced blocks: one command a line
        lines = [line for block in spans for line in block.splitlines()]
        inline = re.findall(r"`([^`\n]*(?:\n[^`\n]*){0,3})`", re.sub(r"```.*?```", "", text, flags=re.S))
        for command in [*lines, *inline]:
            command = " ".join(command.split("#")[0].split())
            if "-m benchmarks." in command and not any(s in command for s in ("<", "...", "git checkout")):
                found.append((str(doc), command[command.index("-m benchmarks.") + 3:]))
    return found


@pytest.mark.parametrize(("doc", "command"), documented_commands())
def test_every_documented_benchmark_command_parses_today(doc, command, monkeypatch):
    """Each documented command's module exists, its options parse, and the configurations and screen cases it names
    exist today (stopped right after parsing: nothing runs)."""
    import argparse
    import importlib
    import shlex
    import sys

    class Parsed(Exception):
        pass

    def parse_only(self, args=None, namespace=None):
        raise Parsed(original(self, args, namespace))

    original = argparse.ArgumentParser.parse_args
    module_name, *argv = shlex.split(command)
    module = importlib.import_module(module_name)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
    monkeypatch.setattr(sys, "argv", [module_name, *argv])
    with pytest.raises(Parsed) as parsed:
        module.main()
    args = parsed.value.args[0]
    from benchmarks.harness import CONFIGS
    from benchmarks.production import SCREEN_CASES

    if isinstance(getattr(args, "configs", None), str):
        assert set(args.configs.split(",")) <= set(CONFIGS), f"{doc}: {command}"
    if isinstance(getattr(args, "cases", None), str):
        assert set(args.cases.split(",")) <= set(SCREEN_CASES), f"{doc}: {command}"


def test_the_screen_renders_its_rows_with_their_spread_over_seeds(tmp_path):
    """The screen's results file: a (case, arm) cell per row of the table, mean ± std over its seeds."""
    from benchmarks.production import _write_screen

    prov = {"commit": "c", "code_hash": "e", "params_hash": "p", "machine": "m", "torch": "t", "command": "x"}
    rows = [{"seed": seed, "arm": "default", "case": "class", "parent_all_acc": 90.0, "final_all_acc": 91.0 + seed,
             "final_old_acc": 90.0 + seed, "final_new_acc": 95.0, "stability_gap": 1.0, "iterations": 40,
             "train_flops": 4e11, "per_class_acc": {"a": 80.0 + seed, "b": 90.0, "new": 95.0}} for seed in (0, 2)]
    _write_screen(tmp_path, prov, rows, "screen")
    row = next(line for line in (tmp_path / "screen.md").read_text().splitlines() if line.startswith("| class |"))
    assert row.startswith("| class | default | 2 | 92.00 ± 1.41 | 91.00 ± 1.41 | 95.00 ± 0.00 | +1.00 ± 1.41 |")


def test_identical_engines_chain_through_the_proofs_kept(tmp_path, monkeypatch):
    """A gives B's models and B gives C's: runs of A count for C; a proof that found a difference links nothing."""
    from benchmarks import harness

    monkeypatch.chdir(tmp_path)
    (tmp_path / "benchmarks/results").mkdir(parents=True)

    def proof(before: str, after: str, identical: bool = True) -> dict:
        return {"provenance": {"before": {"code_hash": before}, "after": {"code_hash": after}}, "identical": identical}

    record = {**proof("B", "C"), "earlier": [proof("A", "B"), proof("X", "A", identical=False)]}
    (tmp_path / "benchmarks/results/equivalence.json").write_text(json.dumps(record))
    harness.proven_equal.cache_clear()
    assert harness.proven_equal("C") == ("A", "B") and harness.proven_equal("A") == ("B", "C")
    assert harness.proven_equal("X") == () and harness.proven_equal("X", retrain=True) == ()
    # X's updates differ from A's but its retrains are the same: its retrains count for A, B and C, nothing else
    record["earlier"][1]["retrain_identical"] = True
    (tmp_path / "benchmarks/results/equivalence.json").write_text(json.dumps(record))
    harness.proven_equal.cache_clear()
    assert harness.proven_equal("X") == () and harness.proven_equal("X", retrain=True) == ("A", "B", "C")
    harness.proven_equal.cache_clear()


def test_the_production_baselines_are_shorter_retrains_and_a_warm_start_each_gated(tmp_path, stream, base_model,
                                                                                      monkeypatch):
    """The recipes set beside the chain: 1- and 2-epoch retrains and a warm start from the champion, each with its
    gate's cost in the whole version's wall; the full network only where asked."""
    from benchmarks.production import BASELINES, baselines
    from pipeline.data import build_manifest
    from pipeline.runtime import Runtime
    from tests.conftest import TINY

    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # params.yaml, under the tiny overrides
    made = baselines(tmp_path, tmp_path / "chain", 2, 0, base_model, stream[1], build_manifest(stream[1]), TINY,
                     Runtime(), False)
    assert set(made) == set(BASELINES)
    one, two, warm = (made[name] for name in ("retrain, 1 epoch", "retrain, 2 epochs", "warm start, 1 epoch"))
    assert two["iterations"] == 2 * one["iterations"] and warm["iterations"] == one["iterations"]
    assert [one["method"], warm["method"]] == ["retrain", "warm_start"]
    assert all(b["wall_s"] == round(b["session_wall_s"] + b["gate_s"], 2) and b["gate_s"] > 0 for b in made.values())
    assert (tmp_path / "chain" / "v2-warm_start__1_epoch").is_dir()  # from the chain's champion: with its sessions


def test_a_fresh_machine_resumes_from_the_ledger_and_makes_a_needed_model_again_bit_for_bit(tmp_path, stream,
                                                                                               base_model, monkeypatch):
    """The runs of a long benchmark outlive their machine: a run whose folder is gone is read from the ledger, its
    gate too; its model is made again only when a later run needs it as a parent, and must match the recorded
    weights, else the ledger is refused."""
    from benchmarks import harness
    from benchmarks.production import gated
    from pipeline.config import Settings
    from pipeline.data.fashion_mnist import materialize
    from pipeline.runtime import Runtime
    from tests.conftest import TINY

    work, record = tmp_path / "work", tmp_path / "ledger.json"
    params = load_params(None, [*TINY, "gate.old_acc_margin=50"])
    data = {2: stream[1]}
    for number in (3, 4):  # a class more at each version
        data[number] = tmp_path / f"v{number}"
        shutil.copytree(data[number - 1], data[number])
        materialize(Settings().fashion_mnist_dir, data[number], [number + 3], train_per_class=80, test_per_class=40)

    def fresh_machine() -> None:  # the work folder gone, the committed ledger read anew
        shutil.rmtree(work, ignore_errors=True)
        harness._absent.clear()
        monkeypatch.setattr(harness, "LEDGER", harness.Ledger(record, work))

    def update(out: str, parent: Path, version: int) -> dict:
        return harness.session(work / out, params, parent=parent, data=data[version], method="sgm", runtime=Runtime())

    monkeypatch.setattr(harness, "LEDGER", harness.Ledger(record, work))
    first, second = update("a", base_model, 2), update("b", work / "a", 3)
    verdict, _ = gated(work / "b", work / "a", data[3], params, Runtime(), None, None)
    weights = json.loads((work / "a" / "card.json").read_text())["weights_sha256"]

    fresh_machine()
    assert update("a", base_model, 2) == first and update("b", work / "a", 3) == second
    assert gated(work / "b", work / "a", data[3], params, Runtime(), None, None)[0] == verdict
    assert not work.exists()  # read back: nothing was trained or judged again
    update("c", work / "b", 4)  # needs b's model, and b needs a's: both made again
    assert json.loads((work / "a" / "card.json").read_text())["weights_sha256"] == weights

    runs = json.loads(record.read_text())
    runs["runs"]["a"]["weights_sha256"] = "0" * 64  # a record this machine does not reproduce
    record.write_text(json.dumps(runs))
    fresh_machine()
    update("a", base_model, 2), update("b", work / "a", 3)
    with pytest.raises(RuntimeError, match="does not reproduce the recorded runs"):
        update("d", work / "b", 4)


def test_a_unit_made_on_another_machine_is_read_back_and_none_of_it_is_made_here(tmp_path, stream, base_model,
                                                                                  monkeypatch):
    """Sessions on two kinds of machine advance different units of one benchmark (a seed's runs): another machine's
    runs count here as recorded, and no run of their unit is made here, neither a missing one nor a model that a run
    of this machine's unit needs again; their records stay as they were."""
    from benchmarks import harness
    from pipeline.runtime import Runtime
    from tests.conftest import TINY

    work, record = tmp_path / "work", tmp_path / "ledger.json"
    params = load_params(None, TINY)

    def update(out: str, parent: Path) -> dict:
        return harness.session(work / out, params, parent=parent, data=stream[1], method="sgm", runtime=Runtime())

    monkeypatch.setattr(harness, "LEDGER", harness.Ledger(record, work, depth=1))
    first = update("s/a", base_model)
    runs = json.loads(record.read_text())
    runs["runs"]["s/a"]["stamp"]["machine"] = "CPU another kind (2 cores, 2 torch threads)"
    record.write_text(json.dumps(runs))
    shutil.rmtree(work)
    harness._absent.clear()
    monkeypatch.setattr(harness, "LEDGER", harness.Ledger(record, work, depth=1))

    assert update("s/a", base_model) == first
    with pytest.raises(harness.Elsewhere, match="made on CPU another kind"):
        update("s/b", work / "s" / "a")  # its unit's next run waits for that machine
    assert harness.LEDGER.home(work / "t" / "c") == harness.machine()  # a unit no machine began: this one's
    with pytest.raises(harness.Elsewhere):
        update("t/c", work / "s" / "a")  # this machine's unit, but its parent's model is made only there
    assert not work.exists() and json.loads(record.read_text()) == runs


def test_drift_is_a_miss_only_when_more_updates_resolve_below_their_parent_than_chance_gives(monkeypatch):
    """The drift target on the gate's own evidence: served updates resolved below their parent at the false-alarm
    rate of equally good models (5% at the gate's 95%) meet it; significantly more miss it."""
    from benchmarks.tables import production_drift

    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # params.yaml: the gate's confidence

    def drift(below: int, served: int) -> str:
        return production_drift({"targets": {"data_growth_pairs_resolved_below_parent": [[{}] * below, served],
                                             "data_growth_pairs_resolved_above_parent": 0}})

    assert drift(4, 59).endswith(": met)") and "3.0 expected" in drift(4, 59)
    assert drift(9, 59).endswith(": missed)")
    assert drift(0, 0) == "no served data-growth update recorded its gate's evidence"


def test_the_consolidation_table_pools_each_policy_over_the_seeds_every_arm_retrained_densely(monkeypatch):
    """The drift table's last rows: each policy over the (seed, version) pairs of the seeds shown; a seed one arm has
    not retrained at every version is left out of every row."""
    from benchmarks import tables

    def arm(after, on_drift, chains: list[list[float]]) -> dict:
        def version(v: int, acc: float) -> dict:  # a chain above its retrain is one that consolidated there
            return {"version": v, "chain_all_acc": acc, **({"consolidated": "drift"} if acc > 90 else {}),
                    "retrain": {"final_all_acc": 90.0, "train_flops": 10, "wall_s": 4},
                    "chain": [{"train_flops": 1, "wall_s": 2}]}

        return {"runs": [[{"version": 1}, *(version(v, acc) for v, acc in enumerate(chain, 2))] for chain in chains],
                "provenance": {"versions": 3, "consolidate_after": after, "consolidate_on_drift": on_drift,
                               "machines": ["CPU A (2 cores)"] * len(chains)}}

    never = arm(None, False, [[89.0, 88.5], [89.5, 89.0], [88.0]])  # seed 2: not retrained at every version
    schedule = arm(0.2, False, [[90.5, 89.0], [89.0, 90.0], [90.0, 90.0]])
    monkeypatch.setattr(tables, "DRIFT_AGAINST", ["never", "schedule"])
    monkeypatch.setattr(tables, "_read", {"never": never, "schedule": schedule}.__getitem__)
    rows = tables.drift(arm(None, True, [[91.0, 90.0], [90.0, 89.0], [90.0, 90.0]])).splitlines()[2:]
    assert [r.split(" | ")[:2] for r in rows] == [[f"| {seed}", name] for seed in ("0", "1", "0, 1")
                                                  for name in ("never", "after 20% growth", "on drift")]
    assert rows[-3] == "| 0, 1 | never | 0 retrains | -1.00 (-1.50) | 3 of 4 | 10.00x | 2.00x | CPU A |"
    assert rows[-1].startswith("| 0, 1 | on drift | 1 retrains | +0.00 (-1.00) | 4 of 4 |")
    # the headline names where each seed's chain consolidated; a chain that never did, nowhere
    assert tables._consolidations(arm(None, True, [[91.0, 90.0], [90.0, 89.0], [90.0, 91.0]])) == (
        " It ran a consolidation retrain at 2 version(s): seed 0 at v2; seed 2 at v3.")
    assert tables._consolidations(never) == ""


def test_a_chain_that_consolidates_otherwise_than_the_flow_is_not_listed_as_current(tmp_path, monkeypatch):
    """The results index: a production chain made by today's engine and params.yaml but another consolidation policy
    than the flow's default is `current engine, another chain policy`; a file with no chain policy, as before."""
    from benchmarks import tables
    from benchmarks.harness import engine_code
    from pipeline.chain import CONSOLIDATE_AFTER, CONSOLIDATE_ON_DRIFT
    from pipeline.config import load_params

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    today = {"code_hash": engine_code(), "params_hash": load_params(Path("params.yaml")).digest()}
    files = {"default.json": {**today, "consolidate_after": CONSOLIDATE_AFTER,
                              "consolidate_on_drift": CONSOLIDATE_ON_DRIFT},
             "other.json": {**today, "consolidate_after": CONSOLIDATE_AFTER,
                            "consolidate_on_drift": not CONSOLIDATE_ON_DRIFT},
             "schedule.json": {**today, "consolidate_after": 0.2, "consolidate_on_drift": CONSOLIDATE_ON_DRIFT},
             "before_the_rule.json": {**today, "consolidate_after": None},  # made before the drift rule: never
             "parity.json": today}
    for name, prov in files.items():
        (tmp_path / name).write_text(json.dumps({"provenance": prov}))
    monkeypatch.setattr(tables, "RESULTS", tmp_path.resolve())
    found = {name: status for name, (_, _, status) in tables.statuses().items()}
    before = "current engine, another chain policy" if CONSOLIDATE_ON_DRIFT else "current"
    assert found == {"default.json": "current", "other.json": "current engine, another chain policy",
                     "schedule.json": "current engine, another chain policy", "before_the_rule.json": before,
                     "parity.json": "current"}
