"""The promotion gate: a candidate against the champion on the test split. Pass, reject, or error (never a pass)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import NormalDist

import torch

from pipeline.config import GateParams
from pipeline.data import ImageSet, Manifest, build_manifest
from pipeline.evaluate import accuracy_report, logits_of, negative_flip_rate
from pipeline.evaluate.metrics import top_class
from pipeline.evaluate.paired import half_width, images_needed, paired_bound
from pipeline.model import load_card, load_model
from pipeline.runtime import Runtime

PROMOTE, REJECT = "promote", "reject"
# Planning: two equally good models disagree on about this many images per image the champion gets wrong
# (measured between retrains of the same data with different seeds: benchmarks/results/gate_oc.json)
DISCORDANCE_PER_ERROR = 0.6
PLANNED_PASS_RATE = 0.95  # an equally good candidate should pass this often: the split size asked for


class GateError(ValueError):
    """The gate cannot judge (mismatched models, missing or NaN metrics): an error, never a pass."""


def _finite(name: str, value) -> float:
    if value is None or not math.isfinite(value):
        raise GateError(f"metric {name} is {value}: nothing to judge it on; the gate never passes a missing metric")
    return float(value)


def preflight(manifest: Manifest, champion_dir: Path, rules: GateParams) -> dict:
    """Before anything trains: every problem of the data version's splits at once, and whether its test split can
    decide: a split on which an equally good candidate would pass less than PLANNED_PASS_RATE of the time is an
    error naming the images it needs. Returns the plan (old-class test images, planned discordance, half-width,
    the equal candidate's planned pass rate, images needed)."""
    card = load_card(champion_dir)
    problems = manifest.problems()
    old = set(card["class_names"])
    n_old = sum(name in old for name, _ in manifest.files["test"].values())
    metrics_file = Path(champion_dir) / "metrics.json"
    accuracy = json.loads(metrics_file.read_text()).get("final_all_acc") if metrics_file.exists() else None
    plan = {"old_test_images": n_old, "margin": rules.old_acc_margin, "confidence": rules.confidence}
    if accuracy is not None and n_old:
        discordance = max(DISCORDANCE_PER_ERROR * (100 - accuracy) / 100, 1 / n_old)
        width = half_width(n_old, discordance, rules.confidence)
        needed = images_needed(discordance, rules.old_acc_margin, rules.confidence, PLANNED_PASS_RATE)
        passes = NormalDist().cdf((rules.old_acc_margin - width) / (width / NormalDist().inv_cdf(rules.confidence)))
        plan.update(planned_discordance=round(100 * discordance, 2), half_width=round(width, 2),
                    equal_pass_rate=round(passes, 3), images_needed=needed)
        if n_old < needed:
            problems.append(
                f"{n_old} old-class test images cannot decide at gate.old_acc_margin={rules.old_acc_margin}: the "
                f"champion errs on {100 - accuracy:.1f}% of its test images, so an equally good candidate disagrees "
                f"with it on about {100 * discordance:.1f}% and the gate's bound sits about {width:.1f} points above "
                f"its estimate; such a candidate would pass only about {passes:.0%} of the time. About {needed} "
                f"old-class test images are needed (for it to pass {PLANNED_PASS_RATE:.0%} of the time at confidence "
                f"{rules.confidence}); add test images, or widen the margin knowingly")
    if problems:
        raise GateError("refusing to train: no candidate could be judged on this data version:\n  - "
                        + "\n  - ".join(problems))
    return plan


def decide(champion_preds: torch.Tensor, candidate_preds: torch.Tensor, candidate_among_old: torch.Tensor,
           targets: torch.Tensor, classes: list[str], n_old: int, rules: GateParams) -> tuple[list[dict], dict]:
    """The checks and their evidence from predictions on the same test images (`champion_preds` on the old-class
    images only; `candidate_among_old`: the candidate's best of the champion's classes, on those images)."""
    old = targets < n_old
    old_targets = targets[old]
    report = accuracy_report(candidate_preds, targets, classes, n_old)
    champion_report = accuracy_report(champion_preds, old_targets, classes[:n_old], n_old)
    champion_correct = champion_preds == old_targets
    among_old_correct = candidate_among_old == old_targets
    among_old_acc = round(100.0 * among_old_correct.float().mean().item(), 2)
    bound = paired_bound(among_old_correct, champion_correct, rules.confidence)
    bound_all = paired_bound(candidate_preds[old] == old_targets, champion_correct, rules.confidence)
    flips = negative_flip_rate(champion_preds, candidate_preds[old], old_targets, n_old)
    # non-inferiority on the champion's classes, decided on the bound alone (a rule on the point estimate rejects
    # an equally good candidate half the time); in a data-growth update there are no other outputs
    checks = [("old-class accuracy drop among old classes (upper bound)", _finite("old_acc_drop_bound", bound),
               "<=", rules.old_acc_margin),
              ("negative flip rate", _finite("negative_flip_rate", flips), "<=", rules.max_negative_flip_rate)]
    if n_old < len(classes):  # new outputs may take old-class images (Shirt vs T-shirt): bounded as a retrain's are
        checks += [("old-class accuracy drop, all outputs (upper bound)",
                    _finite("old_acc_drop_all_bound", bound_all), "<=", rules.old_acc_margin_all),
                   ("new-class accuracy", _finite("new_acc", report["new_acc"]), ">=", rules.min_new_acc)]
    for name in classes:
        if name not in report["per_class_acc"]:
            raise GateError(f"class {name!r} has no test images; add some under test/{name}/ before promoting")
        floor = rules.class_floors.get(name, rules.min_class_acc)
        checks.append((f"class {name} accuracy", _finite(f"{name} accuracy", report["per_class_acc"][name]), ">=",
                       floor))
    champion_old_acc = _finite("champion old_acc", champion_report["old_acc"])
    discordance = (among_old_correct != champion_correct).float().mean().item()
    evidence = {"champion_old_acc": champion_old_acc, "candidate_old_acc": _finite("old_acc", report["old_acc"]),
                "candidate_old_acc_among_old": among_old_acc,
                "old_acc_drop": round(champion_old_acc - among_old_acc, 2), "old_acc_drop_bound": round(bound, 2),
                "old_acc_drop_all": round(champion_old_acc - report["old_acc"], 2),
                "old_acc_drop_all_bound": round(bound_all, 2), "discordance": round(100 * discordance, 2),
                "resolvable_drop": round(half_width(int(old.sum()), discordance, rules.confidence), 2),
                "new_acc": report["new_acc"], "all_acc": report["all_acc"], "negative_flip_rate": flips,
                "per_class_acc": report["per_class_acc"], "champion_per_class_acc": champion_report["per_class_acc"],
                "old_test_images": int(old.sum()), "new_test_images": int((~old).sum())}
    return [_check(*check) for check in checks], evidence


def judge(candidate_dir: Path, champion_dir: Path, data_root: Path, rules: GateParams,
          runtime: Runtime | None = None, reference_dir: Path | None = None, manifest: Manifest | None = None) -> dict:
    """`runtime`: the device the predictions run on (default: the CPU) and the prediction cache (a model's logits over
    an image are computed once; test images are decoded only for predictions the cache lacks).
    `reference_dir`: a fixed earlier champion (the flow passes the last retrain-made one) that the candidate must
    also stay within the margin of, so that a chain of updates, each a little below the one before, cannot walk the
    model down: the margin is spent once. `manifest`: the data version's, when the caller has it (else the test
    split's is made here, through the runtime's hash cache)."""
    runtime = runtime or Runtime()
    candidate, cand_card = load_model(candidate_dir, runtime.device)
    champion, champ_card = load_model(champion_dir, runtime.device)
    classes = cand_card["class_names"]
    _extends(cand_card, champ_card, "champion")
    manifest = manifest or build_manifest(data_root, runtime.hashes, splits=("test",))
    entries = manifest.entries("test")
    digests = [manifest.files["test"][path][1] for path, _ in entries]
    test = ImageSet.load(data_root, entries, classes, cand_card["model"]["img_size"], stream=True)  # targets

    def logits(model, card: dict, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The outputs of `model` (its `card`) on the test images of the first `n_classes` classes, and which
        images those are; from the cache when it predicted them before (the champion when it was the candidate,
        the candidate when its update ended). Each model is asked once."""
        mask = test.targets < n_classes
        if not mask.any():
            raise GateError(f"{data_root}/test holds no images of {classes[:n_classes]}; the gate needs them")
        chosen = [entry for entry, keep in zip(entries, mask.tolist(), strict=True) if keep]
        data = ImageSet.load(data_root, chosen, classes[:n_classes], card["model"]["img_size"], stream=True)
        kept = [digest for digest, keep in zip(digests, mask.tolist(), strict=True) if keep]
        cache = runtime.predictions
        return (cache.logits(model, card["weights_sha256"], data, kept) if cache else logits_of(model, data)), mask

    n_old = len(champ_card["class_names"])
    candidate_logits, _ = logits(candidate, cand_card, len(classes))
    champion_logits, old = logits(champion, champ_card, n_old)
    checks, evidence = decide(top_class(champion_logits), top_class(candidate_logits),
                              top_class(candidate_logits[old], n_old), test.targets, classes, n_old, rules)
    if reference_dir is not None:
        reference, ref_card = load_model(reference_dir, runtime.device)
        _extends(cand_card, ref_card, "reference")
        n_ref = len(ref_card["class_names"])
        reference_logits, known = logits(reference, ref_card, n_ref)
        targets = test.targets[known]
        reference_correct = top_class(reference_logits) == targets
        candidate_correct = top_class(candidate_logits[known], n_ref) == targets
        drop = 100.0 * (reference_correct.float().mean() - candidate_correct.float().mean()).item()
        bound = paired_bound(candidate_correct, reference_correct, rules.confidence)
        checks.append(_check("old-class accuracy drop against the reference (upper bound)",
                             _finite("reference_drop_bound", bound), "<=", rules.old_acc_margin))
        evidence["reference"] = {"weights_sha256": ref_card["weights_sha256"], "classes": n_ref,
                                 "old_acc_drop": round(drop, 2), "old_acc_drop_bound": round(bound, 2),
                                 "margin_used": round(drop / rules.old_acc_margin, 2)}
    failed = [f"{c['check']} {c['value']} violates {c['rule']}" for c in checks if not c["passed"]]
    return {"decision": REJECT if failed else PROMOTE, "reasons": failed or ["every check passed"], "checks": checks,
            "evidence": {**evidence, "champion": champ_card["weights_sha256"],
                         "candidate": cand_card["weights_sha256"]},
            "rules": rules.model_dump()}


def _extends(candidate: dict, other: dict, role: str) -> None:
    if candidate["class_names"][:len(other["class_names"])] != other["class_names"]:
        raise GateError(f"the candidate's classes {candidate['class_names']} do not extend the {role}'s "
                        f"{other['class_names']} in order; it was not updated from this {role}")


def _check(what: str, value: float, op: str, limit: float) -> dict:
    return {"check": what, "value": round(value, 2), "rule": f"{op} {limit}",
            "passed": value <= limit if op == "<=" else value >= limit}


def headline(result: dict) -> dict:
    """The few numbers a person compares across runs, flat (DVC's `metrics show` / `metrics diff`); the
    decision's evidence stays in the full result."""
    evidence = result["evidence"]
    return {"promoted": result["decision"] == PROMOTE, "all_acc": evidence["all_acc"],
            "old_acc": evidence["candidate_old_acc"], "new_acc": evidence["new_acc"],
            "old_acc_drop": evidence["old_acc_drop"], "flip_rate": evidence["negative_flip_rate"]}


def explain(result: dict) -> str:
    lines = [f"gate: {result['decision'].upper()}"]
    lines += [f"  {'ok  ' if r['passed'] else 'FAIL'} {r['check']}: {r['value']} (rule {r['rule']})"
              for r in result["checks"]]
    return "\n".join(lines)
