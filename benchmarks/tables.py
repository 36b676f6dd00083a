"""The results tables of the docs, generated from the results files: each table sits in a markdown file between
`<!-- table:NAME -->` and `<!-- /table:NAME -->`, and this command rewrites every such block from the file it is
built from (`--check` fails instead when one is stale; the test suite runs it). NAME is a builder of TABLES, or a
results file a benchmark wrote, `FILE.md` or `FILE.md#N`: its first (Nth) table as the benchmark rendered it
(FILE relative to benchmarks/results). A figure in a sentence sits inline between `<!-- figure:NAME -->` and
`<!-- /figure:NAME -->`, NAME a builder of FIGURES, and is rewritten and checked the same way. A number in a
sentence sits between `<!-- value:FILE:PATH -->` and `<!-- /value -->`: the value at PATH in the results file FILE,
or in `params.yaml` for a default (`targets.pairs_worst.value`, `rows[0].wall_s`, `summary[one / default].mean`,
`rows[case=one,seed=2].iterations`: a list's item by index or by its fields; `A - B` the difference of two values),
a string (a commit) as it is, a number written again in its own style (its decimals, sign, thousands separator,
exponent, a `%` for a share, an `x`); `PATH|abs` for a magnitude the sentence signs in words ("1.30 below").
A decimal typed outside these blocks (and outside code) fails the check, unless its section is marked
`<!-- archived: FILE, FILE -->`: it quotes results files an earlier engine made, which no rerun rewrites (each named
file must be archived in benchmarks/results/INDEX.md).

    .venv/bin/python -m benchmarks.tables            # rewrite the tables in README.md and docs/
    .venv/bin/python -m benchmarks.tables --check    # exit 1 naming each stale table
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path

from benchmarks.harness import ISO_TOLERANCE, NEW_CLASS, cost_ratio, made_on

RESULTS = Path("benchmarks/results")
PARAMS = Path("params.yaml")
DOCS = [Path("README.md"), *sorted(Path("docs").glob("*.md")), RESULTS / "INDEX.md"]


def _num(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _times(ratio: float | None) -> str:
    return "–" if ratio is None else f"{ratio}x"


def make_run(results: dict) -> str:
    """`make run`'s summary (flows/demo.py --results): every run of every version and what the gate decided."""
    prov = results["provenance"]
    where = f"engine {prov['engine']}, {prov['machine']}" if "machine" in prov else f"{prov['cores']} cores"
    lines = [f"Commit {prov['commit']}, params {prov['params_hash']}, {where}, {prov['wall_s'] / 60:.1f} min.", "",
             "| version | run | stability gap | old | new | all | iterations | train TFLOPs | wall s | gate | "
             "the version's steps s: train + the rest |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for version, result in results["versions"].items():
        gate, stages = result.get("gate") or {}, result.get("stages_s")
        for number, (label, m) in enumerate(result["metrics"].items()):
            whole = "–"
            if number == 0:
                evidence = gate.get("evidence", {})
                bound = (f"; old-class drop {evidence['old_acc_drop']:+.2f}, bound {evidence['old_acc_drop_bound']}"
                         if "old_acc_drop_bound" in evidence else "")
                decided = f"**{result['status']}**, {result['version']}{bound}"
                if stages:  # the flow's steps (detect to report), the shadows and the wait for the slot apart
                    own = sum(seconds for step, seconds in stages.items() if step != "wait")
                    whole = f"{own:.1f}: {stages['train']:.1f} + {own - stages['train']:.1f}"
            else:
                decided = "(report only)" if "shadow" in label else gate.get("decision", "")
            lines.append(f"| {version} | {label} | {_num(m.get('stability_gap'))} | {m['final_old_acc']} | "
                         f"{_num(m['final_new_acc'])} | {m['final_all_acc']} | {m['iterations']} | "
                         f"{m['train_flops'] / 1e12:.2f} | {m['wall_s']:.1f} | {decided} | {whole} |")
    return "\n".join(lines)


def _first_promoted(runs: list[list[dict]]) -> list[bool]:
    """Per (seed, version) after v1: whether the chain's first candidate (the update, or a consolidation) passed."""
    return [r["chain"][0]["decision"] == "promote" for seed in runs for r in seed[1:]]


def production_headline(results: dict) -> str:
    """The production stream where every seed ran a retrain beside the chain, and what the whole stream cost."""
    prov, cumulative = results["provenance"], results["cumulative"]
    versions = results["versions"]
    first = _first_promoted(results["runs"])
    lines = [f"Commit {prov['commit']}, engine {prov['code_hash']}, params {prov['params_hash']}, {made_on(prov)}; "
             f"{results['seeds']} seed(s) (chain: mean ± std over seeds){_waiting(results)}.", "",
             "| version | kind | chain (served model) | retrain of the version | chain − retrain (paired) | "
             "retrain seeds | chain TFLOPs | retrain TFLOPs |", "|---|---|---|---|---|---|---|---|"]
    for v in versions:
        if v["retrain_seeds"] != results["seeds"]:
            continue
        lines.append(f"| v{v['version']} | {v['kind']} | {v['chain_all_acc']:.2f} ± {v['chain_all_acc_std']:.2f} | "
                     f"{v['retrain_all_acc']:.2f} | "
                     f"{v['chain_minus_retrain']:+.2f} ± {v['chain_minus_retrain_std']:.2f} | "
                     f"{v['retrain_seeds']} | {_num(v['chain_train_flops'] / 1e12)} | "
                     f"{_num(v['retrain_train_flops'] / 1e12)} |")
    gaps = [f"v{v['version']} {v['chain_stability_gap']:.2f} / {v['vanilla_stability_gap']:.2f}" for v in versions
            if v["vanilla_stability_gap"] is not None]
    lines += ["", f"The chain's first candidate promoted at {sum(first) / len(first):.0%} of {len(first)} "
              f"(seed, version) pairs; the rest took the fallback retrain.{_consolidations(results)} Stability gap, "
              "chain / vanilla: "
              f"{', '.join(gaps)}. Train FLOPs over the whole stream, a retrain at every version / the chain: "
              f"{cumulative['stream_flops_ratio']:.1f}x ± {cumulative['stream_flops_ratio_std']:.1f} over seeds (the "
              "retrains a seed did not run costed at its measured FLOPs per training image). Over the sessions that "
              f"ran a retrain beside them ({cumulative['paired_sessions']}): {cumulative['paired_flops_ratio']}x "
              f"train FLOPs, {cumulative['paired_wall_ratio']}x wall."]
    if cumulative["seeds_with_every_retrain"]:
        lines[-1] += (f" The {cumulative['seeds_with_every_retrain']} seed(s) with a retrain at every version: "
                      f"{cumulative['flops_ratio']}x train FLOPs, {cumulative['wall_ratio']}x wall (the whole "
                      "command and its gate).")
    compared = results.get("baselines", {})
    if baselines := {k: b for k, b in compared.items() if k not in ("cheapest_equal", "cheapest_as_chain")}:
        cheapest, clause = compared.get("cheapest_equal"), _as_chain(results)
        lines[-1] += (" Beside the chain, against the 3-epoch retrain of the same (seed, version): " + "; ".join(
            f"{name} {b['minus_retrain']:+.2f} (worst {b['worst_minus_retrain']:+.2f}) at {b['flops_share']:.2f} of "
            f"its train FLOPs, {b['over_chain_flops']}x the chain's ({b['pairs']} pairs)" for name, b in
            baselines.items()) + ". " + (f"The cheapest as accurate (within {ISO_TOLERANCE} of its mean) is the "
                                          f"{cheapest['name']}" if cheapest else
                                          f"None cheaper is as accurate (within {ISO_TOLERANCE} of its mean)")
            + f": against it the chain saves {_times(cumulative['iso_flops_ratio'])} train FLOPs and "
              f"{_times(cumulative['iso_wall_ratio'])} wall. {clause[0].upper()}{clause[1:]}.")
    return "\n".join(lines)


def _read(name: str) -> dict:
    """A results file, or `params.yaml`: the defaults a user runs (for a value block quoting a default). Each file
    is parsed once per version of it, however many blocks quote it."""
    path = PARAMS if name == PARAMS.name else RESULTS / name
    return _parsed(path, path.stat().st_mtime_ns)


@functools.cache
def _parsed(path: Path, _version: int) -> dict:
    if path == PARAMS:
        from pipeline.config import load_params
        return load_params(PARAMS).model_dump()
    return json.loads(path.read_text())


CONSOLIDATION_NEVER = "production_new_class_half.json"  # the chain at the arms' own defaults, never consolidating
QUARTER = "production_new_class_quarter.json"  # the chain at a quarter of each batch, with the floor of 30 steps
TODAY = "0.15, no floor (default)"  # today's session defaults (never consolidating), as the comparison tables name them
# the headline's first run at today's defaults: three seeds, seed 0 retrained at every version (the chain the earlier
# defaults' files are compared with, on the same seeds and machine)
FIRST_HEADLINE = "production_seed0_dense.json"
# what consolidation on drift (the flow's default: the headline) is compared with: the chain that never consolidates
# and the one that consolidates after 20% growth
DRIFT_AGAINST = ["production_never.json", "production_schedule_0.2.json"]


def new_class_share(quarter: dict) -> str:
    """The production chain at a new class's share of each batch of two earlier defaults: half (CONSOLIDATION_NEVER)
    and a quarter (QUARTER), both with the floor of 30 steps."""
    return compare_chains([("half", _read(CONSOLIDATION_NEVER)), ("a quarter", quarter)])


def share_and_floor(today: dict) -> str:
    """From a quarter with the floor to today's defaults, one change at a time: a quarter with the floor (QUARTER),
    a quarter without it (`--set update.min_iters=0`), 0.15 without it (FIRST_HEADLINE)."""
    return compare_chains([("a quarter, floor 30", _read(QUARTER)),
                           ("a quarter, no floor", _read("production_min_iters_0.json")), (TODAY, today)])


def compare_chains(arms: list[tuple[str, dict]]) -> str:
    """Production chains side by side, at the versions where every one ran a retrain at every seed and at the
    new-class versions (chain − retrain paired over the seeds that ran one), then their targets."""
    by_version = [{v["version"]: v for v in arm["versions"]} for _, arm in arms]
    shown = [n for n in by_version[-1] if all(n in table for table in by_version) and (
        by_version[-1][n]["kind"] != "data-growth" or all(
            table[n]["retrain_seeds"] == arm["seeds"] for table, (_, arm) in zip(by_version, arms, strict=True)))]
    lines = ["| version | kind | " + " | ".join(f"chain, {name} | chain − retrain (seeds)" for name, _ in arms)
             + " |", "|---|---|" + "---|---|" * len(arms)]
    for n in shown:
        cells = [(f"{v['chain_all_acc']:.2f} ± {v['chain_all_acc_std']:.2f}",
                  f"{_signed(v['chain_minus_retrain'])} ({v['retrain_seeds']})") for v in (t[n] for t in by_version)]
        lines.append(f"| v{n} | {by_version[-1][n]['kind']} | " + " | ".join(c for pair in cells for c in pair) + " |")
    lines += ["", "| | " + " | ".join(name for name, _ in arms) + " |", "|---|" + "---|" * len(arms)]
    paired = [[t[n]["chain_minus_retrain"] for n in shown if t[n]["chain_minus_retrain"] is not None]
              for t in by_version]
    for label, cell in (
            ("seeds", lambda i, a: str(a["seeds"])),
            ("chain − retrain, mean over these versions (worst)", lambda i, a: "–" if not paired[i] else
             f"{sum(paired[i]) / len(paired[i]):+.2f} ({min(paired[i]):+.2f})"),
            ("data-growth versions below the parent (mean over seeds)", lambda i, a: "{} of {}".format(
                len(a["targets"]["data_growth_below_parent"]), a["targets"]["data_growth_versions"])),
            ("chain − parent over the data-growth versions: mean (worst)", lambda i, a: (
                f"{_signed(a['targets']['chain_minus_parent_data_growth_mean'])} "
                f"({_signed(a['targets']['chain_minus_parent_data_growth_worst'])})")),
            ("first candidate promoted, every version", lambda i, a: _share(a["targets"]["first_candidate_promoted"])),
            ("stability gap, chain / vanilla", lambda i, a: ", ".join(
                f"{k} {v:.2f}" for k, v in a["targets"]["gap_chain_over_vanilla"].items()) or "–"),
            ("train FLOPs, whole stream, retrain at every version / chain", lambda i, a: "–" if a["cumulative"][
                "stream_flops_ratio"] is None else f"{a['cumulative']['stream_flops_ratio']:.1f}x ± "
                                                   f"{a['cumulative']['stream_flops_ratio_std']:.1f}")):
        lines.append(f"| {label} | " + " | ".join(cell(i, arm) for i, (_, arm) in enumerate(arms)) + " |")
    return "\n".join(lines)


def every_version(today: dict) -> str:
    """Seed 0 at every version, at each default, against the retrain of every version. A retrain reads no update
    setting (its model depends on the data, the seed and the train params), so the first file's dense pass holds
    seed 0's retrain at the versions the later files did not retrain; where two ran one, they must agree in accuracy
    and train FLOPs (this raises otherwise). Wall: the whole commands and their gates, every file's runs on the same
    machine."""
    before = _read(CONSOLIDATION_NEVER)
    arms = [("half", before), ("a quarter", _read(QUARTER)), (TODAY, today)]
    retrains = {r["version"]: r["retrain"] for r in before["runs"][0][1:]}
    for row in (row for _, arm in arms for row in arm["runs"][0][1:]):
        if "retrain" in row:
            kept, new = retrains[row["version"]], row["retrain"]
            if (kept["final_all_acc"], kept["train_flops"]) != (new["final_all_acc"], new["train_flops"]):
                raise ValueError(f"v{row['version']}: the files' retrains differ; rerun the dense pass")
    lines = ["| seed 0, a new class's share of each batch | versions | chain − retrain: mean (worst) | "
             "versions within 1.0 | data-growth versions below the parent | train FLOPs, retrain at every version "
             "/ chain | wall, the same |", "|---|---|---|---|---|---|---|"]
    for name, arm in arms:
        rows = arm["runs"][0][1:]
        versus = [(r["chain_all_acc"] - retrains[r["version"]]["final_all_acc"], r["version"]) for r in rows]
        below = [r["version"] for r in rows if r["kind"] == "data-growth" and r["chain_all_acc"] < r["parent_all_acc"]]
        flops, wall = (sum(retrains[r["version"]][key] for r in rows) / sum(c[key] for r in rows for c in r["chain"])
                       for key in ("train_flops", "wall_s"))
        worst = min(versus)
        lines.append(f"| {name} | v2-v{rows[-1]['version']} | {sum(d for d, _ in versus) / len(versus):+.2f} "
                     f"({worst[0]:+.2f}, v{worst[1]}) | {sum(abs(d) <= 1.0 for d, _ in versus)} of {len(versus)} | "
                     f"{len(below)} of {sum(r['kind'] == 'data-growth' for r in rows)} | {flops:.2f}x | "
                     f"{wall:.2f}x |")
    return "\n".join(lines)


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.2f}"


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _arms(dense: bool) -> list[dict]:
    """The production stream's results at each `consolidate_after` measured, never first: the 3-seed files, or
    (`dense`) the files with seed 0 retrained at every version (CONSOLIDATION_NEVER's first seed, and each
    `production_consolidate_*_seed0_dense.json`). They ran before a new class's share of each batch became its own
    key, at half of each batch; the headline production.json runs today's default."""
    arms = [json.loads(path.read_text()) for path in sorted(RESULTS.glob("production_consolidate_*.json"))
            if path.name.endswith("_seed0_dense.json") == dense]
    return [_read(CONSOLIDATION_NEVER), *sorted(
        arms, key=lambda a: -a["provenance"]["consolidate_after"])]


