"""Production stream: a large base that grows by a few percent per version, updated in a chain as the flow chains
updates, against the standard retrain of every version.

v1 = Fashion-MNIST classes 0-7 at 2,800 train images each (22,400); then 22 versions: mostly every known class
grows by 1-5% (RATES), class 8 and then class 9 arrive with 300 images each (v6, v17), and one burst in which a
single class grows 20% (v12). The same 500 test images per class at every version. At each version the chain does
what the flow does: the default `update.method` (auto) from the champion, the standard retrain instead once the
training images grew by the flow's `consolidate_after` since the data of the chain's last retrain (consolidation),
or after an update the gate resolves below the last retrain-made model (`consolidate_on_drift`, the flow's default;
`--no-consolidate-on-drift`: never), the default gate
against the champion (and the last retrain-made champion, the reference), the fallback retrain when the gate rejects
an update, and the champion moves only on a promotion. Beside it: the standard retrain of
the version (every version for the first seed; every 4th version, the new-class versions and the last for the
others), vanilla rehearsal at the new-class versions (the stability gap's baseline) and, with --baselines, the
cheaper and the costlier recipes a skeptic asks for (BASELINES). A finished run is reused
when its params hash, the engine's code hash and the machine match, so the benchmark resumes where it was stopped,
on a fresh machine too (the ledger, `--ledger`: the finished runs, committed as they come; a seed's runs are made on
one machine, and another kind goes on with the other seeds); the results files are written after every version.

    .venv/bin/python -m benchmarks.production                 # seed 0, every version (about 2 h on 2 CPU cores)
    .venv/bin/python -m benchmarks.production --seeds 3       # three seeds
    .venv/bin/python -m benchmarks.production --seeds 5 --dense-seeds 5 --baselines   # the headline (`make benchmark`)
    .venv/bin/python -m benchmarks.production --versions 6    # the first six versions only
    .venv/bin/python -m benchmarks.production --screen --seeds 3   # the session's settings, screened (below)
    .venv/bin/python -m benchmarks.production --screen --seeds 3 --cases class9,v17,v12 \
        --name production_screen_share                        # a new class's share, the burst (after the seeds)
    .venv/bin/python -m benchmarks.production --seeds 5 --dense-seeds 5 --baselines --no-consolidate-on-drift \
        --name production_never --ledger benchmarks/results/ledger/production.json   # a chain that never consolidates
    .venv/bin/python -m benchmarks.production --seeds 5 --dense-seeds 5 --no-consolidate-on-drift \
        --consolidate-after 0.2 --name production_schedule_0.2 \
        --ledger benchmarks/results/ledger/production.json    # ... that consolidates on a schedule (also 0.333..., 0.5)
    .venv/bin/python -m benchmarks.production --seeds 3 --dense-seeds 3 --set sgm.ema_decay=null \
        --name production_no_ema    # an update setting: its own chain beside the same retrains (an override that
                                    # a retrain reads, train.* or model.*, needs a --work of its own)

Writes production.{json,md,png} under --out and the `production` block of parity.json (another `--name`: its own
files only). `--screen` instead runs the update settings of SCREEN on the small increments of SCREEN_CASES (from each
seed's v1, or from its chain's update at a version) and writes production_screen.{json,md}: how the defaults were
chosen.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

from benchmarks import harness
from benchmarks.harness import (
    BASE_CLASSES,
    BASE_PER_CLASS,
    ISO_TOLERANCE,
    NEW_CLASS,
    RETRAIN_READS,
    TEST_PER_CLASS,
    VERSIONS,
    Ledger,
    benchmark_runtime,
    class_counts,
    cost_ratio,
    engine_code,
    finish_figure,
    git_commit,
    hardlink,
    judged,
    kind,
    machine,
    made_on,
    materialize_versions,
    present,
    reuse_or_run,
    session,
    slug,
    stat,
)
from pipeline.chain import CONSOLIDATE_AFTER, CONSOLIDATE_ON_DRIFT, Chain, resolved_drop, run_version
from pipeline.config import Params, Settings, load_params
from pipeline.data import build_manifest
from pipeline.data.fashion_mnist import materialize
from pipeline.gate import PROMOTE, judge
from pipeline.runtime import Runtime

# id -> (the case, the parent, the data). Parents: "v1", each seed's base (its standard retrain), or "vN", the
# chain's update at version N (the production benchmark's, promoted at every seed). Data: "vN", a version of the
# stream; "v1+class8", "v1+class9": v1 plus that class (300 train images); "v1+1%": v1 with every class +1%.
SCREEN_CASES = {
    "growth": ("data growth +3%", "v1", "v2"),
    "class": ("new class, 300 images", "v1", "v1+class8"),
    "class9": ("new class 9 (ankle boot, next to sneaker and sandal), 300 images", "v1", "v1+class9"),
    "v17": ("v17 of the chain: class 9 on the v16 champion", "v16", "v17"),
    "growth1": ("data growth +1%", "v1", "v1+1%"),
    "v9": ("v9 of the chain: +1% on the v8 champion", "v8", "v9"),
    "v12": ("v12 of the chain: class 4 +20% (the burst) on the v11 champion", "v11", "v12"),
}
# arm -> case id -> overrides (a case not named: not run). The screen of record (the first four cases) ran before
# `update.new_class_share` existed, when `update.new_share` also set a new class's share of each batch (0.5); each
# arm names both keys so that it still runs the sessions it ran then. It and production_screen_small also ran at the
# step floor of their time: `--set update.min_iters=30` reruns them (an arm's own min_iters comes after it).
HALF = "update.new_class_share=0.5"
SCREEN = {
    "default": {"growth": [], "class": [HALF], "class9": [HALF], "v17": [HALF], "growth1": [], "v9": [], "v12": []},
    "former default (4 passes; growth: rates x0.33; new class: class-balanced, full rates)": {
        "growth": ["update.new_data_passes=4", "update.lr=5e-4", "sgm.head_lr=5e-4"],
        "class": ["update.new_data_passes=4", "update.lr=1.5e-3", "update.new_class_share=0.111"]},
    "1:1 at the retrain's rate": {"growth": ["update.lr=1.5e-3"], "class": ["update.lr=1.5e-3", HALF]},
    "1:1 at the retrain's rate + soft targets + LoRA (the paper's pieces)": {
        "growth": ["update.lr=1.5e-3", "sgm.soft_targets=true", "sgm.lora=true"],
        "class": ["update.lr=1.5e-3", "sgm.soft_targets=true", "sgm.lora=true", HALF]},
    "default + soft targets + LoRA": {"growth": ["sgm.soft_targets=true", "sgm.lora=true"],
                                      "class": ["sgm.soft_targets=true", "sgm.lora=true", HALF]},
    # a logit-adjusted loss (Menon et al. 2021, at strengths 1 and 0.5) was screened on the new-class cases and
    # removed: diagnostics/production_screen_logit_adjust.md
    # (not on the burst: a quarter of the grown class's draws would double its steps)
    "new share 0.25": dict.fromkeys(("growth", "class", "class9", "v17", "growth1", "v9"),
                                    ["update.new_share=0.25", "update.new_class_share=0.25"]),
    # the smallest increments: 2 passes over 1% new files is below the floor of the time (`update.min_iters` 30), so
    # its 30 steps see each new file about four times, at half of its class's draws
    "no budget floor (min_iters 0)": {"growth": ["update.min_iters=0"], "growth1": ["update.min_iters=0"],
                                      "v9": ["update.min_iters=0"]},
    # a new class's share of each batch below a quarter (the chain's v17 lost old classes to class 9); ran without
    # the floor, and 0.15 became the default
    "new class share 0.15": dict.fromkeys(("class", "class9", "v17"), ["update.new_class_share=0.15"]),
    "new class share 0.1": dict.fromkeys(("class", "class9", "v17"), ["update.new_class_share=0.1"]),
    # the burst: two passes over one class's new files at its 1/18 of each batch cost a quarter of a retrain
    "the burst at one pass": {"v12": ["update.new_data_passes=1"]},
}


# The baselines a skeptic asks for beside the chain, at the sparse retrain versions (retrain_due) of every seed with
# `--baselines`: shorter retrains (the iso-accuracy retrain is the cheapest that matches the 3-epoch retrain's mean
# within ISO_TOLERANCE) and a warm start (the champion trained by the retrain's recipe on all the data for one epoch,
# the same layers); and last, the full-network retrain (every group trained, no cached trunk) at FULL_NETWORK_VERSIONS
# of one seed, FULL_NETWORK_SEED (the third, or the last of fewer), for the comparison with the paper's figure.
# name -> (method, params overrides)
BASELINES = {"retrain, 1 epoch": ("retrain", ["train.epochs=1"]), "retrain, 2 epochs": ("retrain", ["train.epochs=2"]),
             "warm start, 1 epoch": ("warm_start", ["train.epochs=1"])}
FULL_NETWORK = ("retrain", ["model.frozen_groups=0"])
FULL_NETWORK_VERSIONS = (6, 12, 23)
FULL_NETWORK_SEED = 2


def retrain_due(version: int, last: int, every: bool) -> bool:
    """A retrain at every version (`every`), else at every 4th version, the new-class versions and the last."""
    return every or version % 4 == 0 or version in NEW_CLASS or version == last


def gated(candidate: Path, champion: Path, data: Path, params: Params, runtime: Runtime, reference: Path | None,
          manifest) -> tuple[dict, float]:
    """The gate's result and its seconds; with a ledger, judged once per candidate, champion, reference and rules."""
    def run() -> dict:
        present(candidate, champion, reference)
        start = time.perf_counter()
        result = judge(candidate, champion, data, params.gate, runtime, reference, manifest)
        return {**result, "seconds": round(time.perf_counter() - start, 2)}

    result = judged(candidate, champion, reference, params.gate.model_dump(), run)
    return result, result["seconds"]


