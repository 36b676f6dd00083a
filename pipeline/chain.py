"""The chain's policy: what one data version does to the served model. The flow and the benchmarks run this one rule.

Per version: the candidate is the update (`method`, `auto` by default), or the standard retrain once consolidation
is due; it is judged against the champion and the chain's reference; a rejected update falls back to a standard
retrain, judged the same way; the champion moves only on a promotion, and a promoted retrain becomes the chain's new
reference. Training and judging are passed in, so this module knows no Prefect, registry or benchmark.

Consolidation (`consolidate_after`, off by default): the candidate is the standard retrain once the training images
grew by that share since the data the chain's last retrain saw. Measured on the production stream (docs/benchmarks.md,
"Drift and consolidation"; 22 versions, 81% more data, 3 seeds): a chain of updates does not drift away from the
retrain of its version, it stays a roughly constant distance below it, about the same after a consolidation as
before; what consolidating adds to the mean comes mostly from the versions a retrain serves, each at a retrain's
cost. So it is off by default, a trade of compute for accuracy a team may choose.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.data import Manifest
from pipeline.gate import PROMOTE

CONSOLIDATE_AFTER = None  # the default `consolidate_after`: never consolidate
FALLBACK = "retrain"  # what a rejected update falls back to

# (method, attempt) -> (candidate directory, its metrics); attempt is "update" or "fallback"
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
    kind: str  # "update" or "fallback"
    candidate: Path
    metrics: dict
    gate: dict | None  # None: no champion to judge against

    @property
    def promoted(self) -> bool:
        return self.gate is None or self.gate["decision"] == PROMOTE


@dataclass
class Outcome:
    """One version of the chain: the candidates in the order they were trained and judged, and the chain after it."""

    attempts: list[Attempt]
    chain: Chain
    consolidation: str | None = None  # why the first candidate was the retrain, when consolidation was due
    promoted: Attempt | None = field(init=False)

    def __post_init__(self) -> None:
        self.promoted = self.attempts[-1] if self.attempts[-1].promoted else None


def consolidation_due(retrained_on: Manifest, now: Manifest, after: float | None) -> str | None:
    """Why the next session should be the retrain, or None: the training images grew by at least `after` (a
    share: 1/3 is a third more) since `retrained_on`, the data version the chain's last retrain was trained on."""
    before, current = len(retrained_on.files["train"]), len(now.files["train"])
    if after is None or current < before * (1 + after):
        return None
    return (f"consolidation: {current} training images, {current / before - 1:.0%} more than the {before} the last "
            f"retrain saw (consolidate_after {after:.0%})")


def run_version(chain: Chain, manifest: Manifest, train: Train, judge: Judge, method: str = "auto",
                fallback: bool = True, consolidate_after: float | None = CONSOLIDATE_AFTER) -> Outcome:
    """The policy for one data version (`manifest`): train, judge, fall back, and the chain that results."""
    due = chain.consolidation(manifest, consolidate_after)
    method = "retrain" if due else method
    attempts: list[Attempt] = []
    for kind in ("update", "fallback"):
        candidate, metrics = train(method, kind)
        attempts.append(Attempt(kind, candidate, metrics, judge(candidate, metrics, chain.reference)))
        if attempts[-1].promoted or not fallback or metrics["method"] == "retrain":  # a retrain does not fall back
            break
        method = FALLBACK
    return Outcome(attempts, _after(chain, attempts[-1], manifest), due)


def _after(chain: Chain, last: Attempt, manifest: Manifest) -> Chain:
    """The champion moves on a promotion; a promoted retrain is the new reference, an update keeps the old one."""
    if not last.promoted:
        return chain
    if last.metrics["method"] == "retrain":
        return Chain(last.candidate, None, manifest)
    return Chain(last.candidate, chain.reference or chain.champion, chain.retrained_on)