def _consolidated_at(rows: list[dict]) -> str:
    """The versions among a chain's `rows` that ran a consolidation retrain ("v6, v9"), or ""."""
    return ", ".join(f"v{r['version']}" for r in rows if "consolidated" in r)


def _against_retrain(rows: list[dict], consolidated: str = "") -> str:
    """Three cells for a chain with a retrain at each of its `rows`: where it consolidated (or `consolidated`), chain −
    retrain's mean (worst), and how many versions end within a point of their retrain."""
    versus = [r["chain_all_acc"] - r["retrain"]["final_all_acc"] for r in rows]
    consolidated = consolidated or _consolidated_at(rows) or "–"
    return (f"{consolidated} | {sum(versus) / len(versus):+.2f} ({min(versus):+.2f}) | "
            f"{sum(abs(d) <= 1.0 for d in versus)} of {len(versus)}")


def consolidation_dense(_: dict) -> str:
    """Seed 0, a retrain at every version, at each `consolidate_after`: chain − retrain over the 22 versions and the
    cost ratios (whole commands and gates for the wall)."""
    lines = ["| consolidate_after | consolidated at | chain − retrain: mean (worst) | versions within 1.0 | "
             "train FLOPs, retrain at every version / chain | wall, the same |", "|---|---|---|---|---|---|"]
    for arm in _arms(dense=True):
        after, rows = arm["provenance"]["consolidate_after"], arm["runs"][0][1:]
        lines.append(f"| {'never' if after is None else f'{after:.0%}'} | {_against_retrain(rows)} | "
                     f"{arm['cumulative']['flops_ratio']}x | {arm['cumulative']['wall_ratio']}x |")
    return "\n".join(lines)


