"""The chain's policy: what one data version does to the served model. The flow and the benchmarks run this one rule.

Per version: the candidate is the update (`method`, `auto` by default), or the standard retrain once consolidation
is due; it is judged against the champion and the chain's reference; a rejected update falls back to a standard
retrain, judged the same way; the champion moves only on a promotion, and a promoted retrain becomes the chain's new
reference. Training and judging are passed in, so this module knows no Prefect, registry or benchmark.

Consolidation (`consolidate_after`, off by default): the candidate is the standard retrain once the training images
grew by that share since the data the chain's last retrain saw. Measured on the production stream at an earlier
default (docs/benchmarks.md, "Drift and consolidation"; 22 versions, 81% more data, 3 seeds, six versions retrained):
a chain of updates did not drift away from the retrain of its version, it stayed a roughly constant distance below
it (a retrain at every version, later, showed it holding its level while the retrain climbs: below), about the same
after a consolidation as before; what consolidating adds to the mean comes mostly from the versions a retrain
serves, each at a retrain's cost. So it is off by default: at today's default, with a retrain every 20% of growth,
it is about as close as consolidation on drift at the same price (below), retraining whether or not the chain fell
behind.

Consolidation on drift (`on_drift`, on by default): on the evidence the flow has without a retrain beside it. A
promoted update that the gate's paired test resolves below the chain's last retrain-made model (trained on less data)
has fallen behind a retrain; the standard retrain is then trained, judged the same way and served in the update's
place when the gate promotes it. Measured at three seeds of the production stream (docs/benchmarks.md,
"Consolidation on the gate's evidence"): two or three consolidations per stream of 22 versions, every version then
within a point of its retrain (a chain that never consolidates: 10 of 66 beyond a point, about 0.6 below on
average), at about a third of that chain's train FLOPs ratio. On by default: the product's promise is a model as
good as a retrain, and the saving is what the promise leaves; `on_drift=False` keeps the cheaper chain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.data import Manifest
from pipeline.gate import PROMOTE

CONSOLIDATE_AFTER = None  # the default `consolidate_after`: never consolidate on a schedule
CONSOLIDATE_ON_DRIFT = True  # the default `on_drift`: a promoted update below the reference is retrained
FALLBACK = "retrain"  # what a rejected update falls back to

# (method, attempt) -> (candidate directory, its metrics); attempt is "update", "fallback" (the gate rejected the
# update) or "consolidation" (the gate promoted it, resolved below the reference: `behind_reference`)
Train = Callable[[str, str], tuple[Path, dict]]
# (candidate, its metrics, the reference or None) -> the gate's result, or None when there is no champion to judge
# against (the first version, promoted as it is)
Judge = Callable[[Path, dict, "Path | None"], "dict | None"]


@dataclass(frozen=True)
class Chain:
    """The served chain: its champion (None before the first version), the chain's reference (the last champion a
    retrain made, None when that is the champion itself) and the data that retrain was trained on."""

    champion: Path | None = None
    reference: Path | None = None
    retrained_on: Manifest | None = None

    def consolidation(self, manifest: Manifest, after: float | None) -> str | None:
        """Why this version's candidate is the standard retrain rather than an update, or None."""
        if self.champion is None or self.retrained_on is None:
            return None
        return consolidation_due(self.retrained_on, manifest, after)


@dataclass
class Attempt:
    kind: str  # "update", "fallback" or "consolidation"
    candidate: Path
    metrics: dict
    gate: dict | None  # None: no champion to judge against

    @property
    def promoted(self) -> bool:
        return self.gate is None or self.gate["decision"] == PROMOTE


@dataclass
class Outcome:
    """One version of the chain: the candidates in the order they were trained and judged, the one served and the
    chain after it."""

    attempts: list[Attempt]
    chain: Chain
    consolidation: str | None = None  # why the version ran the retrain: consolidation was due, or drift

    @property
    def promoted(self) -> Attempt | None:
        return _served(self.attempts)


def consolidation_due(retrained_on: Manifest, now: Manifest, after: float | None) -> str | None:
    """Why the next session should be the retrain, or None: the training images grew by at least `after` (a
    share: 1/3 is a third more) since `retrained_on`, the data version the chain's last retrain was trained on."""
    before, current = len(retrained_on.files["train"]), len(now.files["train"])
    if after is None or current < before * (1 + after):
        return None
    return (f"consolidation: {current} training images, {current / before - 1:.0%} more than the {before} the last "
            f"retrain saw (consolidate_after {after:.0%})")


def resolved_drop(evidence: dict) -> bool:
    """Whether the gate's paired test resolves a drop (`old_acc_drop`, points, and its one-sided upper bound at the
    gate's confidence): the lower bound, read off the upper one as the same distance below the drop, is above zero.
    Tango's bound is a little wider above the drop than below, so this errs towards "not resolved"."""
    return 2 * evidence["old_acc_drop"] - evidence["old_acc_drop_bound"] > 0


def behind_reference(gate: dict | None) -> str | None:
    """Why a promoted candidate has fallen behind the chain's last retrain-made model, or None: the gate's paired test
    resolves it below that model (the reference, or the champion when that is the last retrain) on that model's
    classes."""
    if gate is None:
        return None
    evidence = gate["evidence"].get("reference") or gate["evidence"]
    if not resolved_drop(evidence):
        return None
    return (f"drift: {evidence['old_acc_drop']:.2f} points below the last retrain-made model, resolved by the gate's "
            f"paired test (upper bound {evidence['old_acc_drop_bound']:.2f})")


def run_version(chain: Chain, manifest: Manifest, train: Train, judge: Judge, method: str = "auto",
                fallback: bool = True, consolidate_after: float | None = CONSOLIDATE_AFTER,
                on_drift: bool = CONSOLIDATE_ON_DRIFT) -> Outcome:
    """The policy for one data version (`manifest`): train, judge, fall back or consolidate, and the chain that
    results."""
    due = chain.consolidation(manifest, consolidate_after)
    candidate, metrics = train("retrain" if due else method, "update")
    first = Attempt("update", candidate, metrics, judge(candidate, metrics, chain.reference))
    retrain = metrics["method"] == "retrain"  # a retrain neither falls back nor consolidates
    drift = behind_reference(first.gate) if on_drift and first.promoted and not retrain else None
    second = "consolidation" if drift else "fallback" if fallback and not first.promoted and not retrain else None
    attempts = [first]
    if second:
        candidate, metrics = train(FALLBACK if second == "fallback" else "retrain", second)
        attempts.append(Attempt(second, candidate, metrics, judge(candidate, metrics, chain.reference)))
    served = _served(attempts)
    return Outcome(attempts, _after(chain, served, manifest), due or drift)


def _served(attempts: list[Attempt]) -> Attempt | None:
    """The last candidate the gate promoted: a consolidation it rejects leaves the promoted update served."""
    return next((a for a in reversed(attempts) if a.promoted), None)


def _after(chain: Chain, served: Attempt | None, manifest: Manifest) -> Chain:
    """The champion moves on a promotion; a promoted retrain is the new reference, an update keeps the old one."""
    if served is None:
        return chain
    if served.metrics["method"] == "retrain":
        return Chain(served.candidate, None, manifest)
    return Chain(served.candidate, chain.reference or chain.champion, chain.retrained_on)