def run_seed(seed: int, versions: list[Path], models: Path, runtime: Runtime, args, every: bool,
             written, full_network: bool = False) -> list[dict]:
    """One seed: the chain version by version as the flow runs it (consolidating as `args` say),
    the retrains (`every` version, or `retrain_due`'s) and the vanilla baseline beside. A retrain does not
    depend on its parent's weights (the parent names only the class order, the same in every chain), so the
    retrain beside a version is also a consolidation there; the chain's own sessions live under `models/<tag>/`
    from its first consolidation on (before it, every chain is the same), and under `models/set-<overrides>/` when
    `--set` changes the update (a retrain reads no update setting: every arm reuses the same retrains)."""
    params = load_params(Path("params.yaml"), [*args.set, f"seed={seed}"])
    base = models / "v1"
    first = session(base, params, parent=None, data=versions[0], method="retrain", runtime=runtime, reads=RETRAIN_READS)
    state = Chain(base, None, build_manifest(versions[0]))
    arm = f"set-{slug('-'.join(args.set))}" if args.set else ""
    champion_acc, chain = first["final_all_acc"], models / arm
    rows = [{"version": 1, "kind": "first version", "chain_all_acc": first["final_all_acc"],
             "retrain_all_acc": first["final_all_acc"], "chain": [_cost(first, "retrain", 0.0, PROMOTE)]}]
    written(rows)
    for number, data in enumerate(versions[1:], start=2):
        manifest, parent = build_manifest(data), state.champion
        row: dict = {"version": number, "kind": kind(number), "parent_all_acc": champion_acc, "chain": []}
        outcome = chain_version(state, f"v{number}", data, manifest, models, chain, params, runtime, row, args)
        if outcome.consolidation:
            row["consolidated"], chain = outcome.consolidation, models / f"{arm}{policy(args)}"
        state = outcome.chain
        row["promoted"] = outcome.promoted is not None
        if outcome.promoted:
            champion_acc = outcome.promoted.metrics["final_all_acc"]
        row["chain_all_acc"] = champion_acc
        if retrain_due(number, len(versions), every) or outcome.consolidation:
            run_dir = models / f"v{number}-retrain"
            metrics = session(run_dir, params, parent=parent, data=data, method="retrain", runtime=runtime,
                              manifest=manifest, reads=RETRAIN_READS)
            _, gate_s = gated(run_dir, parent, data, params, runtime, None, manifest)
            row["retrain"] = _cost(metrics, "retrain", gate_s, None)
            row["retrain_all_acc"] = metrics["final_all_acc"]
        if args.baselines and retrain_due(number, len(versions), False):
            row["baselines"] = baselines(models, chain, number, seed, parent, data, manifest, args.set, runtime,
                                         full_network and number in FULL_NETWORK_VERSIONS)
        if kind(number) == "class-incremental":
            run_dir = chain / f"v{number}-vanilla"
            metrics = session(run_dir, params, parent=parent, data=data, method="vanilla", runtime=runtime,
                              manifest=manifest)
            row["vanilla"] = _cost(metrics, "vanilla", 0.0, None)
        rows.append(row)
        written(rows)
    return rows