def consolidation(_: dict) -> str:
    """The production stream's chain at each `consolidate_after` measured (the 3-seed files), on the versions every
    seed retrained (every 4th and the last): chain − retrain paired by seed, and the whole stream's cost."""
    lines = ["| consolidate_after | seeds | consolidated at | chain − retrain: mean (worst), all | ... where the chain "
             "served an update | versions within 1.0 | FLOPs, retrain at every version / chain | first candidate "
             "promoted |",
             "|---|---|---|---|---|---|---|---|"]
    for arm in _arms(dense=False):
        after, last = arm["provenance"]["consolidate_after"], len(arm["runs"][0])
        rows = [r for seed in arm["runs"] for r in seed[1:] if r["version"] % 4 == 0 or r["version"] == last]
        paired = [(r["chain_all_acc"] - r["retrain"]["final_all_acc"], "consolidated" in r) for r in rows
                  if "retrain" in r]
        updates = [d for d, consolidated in paired if not consolidated]
        versions = sorted({r["version"] for r in rows if "consolidated" in r})
        means = [v["chain_minus_retrain"] for v in arm["versions"] if v["retrain_seeds"] == arm["seeds"]]
        cumulative, first = arm["cumulative"], _first_promoted(arm["runs"])
        lines.append(
            f"| {'never' if after is None else f'{after:.0%}'} | {arm['seeds']} | "
            f"{', '.join(f'v{v}' for v in versions) or '–'} | "
            f"{sum(d for d, _ in paired) / len(paired):+.2f} ({min(means):+.2f}) | "
            f"{sum(updates) / len(updates):+.2f} | {sum(abs(m) <= 1.0 for m in means)} of {len(means)} | "
            f"{cumulative['stream_flops_ratio']:.1f}x ± {cumulative['stream_flops_ratio_std']:.1f} | "
            f"{sum(first) / len(first):.0%} |")
    return "\n".join(lines)


