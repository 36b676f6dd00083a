"""The gate's operating characteristic: how often it rejects, against the true old-class drop, on real models.

Models: `--models` standard retrains of the same Fashion-MNIST version (`--train-per-class` images of each of the
ten classes, seeds 0..M-1): models as good as each other. Test pool: the official test images plus train images
no model saw, `--pool-per-class` per class; the gate is tried on disjoint stratified draws of 40, 200 and 1,000
images per class from it, and the "true" drop of a pair is its drop on the whole pool.
- Equal quality: every ordered pair of different seeds (champion, candidate).
- Known regressions: the candidate of a pair with one class's bias pushed down until it loses 1, 2 and 5 points
  of pool accuracy against the champion (the class cycles with the pair). A bias shift moves that class's logit
  and nothing else, so the candidate's outputs are computed from its logits exactly.
- No rehearsal: champions 0-2 fine-tuned (`update`, vanilla, `update.rehearsal_per_class=0`) on 200 new images of
  two classes, with nothing of the others.
Each draw is judged by the gate's own rule (`pipeline.gate.decide`, the data-growth checks) at the default
params, and by the non-inferiority bound alone over a grid of margins and confidences (to choose the defaults).

Writes `gate_oc.{json,md,png}` under --out. The models and their pool logits are kept under --work and reused
(each stamped with the runtime code hash it was trained at); the statistics are recomputed every run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness import benchmark_runtime, code_hash, engine_code, git_commit, machine, run_stamp
from pipeline.config import load_params
from pipeline.data import build_manifest
from pipeline.data.fashion_mnist import CLASS_NAMES, materialize
from pipeline.data.imagefolder import scan_imagefolder
from pipeline.evaluate import PredictionCache
from pipeline.evaluate.paired import drop_bound
from pipeline.gate import decide, judge
from pipeline.model import load_card, load_model
from pipeline.runtime import load_split
from pipeline.train import run_session

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SIZES = (40, 200, 1000)  # test images per class
DROPS = (1.0, 2.0, 5.0)  # points of pool accuracy lost by the regressed candidates
MARGINS, CONFIDENCES = (1.0, 1.5, 2.0), (0.9, 0.95)
GROWN = ("shirt", "pullover")  # the classes the no-rehearsal candidates are fine-tuned on
GROWTH = 100  # new train images of each


def build_data(work: Path, train_per_class: int, pool_per_class: int) -> tuple[Path, Path]:
    """v1: `train_per_class` per class; its test/ is the pool (official test images, then train images no model
    trains on). v2: v1 plus GROWTH more train images of each GROWN class."""
    v1, v2, source = work / "data" / "v1", work / "data" / "v2", work / "data" / "source"
    if (v2 / "train").exists():
        return v1, v2
    shutil.rmtree(work / "data", ignore_errors=True)
    extra = pool_per_class - 1000  # beyond the 1,000 official test images per class
    materialize(FASHION_MNIST, source, list(range(10)), train_per_class + extra + GROWTH, None)
    for name in CLASS_NAMES:
        files = sorted((source / "train" / name).iterdir())
        parts = {"train": files[:train_per_class], "test": files[train_per_class:train_per_class + extra],
                 "growth": files[train_per_class + extra:]}
        tests = sorted((source / "test" / name).iterdir()) + parts["test"]
        for root, split, chosen in [(v1, "train", parts["train"]), (v1, "test", tests),
                                    (v2, "train", parts["train"] + (parts["growth"] if name in GROWN else [])),
                                    (v2, "test", tests)]:
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for path in chosen:
                shutil.copyfile(path, root / split / name / path.name)
    shutil.rmtree(source)
    return v1, v2


def run_once(out: Path, run) -> dict:
    """A model directory is trained once and reused; its stamp records the engine code and machine it came from."""
    stamp = run_stamp(out)
    if not stamp.exists():
        shutil.rmtree(out, ignore_errors=True)
        run()
        stamp.write_text(json.dumps({"code_hash": engine_code(), "commit": git_commit(), "machine": machine()}))
    return json.loads(stamp.read_text())


@torch.no_grad()
def pool_logits(model_dir: Path, data: Path, cache) -> np.ndarray:
    path = model_dir.with_name(model_dir.name + ".logits.npy")
    if not path.exists():
        model, card = load_model(model_dir)
        model.eval()
        test = load_split(data, scan_imagefolder(data)["test"], card["class_names"], card["model"]["img_size"],
                          cache)
        logits = [model(model.normalize(test.images[i:i + 512])) for i in range(0, len(test), 512)]
        np.save(path, torch.cat(logits).numpy())
    return np.load(path, allow_pickle=False)


def pushed(logits: torch.Tensor, champion_correct: torch.Tensor, targets: torch.Tensor, label: int,
           drop: float) -> torch.Tensor | None:
    """The candidate's logits with class `label`'s bias lowered until its pool accuracy is `drop` points below the
    champion's (None when that class cannot lose so much)."""
    def loss(shift: float) -> float:
        moved = logits.clone()
        moved[:, label] -= shift
        return 100 * (champion_correct.float().mean() - (moved.argmax(1) == targets).float().mean()).item()

    low, high = 0.0, 100.0
    if loss(high) < drop:
        return None
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if loss(middle) < drop else (low, middle)
    moved = logits.clone()
    moved[:, label] -= high
    return moved