def baselines(models: Path, chain: Path, number: int, seed: int, parent: Path, data: Path, manifest,
              overrides: list[str], runtime: Runtime, full_network: bool) -> dict:
    """BASELINES (and the full-network retrain) at one version, each with its gate against the champion: what the
    whole version would cost by that recipe. Retrains live with the stream's (`models`), the warm start, which
    starts from the chain's champion, with the chain's sessions."""
    made = {}
    full = {"full-network retrain": FULL_NETWORK} if full_network else {}
    for name, (method, extra) in {**BASELINES, **full}.items():
        params = load_params(Path("params.yaml"), [*overrides, *extra, f"seed={seed}"])
        run_dir = (models if method == "retrain" else chain) / f"v{number}-{slug(name)}"
        metrics = session(run_dir, params, parent=parent, data=data, method=method, runtime=runtime,
                          manifest=manifest, reads=RETRAIN_READS if method == "retrain" else ())
        _, gate_s = gated(run_dir, parent, data, params, runtime, None, manifest)
        made[name] = _cost(metrics, method, gate_s, None)
    return made


def policy(args) -> str:
    """The folder of a chain's sessions from its first consolidation on: one per consolidation policy."""
    after = f"after-{args.consolidate_after:.3g}" if args.consolidate_after is not None else ""
    return "-".join(filter(None, (after, "drift" if args.consolidate_on_drift else "")))


def chain_version(state: Chain, tag: str, data: Path, manifest, models: Path, chain: Path, params: Params,
                  runtime: Runtime, row: dict, args):
    """The flow's policy (pipeline.chain) at one version, its sessions reused by folder (`models/<tag>-retrain` for a
    retrain, `<chain>/<tag>-update` and `-fallback` for the rest) and each gate's cost added to `row["chain"]`."""
    parent = state.champion

    def train(method: str, attempt: str) -> tuple[Path, dict]:
        run_dir = models / f"{tag}-retrain" if method == "retrain" else chain / f"{tag}-{attempt}"
        return run_dir, session(run_dir, params, parent=parent, data=data, method=method, runtime=runtime,
                                manifest=manifest, reads=RETRAIN_READS if method == "retrain" else ())

    def judge(candidate: Path, metrics: dict, reference: Path | None) -> dict:
        result, gate_s = gated(candidate, parent, data, params, runtime, reference, manifest)
        row["chain"].append(_cost(metrics, metrics["method"], gate_s, result["decision"], result["reasons"],
                                  result["evidence"]))
        return result

    return run_version(state, manifest, train, judge, "auto", fallback=True, consolidate_after=args.consolidate_after,
                       on_drift=args.consolidate_on_drift)


EVIDENCE = ("old_acc_drop", "old_acc_drop_bound", "resolvable_drop", "discordance")  # kept of a chain gate's evidence


def _cost(metrics: dict, method: str, gate_s: float, decision: str | None, reasons: list[str] | None = None,
          evidence: dict | None = None) -> dict:
    """One session's figures; `wall_s` is the whole command and its gate (what a version costs the flow); a chain
    session's gate evidence against the champion (the paired drop, its bound and the drop the test split resolves)."""
    return {"method": method, "decision": decision, "reasons": reasons,
            "gate_evidence": evidence and {key: evidence[key] for key in EVIDENCE},
            "final_all_acc": metrics["final_all_acc"],
            "final_old_acc": metrics["final_old_acc"], "final_new_acc": metrics["final_new_acc"],
            "stability_gap": metrics.get("stability_gap"), "iterations": metrics["iterations"],
            "train_flops": metrics["train_flops"], "session_wall_s": metrics["wall_s"], "gate_s": gate_s,
            "wall_s": round(metrics["wall_s"] + gate_s, 2), "stages_s": metrics.get("stages_s")}