def drift(arm: dict) -> str:
    """Consolidation on the gate's evidence of drift (the headline, `production.json`: the flow's default) against the
    chain that never consolidates and the one that consolidates on a schedule (DRIFT_AGAINST: the same command with
    `--no-consolidate-on-drift`, and `--consolidate-after 0.2`, at the same seeds), at
    each seed where all three retrained at every version: chain − retrain over the versions, and the cost ratios from
    the rows (every candidate's train FLOPs; whole commands and gates for the wall); then each policy over those seeds'
    (seed, version) pairs together."""
    lines = ["| seed | consolidation | consolidated at | chain − retrain: mean (worst) | pairs within 1.0 | "
             "train FLOPs, retrain at every version / chain | wall, the same | made on |",
             "|---|---|---|---|---|---|---|---|"]

    def row(seed: str, name: str, rows: list[dict], where: str, consolidated: str = "") -> str:
        flops, wall = cost_ratio(rows, "train_flops"), cost_ratio(rows, "wall_s")
        return f"| {seed} | {name} | {_against_retrain(rows, consolidated)} | {flops:.2f}x | {wall:.2f}x | {where} |"

    arms = [*map(_read, DRIFT_AGAINST), arm]
    pooled: dict[str, list[dict]] = {}  # policy -> the rows of every seed shown
    seeds, machines = [], set()
    for seed, runs in enumerate(zip(*(a["runs"] for a in arms), strict=False)):
        if not all(len(rows) == arm["provenance"]["versions"] and all("retrain" in r for r in rows[1:])
                   for rows in runs):
            continue
        seeds.append(seed)
        machines.add(where := arm["provenance"]["machines"][seed].split(" (")[0])
        for policy, (_, *rows) in zip((a["provenance"] for a in arms), runs, strict=True):  # v1: the base model
            after = policy["consolidate_after"]
            name = ("on drift" if policy["consolidate_on_drift"] else
                    "never" if after is None else f"after {after:.0%} growth")
            pooled.setdefault(name, []).extend(rows)
            lines.append(row(str(seed), name, rows, where))
    if len(seeds) > 1:
        for name, rows in pooled.items():
            lines.append(row(", ".join(map(str, seeds)), name, rows, ", ".join(sorted(machines)),
                             f"{sum('consolidated' in r for r in rows)} retrains"))
    return "\n".join(lines)


def make_run_time(_: dict) -> str:
    """How long `make run` took on each machine it was recorded on (flows/demo.py --results)."""
    runs = [json.loads(path.read_text())["provenance"] for path in sorted(RESULTS.glob("make_run*.json"))]
    return "; ".join(f"{run['wall_s'] / 60:.1f} min on {run['cores']} cores, "
                     f"{run['machine'].split(' (')[0] if 'machine' in run else 'a CPU not recorded'}" for run in runs)


def make_run_kernels(_: dict) -> str:
    """Each recorded `make run` (flows/demo.py --results): its machine and kernels, and its update against the retrain
    shadow at every version."""
    runs = []
    for path in sorted(RESULTS.glob("make_run*.json")):
        record = json.loads(path.read_text())
        diffs = [f"{name} {m['sgm']['final_all_acc'] - m['retrain (shadow)']['final_all_acc']:+.2f}"
                 for name, m in ((n, v["metrics"]) for n, v in record["versions"].items())
                 if "sgm" in m and "retrain (shadow)" in m]
        runs.append(f"{record['provenance']['machine'].split(' (')[0]} kernels (`{path.name}`): {', '.join(diffs)}")
    return "; ".join(runs)


def production_pairs(results: dict) -> str:
    """The production chain against its retrain per (seed, version) pair (`targets` in the file): how many end at
    most 1.0 below, the mean over the pairs of the versions every seed retrained (each seed weighs the same) and the
    worst pair."""
    t = results["targets"]
    within, total = t["pairs_within_1"]
    worst = t["pairs_worst"]
    return (f"{within} of {total} (seed, version) pairs within 1.0 of their retrain; over the "
            f"{t['pairs_shared_versions']} versions every seed retrained, {t['pairs_chain_minus_retrain_mean']:+.2f} "
            f"on average; the worst pair seed {worst['seed']} at v{worst['version']}, {worst['value']:+.2f}")


def production_claim(results: dict) -> str:
    """The README's claim read off production.json: accuracy per (seed, version) pair against the retrain, what a
    retrain at every version costs over the chain, and the cheapest baseline as accurate as the chain."""
    c = results["cumulative"]
    seeds, every = results["seeds"], c["seeds_with_every_retrain"]
    cost = (f"a retrain at every version costs {_times(c['flops_ratio'])} the chain's train FLOPs and "
            f"{_times(c['wall_ratio'])} its wall (whole commands and gates, {every} of {seeds} seeds retrained at "
            "every version)" if every else f"a retrain at every version costs {c['stream_flops_ratio']:.1f}x the "
            "chain's train FLOPs (estimated: no seed retrained at every version)")
    return f"{production_pairs(results)}; {cost}; {_as_chain(results)}{_waiting(results)}"