def draws(targets: torch.Tensor, per_class: int, seed: int = 0) -> list[torch.Tensor]:
    """Disjoint stratified draws of `per_class` images per class from the pool (as many as it holds)."""
    generator = torch.Generator().manual_seed(seed)
    by_class = [torch.nonzero(targets == c).flatten()[torch.randperm(int((targets == c).sum()), generator=generator)]
                for c in range(int(targets.max()) + 1)]
    count = min(len(index) for index in by_class) // per_class
    return [torch.cat([index[k * per_class:(k + 1) * per_class] for index in by_class]) for k in range(count)]


def judge_pairs(pairs: list[tuple[torch.Tensor, torch.Tensor]], targets: torch.Tensor, classes: list[str],
                rules) -> dict:
    """Every pair (champion logits, candidate logits) on every draw of every size: the gate's decision at `rules`,
    and the bound's decision over the grid of margins and confidences."""
    rows = {}
    for size in SIZES:
        losses, gains, count, rejected = [], [], [], []
        for champion, candidate in pairs:
            champion_preds, candidate_preds = champion.argmax(1), candidate.argmax(1)
            for index in draws(targets, size):
                target = targets[index]
                champion_correct, candidate_correct = champion_preds[index] == target, candidate_preds[index] == target
                losses.append(int((champion_correct & ~candidate_correct).sum()))
                gains.append(int((candidate_correct & ~champion_correct).sum()))
                count.append(len(index))
                checks, _ = decide(champion_preds[index], candidate_preds[index], candidate_preds[index], target,
                                   classes, len(classes), rules)
                rejected.append(not all(check["passed"] for check in checks))
        grid = {f"margin {margin}, confidence {confidence}":
                round(float((drop_bound(losses, gains, count, confidence) > margin).double().mean()), 4)
                for margin in MARGINS for confidence in CONFIDENCES}
        rows[size] = {"draws": len(count), "rejected_share": round(sum(rejected) / len(rejected), 4),
                      "discordance": round((sum(losses) + sum(gains)) / sum(count), 4), "grid": grid}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=int, default=9)
    parser.add_argument("--train-per-class", type=int, default=1000)
    parser.add_argument("--pool-per-class", type=int, default=3000)
    parser.add_argument("--work", type=Path, default=Path("work/gate_oc"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    start = time.perf_counter()
    params = load_params(Path("params.yaml"))
    cache = benchmark_runtime(args.work / "features")
    v1, v2 = build_data(args.work, args.train_per_class, args.pool_per_class)
    models, stamps = [], []
    for seed in range(args.models):
        out = args.work / "models" / f"retrain-seed{seed}"
        seeded = params.model_copy(update={"seed": seed})
        stamps.append(run_once(out, lambda out=out, seeded=seeded: run_session(None, v1, out, seeded, runtime=cache)))
        models.append(torch.from_numpy(pool_logits(out, v1, cache)))
    forgetful = []
    for seed in range(min(3, args.models)):
        out = args.work / "models" / f"no-rehearsal-seed{seed}"
        parent = args.work / "models" / f"retrain-seed{seed}"
        alone = load_params(Path("params.yaml"), [f"seed={seed}", "update.rehearsal_per_class=0"])
        stamps.append(run_once(out, lambda out=out, parent=parent, alone=alone:
                               run_session(parent, v2, out, alone, "vanilla", runtime=cache)))
        forgetful.append((models[seed], torch.from_numpy(pool_logits(out, v2, cache))))

    entries = scan_imagefolder(v1)["test"]
    classes = load_card(args.work / "models" / "retrain-seed0")["class_names"]
    targets = torch.tensor([classes.index(name) for _, name in entries])
    correct = [m.argmax(1) == targets for m in models]
    pairs = [(i, j) for i in range(len(models)) for j in range(len(models)) if i != j]
    families = {0.0: [(models[i], models[j]) for i, j in pairs]}
    true_drops = {0.0: [100 * (correct[i].float().mean() - correct[j].float().mean()).item() for i, j in pairs]}
    for drop in DROPS:
        moved = [(i, pushed(models[j], correct[i], targets, (i + j) % len(classes), drop)) for i, j in pairs]
        families[drop] = [(models[i], logits) for i, logits in moved if logits is not None]
        true_drops[drop] = [drop] * len(families[drop])
    rows, summary = [], {}
    for true_drop, family in [*families.items(), ("no rehearsal", forgetful)]:
        judged = judge_pairs(family, targets, classes, params.gate)
        for size, row in judged.items():
            rows.append({"test_per_class": size, "true_drop": true_drop, "pairs": len(family), **row})
        if true_drop in true_drops:
            summary[str(true_drop)] = {"pool_drop_mean": round(statistics.mean(true_drops[true_drop]), 3),
                                       "pool_drop_sd": round(statistics.pstdev(true_drops[true_drop]), 3)}
    timing = gate_wall(args.work, v1, params)
    pool_acc = [round(100 * c.float().mean().item(), 2) for c in correct]
    errors = [100 - a for a in pool_acc]
    discordance = statistics.mean(100 * (correct[i] != correct[j]).float().mean().item() for i, j in pairs)
    result = {"provenance": {"commit": git_commit(), "code_hash": code_hash(), "params_hash": params.digest(),
                             "machine": machine(), "models": stamps, "args": {k: str(v) for k, v in vars(args).items()},
                             "gate": params.gate.model_dump(), "seconds": round(time.perf_counter() - start)},
              "pool": {"images": len(targets), "model_acc": pool_acc,
                       "equal_pair_discordance": round(discordance, 3),
                       "discordance_per_error": round(discordance / statistics.mean(errors), 3)},
              "true_drop_on_pool": summary, "gate_wall_s": timing, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gate_oc.json").write_text(json.dumps(result, indent=2))
    (args.out / "gate_oc.md").write_text(markdown(result))
    plot(result, args.out / "gate_oc.png")
    print(markdown(result))


def gate_wall(work: Path, data: Path, params) -> dict:
    """Wall time of one gate (`judge`, seed 1 against seed 0 on the whole pool) that predicts both models, then of
    the same gate again, reading the predictions it made (the prediction cache)."""
    runtime = dataclasses.replace(benchmark_runtime(work / "features"),
                                 predictions=PredictionCache(work / f"predictions-{time.time_ns()}"))
    manifest = build_manifest(data)
    walls = {}
    for label in ("predicting both models", "predictions cached"):
        start = time.perf_counter()
        result = judge(work / "models" / "retrain-seed1", work / "models" / "retrain-seed0", data, params.gate,
                       runtime, manifest=manifest)
        walls[label] = round(time.perf_counter() - start, 2)
    shutil.rmtree(runtime.predictions.root)
    return {**walls, "test_images": result["evidence"]["old_test_images"]}


def markdown(result: dict) -> str:
    prov, gate = result["provenance"], result["provenance"]["gate"]
    grid = list(result["rows"][0]["grid"])
    lines = ["# The gate's operating characteristic", "",
             f"Commit `{prov['commit']}`, engine code `{prov['code_hash']}`, params `{prov['params_hash']}`, "
             f"{prov['machine']}; {len(prov['models'])} models (their training stamps in the JSON). Defaults: "
             f"margin {gate['old_acc_margin']} points at confidence {gate['confidence']}. Pool: "
             f"{result['pool']['images']} images; equal-quality pairs disagree on "
             f"{result['pool']['equal_pair_discordance']}% of them ({result['pool']['discordance_per_error']} x the "
             "models' error rate).", "",
             f"Wall time of one gate on {result['gate_wall_s']['test_images']} test images: "
             f"{result['gate_wall_s']['predicting both models']} s predicting both models, "
             f"{result['gate_wall_s']['predictions cached']} s with their predictions cached.", "",
             "| test per class | true drop (points) | pairs | draws | discordance | rejected (gate) | "
             + " | ".join(f"bound: {g}" for g in grid) + " |",
             "|" + "---|" * (6 + len(grid))]
    for row in result["rows"]:
        lines.append(f"| {row['test_per_class']} | {row['true_drop']} | {row['pairs']} | {row['draws']} | "
                     f"{100 * row['discordance']:.2f}% | {100 * row['rejected_share']:.1f}% | "
                     + " | ".join(f"{100 * row['grid'][g]:.1f}%" for g in grid) + " |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for size in SIZES:
        rows = [r for r in result["rows"] if r["test_per_class"] == size and r["true_drop"] != "no rehearsal"]
        axis.plot([r["true_drop"] for r in rows], [100 * r["rejected_share"] for r in rows], "o-",
                  label=f"{size} test images per class")
    gate = result["provenance"]["gate"]
    axis.axvline(gate["old_acc_margin"], color="grey", linestyle=":", label="margin")
    axis.set(xlabel="true old-class drop (points)", ylabel="rejected (%)",
             title=f"gate at margin {gate['old_acc_margin']}, confidence {gate['confidence']}")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