def summarize(seeds: list[list[dict]]) -> dict:
    """parity.json's `production` block (without provenance): per version over seeds, and the cumulative ratios over
    the seeds that retrained at every version (and, for every seed, over the whole stream with the retrains it did
    not run costed at its measured retrains' FLOPs per training image: a retrain's FLOPs follow its data). A seed
    with no rows (one that waits for its machine: `write_results`) is left out of every figure."""
    versions = []
    for index, first in enumerate(max(seeds, key=len)):
        rows = [rows[index] for rows in seeds if len(rows) > index]
        if first["version"] == 1:
            continue
        chain_acc, chain_std = stat([r["chain_all_acc"] for r in rows])
        retrains = [r["retrain"] for r in rows if "retrain" in r]
        versus, versus_std = stat([r["chain_all_acc"] - r["retrain"]["final_all_acc"] for r in rows if "retrain" in r])
        vanilla = [r["vanilla"] for r in rows if "vanilla" in r]
        versions.append({
            "version": first["version"], "kind": first["kind"], "chain_all_acc": chain_acc,
            "chain_all_acc_std": chain_std, "retrain_all_acc": stat([r["final_all_acc"] for r in retrains])[0],
            "retrain_seeds": len(retrains), "chain_minus_retrain": versus, "chain_minus_retrain_std": versus_std,
            "parent_all_acc": stat([r["parent_all_acc"] for r in rows])[0],
            "promoted": round(sum(r["promoted"] for r in rows) / len(rows), 3),
            "fallbacks": sum(len(r["chain"]) > 1 and r["chain"][0]["decision"] != PROMOTE for r in rows),
            "consolidations": sum("consolidated" in r for r in rows),
            "chain_methods": sorted({c["method"] for r in rows for c in r["chain"]}),
            "chain_train_flops": stat([sum(c["train_flops"] for c in r["chain"]) for r in rows])[0],
            "retrain_train_flops": stat([r["train_flops"] for r in retrains])[0],
            "chain_wall_s": stat([sum(c["wall_s"] for c in r["chain"]) for r in rows])[0],
            "retrain_wall_s": stat([r["wall_s"] for r in retrains])[0],
            "chain_stability_gap": stat([r["chain"][0]["stability_gap"] for r in rows])[0],
            "vanilla_stability_gap": stat([v["stability_gap"] for v in vanilla])[0],
            "vanilla_all_acc": stat([v["final_all_acc"] for v in vanilla])[0]})
    full = [rows for rows in seeds if len(rows) > 1 and all("retrain" in r for r in rows[1:])]
    paired = [r for rows in seeds for r in rows[1:] if "retrain" in r]

    every = [r for rows in full for r in rows[1:]]
    sizes = [sum(counts.values()) for counts in class_counts(max(len(rows) for rows in seeds))]

    def whole_stream(rows: list[dict]) -> float | None:
        measured = [(r["retrain"]["train_flops"], sizes[r["version"] - 1]) for r in rows[1:] if "retrain" in r]
        if not measured:
            return None
        per_image = sum(f for f, _ in measured) / sum(n for _, n in measured)
        retrains = sum(r["retrain"]["train_flops"] if "retrain" in r else per_image * sizes[r["version"] - 1]
                       for r in rows[1:])
        return retrains / sum(c["train_flops"] for r in rows[1:] for c in r["chain"])

    stream = stat([whole_stream(rows) for rows in seeds])
    compared = compare_baselines(seeds)
    cheapest = compared.get("cheapest_equal") or {"flops_share": 1.0, "wall_share": 1.0}
    flops_ratio, wall_ratio = cost_ratio(every, "train_flops"), cost_ratio(every, "wall_s")
    return {"seeds": sum(map(bool, seeds)), "versions": versions, "targets": targets(seeds, versions),
            "baselines": compared,
            "chain_wall_shares": wall_shares([c for rows in seeds for r in rows[1:] for c in r["chain"]]),
            "cumulative": {"flops_ratio": flops_ratio, "wall_ratio": wall_ratio,
                           # against the cheapest recipe as accurate as the 3-epoch retrain (itself when none is)
                           "iso_flops_ratio": flops_ratio and round(flops_ratio * cheapest["flops_share"], 2),
                           "iso_wall_ratio": wall_ratio and round(wall_ratio * cheapest["wall_share"], 2),
                           "seeds_with_every_retrain": len(full),
                           # the same ratio over every (seed, version) that ran a retrain: before a seed has one at
                           # every version, an estimate from the versions it has
                           "paired_flops_ratio": cost_ratio(paired, "train_flops"),
                           "paired_wall_ratio": cost_ratio(paired, "wall_s"), "paired_sessions": len(paired),
                           "stream_flops_ratio": stream[0], "stream_flops_ratio_std": stream[1]}}


def wall_shares(sessions: list[dict]) -> dict | None:
    """Where the chain's whole-version wall went, over every chain session from v2 on: each step of the session
    (its `stages_s`), the process around them and the gate, as shares of the wall; `outside_train_loop`: all but
    the loop's steps (None: runs recorded before sessions timed their steps)."""
    if not sessions or any(c.get("stages_s") is None for c in sessions):
        return None
    whole = sum(c["wall_s"] for c in sessions)
    totals: dict[str, float] = {}
    for c in sessions:
        for stage, seconds in c["stages_s"].items():
            totals[stage] = totals.get(stage, 0.0) + seconds
    totals["outside the session's steps"] = sum(c["session_wall_s"] - sum(c["stages_s"].values()) for c in sessions)
    totals["gate"] = sum(c["gate_s"] for c in sessions)
    shares = {stage: round(seconds / whole, 3) for stage, seconds in totals.items()}
    return {**shares, "outside_train_loop": round(1 - totals.get("train", 0.0) / whole, 3), "seconds": round(whole, 1)}