def _consolidations(results: dict) -> str:
    """The versions at which each pooled seed's chain ran a consolidation retrain (a row marked `consolidated`: the
    retrain's cost was spent, served or not), in a sentence; empty for a chain that consolidated nowhere."""
    seeds = [(seed, at) for seed, rows in enumerate(results["runs"]) if (at := _consolidated_at(rows))]
    if not seeds:
        return ""
    count = sum("consolidated" in r for rows in results["runs"] for r in rows)
    return f" It ran a consolidation retrain at {count} version(s): " + "; ".join(
        f"seed {seed} at {at}" for seed, at in seeds) + "."


def _waiting(results: dict) -> str:
    """The seeds left out of the pooled figures (they wait for the machine that began them), in a clause."""
    if not (waiting := results.get("waiting")):
        return ""
    worst = waiting["pairs_worst"]
    return (f"; seed(s) {', '.join(map(str, waiting['seeds']))}, begun on another machine and not yet whole, are left "
            f"out: {waiting['pairs_within_1']} of their {waiting['pairs']} pairs so far within 1.0" + (
                f", {waiting['pairs_mean']:+.2f} on average, the worst {worst['value']:+.2f}" if worst else ""))


def _as_chain(results: dict) -> str:
    """The cheapest baseline at least as accurate as the chain on the pairs that ran the baselines, in a clause."""
    compared = results.get("baselines") or {}
    if not compared:
        return "no cheaper baseline was run beside it"
    if "over_chain_wall" not in (as_chain := compared.get("cheapest_as_chain") or {}):
        return "no baseline cheaper than the retrain was as accurate as the chain on the pairs that ran them"
    chain = compared[as_chain["name"]]["chain_minus_retrain"]
    return (f"at the chain's own accuracy on the pairs that ran the baselines ({chain:+.2f} against the retrain), the "
            f"cheapest baseline is the {as_chain['name']}, at {as_chain['over_chain_flops']}x the chain's train FLOPs "
            f"and {as_chain['over_chain_wall']}x its wall")


def _production_pairs(results: dict) -> list[dict]:
    """Every (seed, version) pair of production.json whose seed retrained the version."""
    return [run for seed in results["runs"] for run in seed[1:] if run.get("retrain_all_acc") is not None]


def production_pairs_by_kind(results: dict) -> str:
    """The chain − retrain mean over the pairs of each kind of version."""
    kinds: dict[str, list[float]] = {}
    for run in _production_pairs(results):
        kinds.setdefault(run["kind"], []).append(run["chain_all_acc"] - run["retrain_all_acc"])
    return " and ".join(f"the {len(gaps)} {kind} pairs average {sum(gaps) / len(gaps):+.2f}"
                        for kind, gaps in sorted(kinds.items())) or "no pair ran a retrain"


def production_retrain_spread(results: dict) -> str:
    """The largest difference between two seeds' retrains of one version."""
    versions: dict[int, list[float]] = {}
    for run in _production_pairs(results):
        versions.setdefault(run["version"], []).append(run["retrain_all_acc"])
    return _num(max((max(accs) - min(accs) for accs in versions.values() if len(accs) > 1), default=None))


def parity_retrain_spread(results: dict) -> str:
    """A parity results file's retrain: the largest difference between two seeds' retrains of each version."""
    parts = []
    for stream, seeds in results["runs"].items():
        for version in sorted({v for runs in seeds for v in runs if v != "v1"}, key=lambda v: int(v[1:])):
            accs = [runs[version]["retrain"]["final_all_acc"] for runs in seeds if "retrain" in runs.get(version, {})]
            if len(accs) > 1:
                parts.append(f"{stream} {version} {max(accs) - min(accs):.2f}")
    return ", ".join(parts) or "no version retrained at two seeds"


def production_drift(results: dict) -> str:
    """The served data-growth updates against their parent by the gate's own paired evidence: how many the test split
    resolves below and above it, beside the false alarms an equally good model gives at the gate's confidence."""
    t = results["targets"]
    if not (resolved := t.get("data_growth_pairs_resolved_below_parent")) or not resolved[1]:
        return "no served data-growth update recorded its gate's evidence"
    below, served = resolved
    confidence = _read(PARAMS.name)["gate"]["confidence"]
    alarm = 1 - confidence
    chance = sum(math.comb(served, k) * alarm ** k * confidence ** (served - k) for k in range(len(below), served + 1))
    return (f"of {served} served data-growth updates, the gate's paired test at its one-sided {confidence:.0%} "
            f"resolves {len(below)} below their parent (an update as good as its parent is so in "
            f"{alarm:.0%} of versions: {alarm * served:.1f} expected) and "
            f"{t['data_growth_pairs_resolved_above_parent']} above it; as many below or more come of equally "
            f"good updates with probability {chance:.2f} (binomial; target: no more than the false-alarm rate, "
            f"resolved at {confidence:.0%}: {'met' if chance > alarm else 'missed'})")


