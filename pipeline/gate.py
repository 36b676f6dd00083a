"""The promotion gate: a candidate against the champion on the test split. Pass, reject, or error (never a pass)."""

from __future__ import annotations

import math
from pathlib import Path
from statistics import NormalDist

import torch

from pipeline.config import GateParams
from pipeline.data import scan_imagefolder
from pipeline.evaluate import accuracy_report, negative_flip_rate, predict
from pipeline.model import load_model
from pipeline.train.inputs import Engine, load_split

PROMOTE, REJECT = "promote", "reject"


class GateError(ValueError):
    """The gate cannot judge (mismatched models, missing or NaN metrics): an error, never a pass."""


def _finite(name: str, value) -> float:
    if value is None or not math.isfinite(value):
        raise GateError(f"metric {name} is {value}: nothing to judge it on; the gate never passes a missing metric")
    return float(value)


def drop_upper_bound(candidate_correct: torch.Tensor, champion_correct: torch.Tensor, confidence: float) -> float:
    """One-sided upper confidence bound (points) on the old-class accuracy drop, from paired per-sample outcomes."""
    diff = champion_correct.float() - candidate_correct.float()
    n = diff.numel()
    spread = diff.std().item() if n > 1 else 1.0
    return 100.0 * (diff.mean().item() + NormalDist().inv_cdf(confidence) * spread / math.sqrt(n))


def judge(candidate_dir: Path, champion_dir: Path, data_root: Path, rules: GateParams,
          engine: Engine | None = None) -> dict:
    """`engine`: the device the predictions run on and the memory budget beyond which test images stream
    (default: the CPU, half the available RAM)."""
    engine = engine or Engine()
    candidate, cand_card = load_model(candidate_dir, engine.device)
    champion, champ_card = load_model(champion_dir, engine.device)
    old_classes, classes = champ_card["class_names"], cand_card["class_names"]
    if classes[:len(old_classes)] != old_classes:
        raise GateError(f"the candidate's classes {classes} do not extend the champion's {old_classes} in order; "
                        "it was not updated from this champion")
    entries = scan_imagefolder(data_root)["test"]
    test = load_split(data_root, entries, classes, cand_card["model"]["img_size"], engine)
    old = test.targets < len(old_classes)
    if not old.any():
        raise GateError(f"{data_root}/test holds no images of the champion's classes; the gate needs them")
    old_test = test.subset(old)
    champ_test = old_test  # read once, unless the champion takes another input size
    if champ_card["model"]["img_size"] != cand_card["model"]["img_size"]:
        old_entries = [e for e, is_old in zip(entries, old.tolist(), strict=True) if is_old]
        champ_test = load_split(data_root, old_entries, old_classes, champ_card["model"]["img_size"], engine)
    champ_preds, cand_preds = predict(champion, champ_test), predict(candidate, test)
    cand_old_only = predict(candidate, old_test, among=len(old_classes))  # new outputs masked
    old_targets = old_test.targets

    report = accuracy_report(cand_preds, test.targets, classes, len(old_classes))
    champ_report = accuracy_report(champ_preds, old_targets, old_classes, len(old_classes))
    champ_old_acc = _finite("champion old_acc", champ_report["old_acc"])
    cand_old_acc = _finite("candidate old_acc", report["old_acc"])
    champ_correct = champ_preds == old_targets
    bound = drop_upper_bound(cand_old_only == old_targets, champ_correct, rules.confidence)
    bound_all = drop_upper_bound(cand_preds[old] == old_targets, champ_correct, rules.confidence)
    cand_old_only_acc = round(100.0 * (cand_old_only == old_targets).float().mean().item(), 2)
    flips = _finite("negative_flip_rate", negative_flip_rate(champ_preds, cand_preds[old], old_targets,
                                                             len(old_classes)))
    drop = champ_old_acc - cand_old_only_acc
    # non-inferiority on the champion's classes: not worse (point estimate), and not worse by more than the
    # margin at the bound; in a data-growth update there are no other outputs, so this is every output
    checks = [("old-class accuracy drop among old classes", _finite("old_acc_drop", drop), "<=",
               rules.max_old_acc_drop),
              ("old-class accuracy drop among old classes (upper bound)", _finite("old_acc_drop_bound", bound),
               "<=", rules.old_acc_margin),
              ("negative flip rate", flips, "<=", rules.max_negative_flip_rate)]
    new_classes = classes[len(old_classes):]
    if new_classes:  # new outputs may take old-class images (Shirt vs T-shirt): bounded by what a retrain costs
        checks += [("old-class accuracy drop, all outputs (upper bound)",
                    _finite("old_acc_drop_all_bound", bound_all), "<=", rules.max_old_acc_drop_all),
                   ("new-class accuracy", _finite("new_acc", report["new_acc"]), ">=", rules.min_new_acc)]
    for name in classes:
        if name not in report["per_class_acc"]:
            raise GateError(f"class {name!r} has no test images in {data_root}/test; add some before promoting")
        floor = rules.class_floors.get(name, rules.min_class_acc)
        checks.append((f"class {name} accuracy", _finite(f"{name} accuracy", report["per_class_acc"][name]), ">=",
                       floor))

    results = [{"check": what, "value": round(value, 2), "rule": f"{op} {limit}",
                "passed": value <= limit if op == "<=" else value >= limit} for what, value, op, limit in checks]
    failed = [f"{r['check']} {r['value']} violates {r['rule']}" for r in results if not r["passed"]]
    return {"decision": REJECT if failed else PROMOTE, "reasons": failed or ["every check passed"],
            "checks": results, "evidence": {
                "champion_old_acc": champ_old_acc, "candidate_old_acc": cand_old_acc,
                "candidate_old_acc_among_old": cand_old_only_acc,
                "old_acc_drop": round(drop, 2), "old_acc_drop_bound": round(bound, 2),
                "old_acc_drop_all": round(champ_old_acc - cand_old_acc, 2),
                "old_acc_drop_all_bound": round(bound_all, 2),
                "new_acc": report["new_acc"], "all_acc": report["all_acc"], "negative_flip_rate": flips,
                "per_class_acc": report["per_class_acc"], "champion_per_class_acc": champ_report["per_class_acc"],
                "old_test_images": int(old.sum()),
                "new_test_images": int((~old).sum()), "champion": champ_card["weights_sha256"],
                "candidate": cand_card["weights_sha256"]},
            "rules": rules.model_dump()}


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