def compare_baselines(seeds: list[list[dict]]) -> dict:
    """Each baseline against the 3-epoch retrain over the (seed, version) pairs that ran both: mean accuracy, the
    difference, its train FLOPs and whole-version wall as shares of the retrain's and over the chain's, and the
    chain's own difference to the retrain on the same pairs. `cheapest_equal`: the cheapest baseline whose mean is
    within ISO_TOLERANCE of the retrain's (absent: none is); `cheapest_as_chain`: the cheapest cheaper than the retrain
    whose mean is at least the chain's on the same pairs (the saving at the chain's own accuracy; absent: none is)."""
    rows = [r for rows in seeds for r in rows[1:] if "retrain" in r and "baselines" in r]
    compared: dict = {}
    for name in sorted({name for r in rows for name in r["baselines"]}):
        pairs = [(r["baselines"][name], r["retrain"], r["chain"]) for r in rows if name in r["baselines"]]
        acc, reference = (round(statistics.mean(p[i]["final_all_acc"] for p in pairs), 3) for i in (0, 1))
        compared[name] = {
            "pairs": len(pairs), "all_acc": acc, "retrain_all_acc": reference,
            "minus_retrain": round(acc - reference, 3),
            "worst_minus_retrain": round(min(b["final_all_acc"] - r["final_all_acc"] for b, r, _ in pairs), 3),
            **{share: round(sum(b[key] for b, _, _ in pairs) / sum(r[key] for _, r, _ in pairs), 4)
               for share, key in (("flops_share", "train_flops"), ("wall_share", "wall_s"))},
            **{over: round(sum(b[key] for b, _, _ in pairs) / sum(c[key] for _, _, chain in pairs for c in chain), 2)
               for over, key in (("over_chain_flops", "train_flops"), ("over_chain_wall", "wall_s"))},
            "chain_minus_retrain": round(statistics.mean(row["chain_all_acc"] - row["retrain_all_acc"]
                                                         for row in rows if name in row["baselines"]), 3)}
    equal = [(name, b) for name, b in compared.items() if b["minus_retrain"] >= -ISO_TOLERANCE and b["flops_share"] < 1]
    as_chain = [(name, b) for name, b in compared.items()
                if b["minus_retrain"] >= b["chain_minus_retrain"] and b["flops_share"] < 1]
    if equal:
        name, best = min(equal, key=lambda item: item[1]["flops_share"])
        compared["cheapest_equal"] = {"name": name, **{k: best[k] for k in ("flops_share", "wall_share")}}
    if as_chain:
        name, best = min(as_chain, key=lambda item: item[1]["over_chain_flops"])
        compared["cheapest_as_chain"] = {"name": name, **{k: best[k] for k in ("over_chain_flops", "over_chain_wall")}}
    return compared


def targets(seeds: list[list[dict]], versions: list[dict]) -> dict:
    """The issue's accuracy and promotion targets, read off the runs: chain − retrain per version (mean over the
    seeds that ran both), the data-growth versions whose chain (mean over seeds) ends below its parent, how often the
    chain's first candidate was promoted, the stability gap against vanilla rehearsal's; and, as the test split's
    own noise floor, how often the retrain itself ends below the retrain of the version before (same seed)."""
    paired = [v for v in versions if v["chain_minus_retrain"] is not None]
    worst = min(paired, key=lambda v: v["chain_minus_retrain"], default=None)
    growth = [v for v in versions if v["kind"] == "data-growth"]
    first = [r["chain"][0]["decision"] == PROMOTE for rows in seeds for r in rows[1:]]
    steps = [r["retrain_all_acc"] - previous["retrain_all_acc"] for rows in seeds
             for previous, r in zip(rows, rows[1:], strict=False)
             if r["kind"] == "data-growth" and "retrain_all_acc" in r and "retrain_all_acc" in previous]
    pairs = versus_retrain(enumerate(seeds))
    growth_pairs = [{"seed": seed, "version": r["version"], "value": round(r["chain_all_acc"] - r["parent_all_acc"], 3)}
                    for seed, rows in enumerate(seeds) for r in rows[1:] if r["kind"] == "data-growth"]
    served = [{"seed": seed, "version": r["version"], **c["gate_evidence"]}
              for seed, rows in enumerate(seeds) for r in rows[1:] if r["kind"] == "data-growth" and r["promoted"]
              for c in [next(c for c in reversed(r["chain"]) if c["decision"] == PROMOTE)]  # the served candidate
              if c["method"] != "retrain" and c.get("gate_evidence")]
    step_worst = min([*steps, 0.0])  # no step down measured (yet): below the parent at all is beyond the noise
    shared = {p["version"] for p in pairs if sum(q["version"] == p["version"] for q in pairs) == sum(map(bool, seeds))}
    return {
        # per (seed, version) pair that ran the retrain: the mean over the pairs of the versions every seed retrained
        # (each seed weighs the same), the worst pair, how many end at most 1.0 below their retrain
        "pairs": len(pairs), "pairs_shared_versions": len(shared),
        "pairs_chain_minus_retrain_mean": stat([p["value"] for p in pairs if p["version"] in shared])[0],
        "pairs_worst": min(pairs, key=lambda p: p["value"], default=None),
        "pairs_within_1": [sum(p["value"] >= -1.0 for p in pairs), len(pairs)],
        # data growth per (seed, version): below the parent by more than the retrain's own worst step
        "data_growth_pairs_worst": min(growth_pairs, key=lambda p: p["value"], default=None),
        "data_growth_pairs_below_retrain_noise": [p for p in growth_pairs if p["value"] < step_worst],
        # the evidence the flow has: served updates whose paired drop against their parent the gate's test resolves
        # (pipeline.chain.resolved_drop, the rule consolidation on drift applies), and how many served updates were
        # gated; above the parent: the drop's upper bound below zero
        "data_growth_pairs_resolved_below_parent": [[p for p in served if resolved_drop(p)], len(served)],
        "data_growth_pairs_resolved_above_parent": sum(p["old_acc_drop_bound"] < 0 for p in served),
        "chain_minus_retrain_mean": stat([v["chain_minus_retrain"] for v in paired])[0],
        "chain_minus_retrain_worst": worst and {"version": worst["version"], "value": worst["chain_minus_retrain"]},
        "versions_within_1": [sum(abs(v["chain_minus_retrain"]) <= 1.0 for v in paired), len(paired)],
        "data_growth_below_parent": [v["version"] for v in growth if v["chain_all_acc"] < v["parent_all_acc"]],
        "data_growth_versions": len(growth),
        "chain_minus_parent_data_growth_mean": stat([v["chain_all_acc"] - v["parent_all_acc"] for v in growth])[0],
        "chain_minus_parent_data_growth_worst": min((round(v["chain_all_acc"] - v["parent_all_acc"], 3)
                                                     for v in growth), default=None),
        "first_candidate_promoted": round(sum(first) / len(first), 3) if first else None,
        "gap_chain_over_vanilla": {f"v{v['version']}": round(v["chain_stability_gap"] / v["vanilla_stability_gap"], 3)
                                   for v in versions
                                   if v["vanilla_stability_gap"] and v["chain_stability_gap"] is not None},
        "retrain_below_previous_version": [sum(d < 0 for d in steps), len(steps)],
        "retrain_step_worst": min(steps, default=None) and round(min(steps), 3)}