def production_targets(results: dict) -> str:
    """The headline's targets read off production.json, each with met / missed (or not measured)."""
    t, c = results["targets"], results["cumulative"]

    def verdict(ok: bool | None) -> str:
        return "not measured" if ok is None else ("met" if ok else "missed")

    first, gaps = t["first_candidate_promoted"], t["gap_chain_over_vanilla"]
    within, total = t["pairs_within_1"]
    worst, growth_worst = t["pairs_worst"], t["data_growth_pairs_worst"]
    below = t["data_growth_pairs_below_retrain_noise"]
    wall, iso = c["wall_ratio"], (c["iso_flops_ratio"], c["iso_wall_ratio"])  # None: no seed retrained at every version
    cheapest = (results.get("baselines") or {}).get("cheapest_equal", {}).get(
        "name", f"the 3-epoch retrain itself (no shorter recipe or warm start within {ISO_TOLERANCE} of it)")
    parts = [f"the first candidate promoted at {first:.0%} of (seed, version) pairs (target 90%: "
             f"{verdict(first >= 0.9)})",
             "the stability gap, chain / vanilla rehearsal, " + ", ".join(f"{v} {g:.2f}" for v, g in gaps.items())
             + f" (target a third: {verdict(all(g <= 1 / 3 for g in gaps.values()) if gaps else None)})",
             f"train FLOPs over the whole stream, a retrain at every version / the chain, "
             f"{c['stream_flops_ratio']:.2f}x (target 20x: {verdict(c['stream_flops_ratio'] >= 20)})",
             f"the wall of the {c['seeds_with_every_retrain']} seed(s) retrained at every version "
             f"{_times(wall)} (target 10x: {verdict(None if wall is None else wall >= 10)})",
             "against the cheapest retrain as accurate, " + (
                 f"{cheapest}: {_times(iso[0])} train FLOPs and {_times(iso[1])} wall (targets 20x and "
                 f"10x: {verdict(None if None in iso else iso[0] >= 20 and iso[1] >= 10)})"
                 if results.get("baselines") else "not measured (no baselines in this run)"),
             f"{within} of {total} pairs within 1.0 of their retrain (target all: {verdict(within == total)}), the "
             f"worst seed {worst['seed']} at v{worst['version']}, {worst['value']:+.2f}",
             f"the mean over the pairs of the {t['pairs_shared_versions']} versions every seed retrained "
             f"{t['pairs_chain_minus_retrain_mean']:+.2f} (target within 0.3: "
             f"{verdict(t['pairs_chain_minus_retrain_mean'] >= -0.3)})",
             (f"data growth: {len(below)} pair(s) below the parent by more than the retrain's own worst step "
              f"between versions ({t['retrain_step_worst']:+.2f}; target none: {verdict(not below)}), the worst seed "
              f"{growth_worst['seed']} at v{growth_worst['version']}, {growth_worst['value']:+.2f}; the chain gains "
              f"{t['chain_minus_parent_data_growth_mean']:+.2f} a data-growth version on average (mean over seeds)"
              if t["retrain_step_worst"] is not None else
              "data growth against the parent: not measured (no seed retrained at consecutive versions)")]
    if resolved := t.get("data_growth_pairs_resolved_below_parent"):
        parts.append(f"{len(resolved[0])} of the {resolved[1]} served data-growth updates resolved below their parent "
                     "by the gate's paired test")
    return "; ".join(parts)


def statuses() -> dict[str, tuple[dict, str | None, str]]:
    """Per results file: its provenance, its engine and whether today's engine and defaults made it: `current`
    (today's engine, or one the equivalence record proves gives the same models, at params.yaml's hash and, for a
    chain, the flow's consolidation policy), `current engine, other params` (a screen's arm), `current engine, another
    chain policy` (a chain that consolidates otherwise than the flow's default), or `archived` (an earlier engine: it
    informed a decision of its time, docs/decisions.md)."""
    from benchmarks.harness import engine_code, proven_equal
    from pipeline.chain import CONSOLIDATE_AFTER, CONSOLIDATE_ON_DRIFT
    from pipeline.config import load_params

    today, defaults = {engine_code(), *proven_equal(engine_code())}, load_params(PARAMS).digest()
    found = {}
    for path in sorted([*RESULTS.glob("*.json"), *RESULTS.glob("diagnostics/*.json")]):
        prov = _read(str(path.relative_to(RESULTS))).get("provenance") or {}
        engine = prov.get("code_hash") or prov.get("engine") or (prov.get("after") or {}).get("code_hash")
        if engine is None:
            status = "archived: no engine recorded"
        elif engine not in today:
            status = "archived: an earlier engine"
        elif prov.get("params_hash") not in (defaults, None):
            status = "current engine, other params"
        elif "consolidate_after" in prov and (prov["consolidate_after"], prov.get("consolidate_on_drift", False)) != (
                CONSOLIDATE_AFTER, CONSOLIDATE_ON_DRIFT):  # a chain made before the drift rule: never on drift
            status = "current engine, another chain policy"
        else:
            status = "current"
        found[str(path.relative_to(RESULTS))] = prov, engine, status
    return found


def results_index(_: dict) -> str:
    """Every results file, its engine and its status (`statuses`)."""
    lines = ["| file | engine | commit | params | status |", "|---|---|---|---|---|"]
    for name, (prov, engine, status) in statuses().items():
        if "/" in name:
            continue  # diagnostics/: runs kept as evidence, named in the docs where they are quoted
        lines.append(f"| {name} | {engine or '–'} | {prov.get('commit') or '–'} | "
                     f"{prov.get('params_hash') or '–'} | {status} |")
    return "\n".join(lines)


def diff_scale_verdict(results: dict) -> str:
    """The data work at scale against its target, in a sentence."""
    row = results["rows"][0]
    verdict = "met" if row["met"] else "not met"
    return (f"{row['manifest_and_diff_s']} s for the manifest and the diff of {row['files']:,} files with "
            f"{row['new_files']:,} new, against {row['manifest_without_cache_s']} s for a manifest reading every "
            f"file: the {row['target_s']} s target is {verdict} here")


def version_scale_verdict(results: dict) -> str:
    """The whole version at the smallest and the largest base, against its two targets."""
    small, large, targets = results["rows"][0], results["rows"][-1], results["targets"]
    stages = large["session_stages_s"]
    fixed = large["version_s"] - large["train_loop_s"]
    return (f"at {large['base_per_class']:,} images per class the version took {large['version_s']} s against "
            f"{small['version_s']} s at {small['base_per_class']:,}: {targets['ratio_largest_to_smallest']}x (target "
            f"≤ {targets['ratio_target']}x: {'met' if targets['ratio_met'] else 'missed'}). Its train loop took "
            f"{large['train_loop_s']} s of it ({large['iterations']} iterations); the other {fixed:.1f} s are what the "
            f"two commands do outside the session ({large['outside_session_s']} s, the gate included, of which each "
            f"process's start, python importing torch, timm and the pipeline, is {large['process_start_s']} s), the "
            f"continual evaluation ({stages['eval']} s), the "
            f"final predictions on the test split ({stages['final']} s) and the inputs ({stages['inputs']} s, mostly "
            f"the new images' trunk features), so {large['outside_train_loop']:.0%} of the "
            f"version is outside the train loop (target ≤ {targets['outside_target']:.0%}: "
            f"{'met' if targets['outside_met'] else 'missed'})")


def peers_standing(results: dict) -> str:
    """The update among Avalanche's strategies: at how many versions it is the most accurate (the others named, with
    the peer ahead), and its stability gap against the lowest peer's where new classes arrive (every version of the
    class-incremental stream, the new-class versions of the production stream)."""
    versions: dict[tuple[str, int], dict[str, dict]] = {}
    for row in results["summary"]:
        versions.setdefault((row["stream"], row["version"]), {})[row["method"]] = row
    behind, gaps = [], []
    for (stream, number), methods in versions.items():
        mine, peers = methods["update"], {name: row for name, row in methods.items() if name != "update"}
        best = max(peers, key=lambda name: peers[name]["final_all_acc"][0])
        if (ahead := peers[best]["final_all_acc"][0] - mine["final_all_acc"][0]) > 0:
            behind.append(f"{best} is {ahead:.2f} ahead at {stream} v{number}")
        if stream == "class-incremental" or number in NEW_CLASS:
            gaps.append(mine["stability_gap"][0] / min(row["stability_gap"][0] for row in peers.values()))
    return (f"the update is the most accurate at {len(versions) - len(behind)} of the {len(versions)} versions of the "
            f"class-incremental and the production stream ({'; '.join(behind) or 'no peer ahead'}), with at most "
            f"{max(gaps):.0%} of the lowest peer's stability gap where a new class arrives")


def parity_pairs(results: dict) -> str:
    """Per (seed, version) of each stream: each configuration's final all-class accuracy minus the retrain's; the
    default's pairs one by one, the worst of them, and every other configuration's mean over the seeds."""
    parts, worst = [], None
    for stream, seeds in results["runs"].items():
        for version in (v for v in seeds[0] if v != "v1"):
            configs = [c for c in seeds[0][version] if c not in ("retrain", "vanilla")]  # the default first
            gaps = {c: [seed[version][c]["final_all_acc"] - seed[version]["retrain"]["final_all_acc"]
                        for seed in seeds] for c in configs}
            worst = min([worst or (0.0, ""), *((g, f"{stream} {version} seed {i}")
                                               for i, g in enumerate(gaps[configs[0]]))])
            others = "".join(f"; {c} {sum(g) / len(g):+.2f} on average" for c, g in gaps.items() if c != configs[0])
            parts.append(f"{stream} {version} {', '.join(f'{g:+.2f}' for g in gaps[configs[0]])}{others}")
    return f"per seed, the default − retrain: {'; '.join(parts)}. The worst pair: {worst[1]}, {worst[0]:+.2f}"


FIGURES: dict[str, tuple[str, Callable[[dict], str]]] = {
    "parity_digits_pairs": ("parity_digits.json", parity_pairs),
    "digits_screen_retrain_spread": ("parity_digits_screen.json", parity_retrain_spread),
    "peers_standing": ("peers.json", peers_standing),
    "version_scale_verdict": ("version_scale.json", version_scale_verdict),
    "diff_scale_verdict": ("diff_scale.json", diff_scale_verdict),
    "make_run_time": ("make_run.json", make_run_time),
    "make_run_kernels": ("make_run.json", make_run_kernels),
    "production_pairs": ("production.json", production_pairs),
    "production_targets": ("production.json", production_targets),
    "production_claim": ("production.json", production_claim),
    "production_drift": ("production.json", production_drift),
    "production_pairs_by_kind": ("production_never.json", production_pairs_by_kind),
    "production_retrain_spread": ("production.json", production_retrain_spread),
}
FIGURE = re.compile(r"(<!-- figure:(?P<name>\w+) -->)(?P<body>.*?)(<!-- /figure:(?P=name) -->)", re.S)
VALUE = re.compile(r"(<!-- value:(?P<source>[\w./-]+):(?P<path>[^>]+?) -->)(?P<body>[^<]*?)(<!-- /value -->)")
NUMBER = re.compile(r"(?P<sign>[+\-−]?)(?P<digits>\d[\d,]*)(?:\.(?P<decimals>\d+))?(?P<exponent>e-?\d+)?(?P<unit>%|x)?")


def lookup(data, path: str):
    """The value at `path` (see the module's docstring) in a results file's `data`; a KeyError names the step that
    found nothing, a list selection that matches no item or several."""
    for key, selector in re.findall(r"([^.\[\]]+)|\[([^\]]+)\]", path):
        if key or not isinstance(data, list):
            data = data[key or selector]
        elif selector.lstrip("-").isdigit():
            data = data[int(selector)]
        else:
            fields = dict(part.split("=", 1) for part in selector.split(","))
            found = [item for item in data if all(str(item.get(k)) == v for k, v in fields.items())]
            if len(found) != 1:
                raise KeyError(f"[{selector}] matches {len(found)} items")
            data = found[0]
    return data


def restyle(value: float | str, written: str) -> str:
    """`value` written as `written` is: the same decimals, sign style, thousands separator, exponent and unit (a
    string value, a commit or a command, as it is)."""
    if isinstance(value, str):
        return value
    style = NUMBER.fullmatch(written.strip())
    if style is None:
        raise ValueError(f"not a number: {written!r}")
    number = value * 100 if style["unit"] == "%" else value
    kind = "e" if style["exponent"] else "f"  # 1.5e-4: the exponent as written, no leading zeros or plus
    text = f"{abs(number):{',' if ',' in style['digits'] else ''}.{len(style['decimals'] or '')}{kind}}"
    text = re.sub(r"e([+-])0*(\d)", lambda m: "e" + m[1].strip("+") + m[2], text)
    sign = "+" if number >= 0 and style["sign"] == "+" else ""
    if number < 0 and float(text.replace(",", "")) != 0:
        sign = "−" if style["sign"] == "−" else "-"
    return sign + text + (style["unit"] or "")


def rebuild(match: re.Match) -> str:
    """A table block's body: its TABLES builder's, or the results file's own table."""
    if match["name"] in TABLES:
        source, build = TABLES[match["name"]]
        return build(_read(source))
    return results_table(match["name"])


def refigure(match: re.Match) -> str:
    source, build = FIGURES[match["name"]]
    return build(_read(source))


def revalue(match: re.Match) -> str:
    path, _, modifier = match["path"].partition("|")
    data = _read(match["source"])
    try:
        first, minus, second = path.partition(" - ")  # `A - B`: a difference of two values of the file
        value = lookup(data, first)
        if minus:
            value -= lookup(data, second)
    except (KeyError, IndexError, TypeError) as error:
        raise ValueError(f"value {match['source']}:{match['path']}: no such value ({error})") from None
    return restyle(abs(value) if modifier == "abs" else value, match["body"])