def versus_retrain(seeds) -> list[dict]:
    """Chain − retrain per (seed, version) pair that ran the retrain, over (seed, rows) items."""
    return [{"seed": seed, "version": r["version"], "value": round(r["chain_all_acc"] - r["retrain_all_acc"], 3)}
            for seed, rows in seeds for r in rows[1:] if "retrain_all_acc" in r]


def apart(waiting_runs: dict | None) -> dict | None:
    """The seeds that wait for the machine that began them (by seed: their rows so far), summarized apart from the
    pooled figures: the last version each reached and its (seed, version) pairs so far against their retrain."""
    if not waiting_runs:
        return None
    waiting = sorted((int(seed), rows) for seed, rows in waiting_runs.items())  # a file's keys are strings
    pairs = versus_retrain(waiting)
    return {"seeds": [seed for seed, _ in waiting], "last_versions": [rows[-1]["version"] for _, rows in waiting],
            "pairs": len(pairs), "pairs_within_1": sum(p["value"] >= -1.0 for p in pairs),
            "pairs_mean": stat([p["value"] for p in pairs])[0],
            "pairs_worst": min(pairs, key=lambda p: p["value"], default=None)}


def markdown(block: dict) -> str:
    prov = block["provenance"]
    lines = [f"# Production stream: chained updates against the retrain of every version ({block['seeds']} seed(s))",
             "", f"commit {prov['commit']}, code {prov['code_hash']}, params {prov['params_hash']}, {made_on(prov)}, "
             f"torch {prov['torch']}; `{prov['command']}`; {prov['seconds']:.0f} s.", "",
             *([waiting_line(block["waiting"]), ""] if block.get("waiting") else []),
             f"chain: the model the flow would serve after the version (the update, or the retrain when it "
             f"consolidates (consolidate_after {prov.get('consolidate_after')}, on drift "
             f"{prov.get('consolidate_on_drift', False)}) or falls back, when the gate promoted it; else the champion "
             "stays). retrain: the standard retrain of the version, from the "
             "pretrained start. parent: the champion before the version. Accuracy on the version's whole test split; "
             "wall time: the session command and its gate; mean over seeds (chain: ± std); chain − retrain over the "
             "seeds that ran the retrain (paired).", "",
             "| version | kind | chain | retrain | parent | chain − retrain | promoted | chain methods | "
             "chain TFLOPs | retrain TFLOPs | chain wall s | retrain wall s | gap chain / vanilla |",
             "|" + "---|" * 13]
    for v in block["versions"]:
        versus = (f"{v['chain_minus_retrain']:+.2f}" if v["retrain_all_acc"] is not None else "–")
        gap = (f"{v['chain_stability_gap']} / {v['vanilla_stability_gap']}" if v["vanilla_stability_gap"] is not None
               else "–")
        lines.append(f"| v{v['version']} | {v['kind']} | {v['chain_all_acc']:.2f} ± {v['chain_all_acc_std']:.2f} | "
                     f"{_num(v['retrain_all_acc'])} | {_num(v['parent_all_acc'])} | {versus} | {v['promoted']:.0%} | "
                     f"{', '.join(v['chain_methods'])} | {_num(v['chain_train_flops'], 1e12)} | "
                     f"{_num(v['retrain_train_flops'], 1e12)} | {_num(v['chain_wall_s'])} | "
                     f"{_num(v['retrain_wall_s'])} | {gap} |")
    lines += ["", "Cumulative, retrain at every version / the chain (seeds that retrained at every version):", "",
              "```", json.dumps(block["cumulative"], indent=2), "```", "",
              "Targets (`targets` in the JSON: chain − retrain over the versions with a retrain, per-version means; "
              "data-growth versions whose chain ends below its parent; the chain's first candidates promoted; the "
              "stability gap, chain / vanilla; the retrain's own steps down from the version before, same seed):", "",
              "```", json.dumps(block["targets"], indent=2), "```", "",
              "Where the chain's whole-version wall went (`chain_wall_shares`: each step of its sessions, the rest of "
              "the session process, the gate; shares of the wall over every chain session from v2):", "", "```",
              json.dumps(block.get("chain_wall_shares"), indent=2), "```", "",
              "Baselines against the 3-epoch retrain, over the (seed, version) pairs that ran both (`baselines` in the "
              f"JSON; `cheapest_equal`: the cheapest within {ISO_TOLERANCE} of its mean, the one `iso_flops_ratio` "
              "counts against):", "", "```", json.dumps(block.get("baselines", {}), indent=2), "```"]
    return "\n".join(lines) + "\n"


def waiting_line(waiting: dict) -> str:
    """A sentence on the seeds `apart` summarizes."""
    worst, reached = waiting["pairs_worst"], ", ".join(f"v{v}" for v in waiting["last_versions"])
    pairs = (f"their {waiting['pairs']} (seed, version) pairs so far: {waiting['pairs_within_1']} within 1.0 of "
             f"their retrain, {waiting['pairs_mean']:+.2f} on average, the worst seed {worst['seed']} at "
             f"v{worst['version']}, {worst['value']:+.2f}" if worst else "no pair with a retrain yet")
    return (f"Seed(s) {', '.join(map(str, waiting['seeds']))} wait for the machine that began them (after {reached}) "
            f"and are left out of every figure; {pairs}.")


def _num(value: float | None, unit: float = 1.0) -> str:
    return "–" if value is None else f"{value / unit:.2f}"