def results_table(name: str) -> str:
    """Tables of a results file a benchmark rendered, header to last row: `FILE.md` its first, `FILE.md#N,M` its
    Nth and Mth (from 1), each under the heading it sits under there."""
    file, _, numbers = name.partition("#")
    lines = (RESULTS / file).read_text().splitlines()
    starts = [i for i, line in enumerate(lines)
              if line.startswith("|") and (i == 0 or not lines[i - 1].startswith("|"))]
    picked = [int(n) for n in numbers.split(",")] if numbers else [1]
    parts = []
    for number in picked:
        start = starts[number - 1]
        end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
        heading = next((line.lstrip("# ") for line in reversed(lines[:start]) if line.startswith("## ")), None)
        parts.append((f"**{heading}**\n\n" if heading and len(picked) > 1 else "") + "\n".join(lines[start:end]))
    return "\n\n".join(parts)


TABLES: dict[str, tuple[str, Callable[[dict], str]]] = {
    "make_run": ("make_run.json", make_run),
    "make_run_avx2": ("make_run_avx2.json", make_run),
    "production_headline": ("production.json", production_headline),
    "new_class_share": (QUARTER, new_class_share),
    "share_and_floor": (FIRST_HEADLINE, share_and_floor),
    "every_version": (FIRST_HEADLINE, every_version),
    "consolidation": (CONSOLIDATION_NEVER, consolidation),
    "consolidation_dense": (CONSOLIDATION_NEVER, consolidation_dense),
    "drift": ("production.json", drift),
    "results_index": ("equivalence.json", results_index),
}
BLOCK = re.compile(r"(<!-- table:(?P<name>[\w./#,-]+) -->\n)(?P<body>.*?)(\n<!-- /table:(?P=name) -->)", re.S)


def render(text: str) -> tuple[str, list[str]]:
    """`text` with every table block rebuilt, and the names of the blocks that changed."""
    stale = []
    if starts := re.findall(r"(?m)^[ \t]*<!-- ((?:value|figure):[^>]*?) -->", text):
        raise ValueError(f"a figure or value block starts a line, where Markdown ends the paragraph before it (put "
                         f"the word before it on its line): {starts}")
    if broken := set(re.findall(r"<!-- table:([\w./#,-]+) -->", text)) - {m["name"] for m in BLOCK.finditer(text)}:
        raise ValueError(f"table blocks without their closing line, or with nothing between (leave one line): "
                         f"{sorted(broken)}")

    def refresh(build: Callable[[re.Match], str], name: Callable[[re.Match], str]) -> Callable[[re.Match], str]:
        """A block rewritten with `build`'s body between its own markers, noted stale (by `name`) when it changed."""
        def replace(match: re.Match) -> str:
            body = build(match)
            if body != match["body"]:
                stale.append(name(match))
            return match[0][:match.start("body") - match.start()] + body + match[0][match.end("body") - match.start():]
        return replace

    text = BLOCK.sub(refresh(rebuild, lambda match: match["name"]), text)
    text = FIGURE.sub(refresh(refigure, lambda match: match["name"]), text)
    return VALUE.sub(refresh(revalue, lambda match: f"value:{match['source']}:{match['path']}"), text), stale


ARCHIVED = re.compile(r"<!-- archived: (?P<files>[^>]+?) -->")
TYPED = re.compile(r"(?<![\w.])\d[\d,]*\.\d+(?!\d*\.\d)")  # a decimal typed into a sentence
FENCED = re.compile(r"^```.*?^```", re.S | re.M)
LITERAL = re.compile(r"`[^`]+`|<!--.*?-->|\]\([^)]*\)|<https?://[^>]+>", re.S)  # code, comments, link targets


def typed_figures(text: str, status_of: dict[str, tuple]) -> list[str]:
    """What a doc's sections type by hand that could go stale: a decimal outside a generated block, a code span and
    a comment, in a section that names no archived results file (`<!-- archived: FILE, FILE -->` under its heading:
    its figures quote files no engine rewrites); an archived mark naming a file that is not archived (`status_of`:
    `statuses()`), or on a section that types no figure."""
    problems = []
    for section in re.split(r"(?m)^(?=#{1,6} )", FENCED.sub("", VALUE.sub("", FIGURE.sub("", BLOCK.sub("", text))))):
        heading, _, body = section.partition("\n")
        heading = heading.lstrip("# ") if heading.startswith("#") else "(before the first heading)"
        marks = [name.strip() for mark in ARCHIVED.finditer(section) for name in mark["files"].split(",")]
        prose = LITERAL.sub("", body)
        for name in marks:
            status = status_of[name][2] if name in status_of else "no results file"
            if not status.startswith("archived"):
                problems.append(f"§ {heading}: marked as quoting archived {name}, which is {status} (put its "
                                f"figures in value blocks and drop it from the mark)")
        typed = TYPED.findall(prose)
        if typed and not marks:
            problems.append(f"§ {heading}: typed figures {', '.join(typed)} (put each in a value block, or mark the "
                            f"section's archived files: <!-- archived: FILE -->)")
        elif marks and not typed:
            problems.append(f"§ {heading}: marked as quoting archived files but types no figure (drop the mark)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail when a table is stale, writing nothing")
    args = parser.parse_args(argv)
    stale_anywhere, typed, status_of = [], [], statuses()
    for doc in DOCS:
        text, stale = render(doc.read_text())
        stale_anywhere += [f"{doc}: {name}" for name in stale]
        typed += [f"{doc} {problem}" for problem in typed_figures(text, status_of)] if doc.parent != RESULTS else []
        if stale and not args.check:
            doc.write_text(text)
    if args.check and stale_anywhere:
        print("stale tables (run `python -m benchmarks.tables`):\n  " + "\n  ".join(stale_anywhere), file=sys.stderr)
    if typed:
        print("figures no results file checks:\n  " + "\n  ".join(typed), file=sys.stderr)
    return 1 if typed or (args.check and stale_anywhere) else 0


if __name__ == "__main__":
    sys.exit(main())