def plot(block: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = block["versions"]
    x = [v["version"] for v in rows]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    axes[0].errorbar(x, [v["chain_all_acc"] for v in rows], [v["chain_all_acc_std"] for v in rows], fmt="o-",
                     label="chain (served model)")
    retrained = [v for v in rows if v["retrain_all_acc"] is not None]
    axes[0].plot([v["version"] for v in retrained], [v["retrain_all_acc"] for v in retrained], "s--",
                 label="retrain of the version")
    axes[0].plot(x, [v["parent_all_acc"] for v in rows], ":", color="gray", label="parent (champion before)")
    fallback = [v for v in rows if v["fallbacks"]]
    axes[0].plot([v["version"] for v in fallback], [v["chain_all_acc"] for v in fallback], "x", color="red",
                 markersize=10, label="fallback retrain ran")
    for number, v in enumerate(v for v in rows if v.get("consolidations")):
        axes[0].axvline(v["version"], color="green", alpha=0.4, label=None if number else "consolidation (retrain)")
    axes[0].set(title="all-class test accuracy", xlabel="data version", ylabel="percent")
    for key, label in [("chain_train_flops", "chain"), ("retrain_train_flops", "retrain at every version")]:
        done = [(v["version"], v[key]) for v in rows if v[key] is not None]
        total, points = 0.0, []
        for version, flops in done:
            total += flops / 1e12
            points.append((version, total))
        axes[1].plot(*zip(*points, strict=True), "o-", label=label)
    axes[1].set(title="cumulative train compute from v2", xlabel="data version", ylabel="TFLOPs", yscale="log")
    finish_figure(fig, axes, png)


def write_results(out: Path, prov: dict, seeds: list[list[dict]], figure: bool = True, name: str = "production",
                  waiting_runs: dict | None = None) -> None:
    """production.{json,md,png} and parity.json's `production` block; under another `name`, its files alone.
    `waiting_runs`: the rows of the seeds that wait for the machine that began them (by seed; their place in `seeds`
    empty), kept and summarized apart (`waiting`), so that every figure pools only seeds a machine finished."""
    block = {"provenance": prov, **summarize(seeds), "waiting": apart(waiting_runs)}
    out.mkdir(parents=True, exist_ok=True)
    whole = {**block, "runs": seeds, "waiting_runs": waiting_runs or {}}
    (out / f"{name}.json").write_text(json.dumps(whole, indent=2))
    (out / f"{name}.md").write_text(markdown(block))
    if block["versions"] and figure:
        plot(block, out / f"{name}.png")
    if name != "production":
        return
    headline = out / "parity.json"
    saved = json.loads(headline.read_text()) if headline.exists() else {}
    saved["production"] = block
    headline.write_text(json.dumps(saved, indent=2))


def screen(args, versions: list[Path], runtime: Runtime, prov: dict) -> None:
    """Each SCREEN arm on each case of SCREEN_CASES named in `args.cases`, from each seed's parent there."""
    rows, name = [], "production_screen" if args.name == "production" else args.name
    for seed in range(args.seeds):
        models = args.work / "models" / f"seed{seed}"
        params = load_params(Path("params.yaml"), [*args.set, f"seed={seed}"])
        base = models / "v1"
        starts = {"v1": (base, session(base, params, parent=None, data=versions[0], method="retrain", runtime=runtime,
                                       reads=RETRAIN_READS))}
        for number, (arm, overrides) in enumerate(SCREEN.items()):
            for case_id in (c for c in args.cases.split(",") if c in overrides):
                case, start, data = SCREEN_CASES[case_id]
                if start not in starts:
                    update = models / f"{start}-update"
                    starts[start] = update, reuse_or_run(update, params, _missing_chain, update)
                arm_params = load_params(Path("params.yaml"), [*args.set, *overrides[case_id], f"seed={seed}"])
                run_dir = models / "screen" / f"{case_id}-{number}"
                metrics = session(run_dir, arm_params, parent=starts[start][0],
                                  data=_screen_data(args.work / "data", versions, data), method="sgm", runtime=runtime)
                rows.append({"seed": seed, "arm": arm, "case": case, "overrides": overrides[case_id],
                             "parent_all_acc": starts[start][1]["final_all_acc"],
                             **_cost(metrics, "sgm", 0.0, None), "per_class_acc": metrics["per_class_acc"]})
                _write_screen(args.out, prov, rows, name)


def _screen_data(root: Path, versions: list[Path], data: str) -> Path:
    """A screen case's data: a version of the stream, or v1 with a class added or every class grown (made once)."""
    if "+" not in data:
        return versions[int(data[1:]) - 1]
    out = root / data.replace("+", "-plus-").replace("%", "pct")
    if not out.exists():
        scratch = out.with_name(f".{out.name}")
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.copytree(versions[0], scratch, copy_function=hardlink)
        extra = data.split("+")[1]
        if extra.startswith("class"):
            materialize(Settings().fashion_mnist_dir, scratch, [int(extra[5:])], NEW_CLASS[6][1], TEST_PER_CLASS)
        else:
            grown = round(BASE_PER_CLASS * (1 + float(extra.rstrip("%")) / 100))
            materialize(Settings().fashion_mnist_dir, scratch, list(BASE_CLASSES), grown, TEST_PER_CLASS)
        scratch.rename(out)
    return out


def _missing_chain(run_dir: Path) -> dict:
    raise SystemExit(f"{run_dir}: the chain's update there is made by `python -m benchmarks.production --seeds 3` "
                     "(this engine, params and machine); run it first")


def _write_screen(out: Path, prov: dict, rows: list[dict], name: str) -> None:
    lines = ["# Production stream: the update session's settings, screened (mean ± std over seeds)", "",
             f"commit {prov['commit']}, code {prov['code_hash']}, params {prov['params_hash']}, {prov['machine']}, "
             f"torch {prov['torch']}; `{prov['command']}`.", "",
             "From each seed's v1 (8 classes at 2,800 train images, its standard retrain) to v2 (every class +3%), "
             "to v1 plus class 8 or class 9 (300 images) and to v1 with every class +1%, and from each seed's chain "
             "at v16, v8 or v11 (its promoted update) to v17 (class 9 arrives), v9 (every class +1%) or v12 (class 4 "
             "+20%), one sgm update per arm and case. parent: the starting model's accuracy on its own test split. "
             "Gap: the stability gap on the continual-evaluation subset. lowest old class: the mean over seeds of the "
             "least accurate old class.", "",
             "| case | arm | seeds | all | old | new | old − parent | lowest old class | stability gap | iterations | "
             "TFLOPs |", "|" + "---|" * 11]
    for case in dict.fromkeys(r["case"] for r in rows):
        for arm in dict.fromkeys(r["arm"] for r in rows):
            cell = [r for r in rows if r["case"] == case and r["arm"] == arm]
            if not cell:
                continue

            def shown(key: str, unit: float = 1.0, cell=cell) -> str:
                mean, std = stat([None if r[key] is None else r[key] / unit for r in cell])
                return "–" if mean is None else f"{mean:.2f} ± {std:.2f}"

            drop = stat([r["final_old_acc"] - r["parent_all_acc"] for r in cell])
            lowest = stat([min(list(r["per_class_acc"].values())[:len(r["per_class_acc"]) - (
                r["final_new_acc"] is not None)]) for r in cell])  # the old classes come first, the new one last
            lines.append(f"| {case} | {arm} | {len(cell)} | {shown('final_all_acc')} | {shown('final_old_acc')} | "
                         f"{shown('final_new_acc')} | {drop[0]:+.2f} ± {drop[1]:.2f} | "
                         f"{lowest[0]:.2f} ± {lowest[1]:.2f} | {shown('stability_gap')} | "
                         f"{shown('iterations')} | {shown('train_flops', 1e12)} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    (out / f"{name}.json").write_text(json.dumps({"provenance": prov, "runs": rows}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--versions", type=int, default=VERSIONS)
    parser.add_argument("--screen", action="store_true", help="screen the session's settings (SCREEN) instead")
    parser.add_argument("--cases", default="growth,class,class9,v17",
                        help="--screen: the SCREEN_CASES to run, comma-separated (default: the screen of record's)")
    parser.add_argument("--report", action="store_true", help="only re-render the results from their JSON (--name)")
    parser.add_argument("--set", action="append", default=[], help="a params override for every run, key=value")
    parser.add_argument("--consolidate-after", type=lambda v: None if v == "none" else float(v),
                        default=CONSOLIDATE_AFTER, help="the flow's consolidate_after (a share, or none)")
    parser.add_argument("--consolidate-on-drift", action=argparse.BooleanOptionalAction, default=CONSOLIDATE_ON_DRIFT,
                        help="the flow's consolidate_on_drift: retrain after an update the gate "
                        "resolves below the last retrain-made model")
    parser.add_argument("--baselines", action="store_true",
                        help="the BASELINES at the sparse retrain versions of every seed (and the full network)")
    parser.add_argument("--dense-seeds", type=int, default=1,
                        help="seeds that then retrain at every version (after every seed's sparse pass)")
    parser.add_argument("--name", default="production", help="the results files' name (production: the headline)")
    parser.add_argument("--no-figure", action="store_true",
                        help="no production.png (a host without matplotlib); --report draws it from the JSON later")
    parser.add_argument("--work", type=Path, default=Path("work/production"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--ledger", help="the finished runs, committed as they come: a fresh machine resumes from "
                        "them, each seed on the machine that began it (default benchmarks/results/ledger/<name>.json; "
                        "none: --work's only)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.report:  # e.g. after a change to the summary: the runs as they were recorded
        saved = json.loads((args.out / f"{args.name}.json").read_text())
        return write_results(args.out, saved["provenance"], saved["runs"], name=args.name,
                             waiting_runs=saved.get("waiting_runs"))
    versions = materialize_versions(args.work / "data", args.versions)
    runtime = benchmark_runtime(args.work / "features")
    params = load_params(Path("params.yaml"), args.set)
    start, seeds, machines, waiting = time.perf_counter(), {}, {}, set()
    prov = {"commit": git_commit(), "code_hash": engine_code(), "params_hash": params.digest(), "machine": machine(),
            "torch": torch.__version__, "seeds": args.seeds, "versions": args.versions,
            "consolidate_after": args.consolidate_after, "consolidate_on_drift": args.consolidate_on_drift,
            "command": "python -m benchmarks.production " + " ".join(sys.argv[1:])}

    if args.screen:
        return screen(args, versions, runtime, prov)
    if args.ledger != "none":
        harness.LEDGER = Ledger(Path(args.ledger or f"benchmarks/results/ledger/{args.name}.json"), args.work,
                                depth=2)  # a unit: one seed's runs (models/seed<N>), made on one machine
    # every seed's chain with its sparse retrains (retrain_due) first, then the first `--dense-seeds` seeds' remaining
    # retrains (their chains' sessions are read back): the 3-seed figures come before the full cost ratio; with
    # --baselines, last the full-network retrain at one seed
    full = min(FULL_NETWORK_SEED, args.seeds - 1)
    passes = [*((seed, False, False) for seed in range(args.seeds)),
              *((seed, True, False) for seed in range(min(args.dense_seeds, args.seeds))),
              *([(full, full < args.dense_seeds, True)] if args.baselines else [])]

    def write() -> None:  # a seed that waits for its machine is reported apart (write_results)
        write_results(args.out, {**prov, "machines": [machines[s] for s in sorted(machines)],
                                 "seconds": round(time.perf_counter() - start)},
                      [[] if s in waiting else seeds.get(s, []) for s in sorted(machines)], not args.no_figure,
                      args.name, {s: seeds[s] for s in sorted(waiting) if s in seeds})

    for seed, every, full_network in passes:
        models = args.work / "models" / f"seed{seed}"
        machines[seed] = harness.maker(models / "v1")

        def written(rows: list[dict], seed: int = seed) -> None:  # a second pass keeps the first's later versions
            seeds[seed] = rows + seeds.get(seed, [])[len(rows):]
            write()

        try:
            run_seed(seed, versions, models, runtime, args, every, written, full_network)
        except harness.Elsewhere as elsewhere:  # its versions so far are reported apart; the rest wait for its machine
            logging.info("seed %d stops here: %s", seed, elsewhere)
            waiting.add(seed)
    write()

if __name__ == "__main__":
    main()
