"""When the flow consolidates a chain of updates with a retrain.

An update keeps the accuracy its chain started from: it costs what arrived, and it does not take up what the added
data gives a retrain of everything (on the production stream, docs/benchmarks.md: a retrain of every version
gains about a point over 80% more data while the chain of updates stays near the retrain it started from). So the
flow trains the standard retrain instead of an update once the training images have grown by a set share since
the data the chain's last retrain saw; the updates then continue from that retrain.
"""

from __future__ import annotations

from pipeline.data import Manifest

CONSOLIDATE_AFTER = 1 / 3  # the update-model flow's default (`consolidate_after`); None: never consolidate


def consolidation_due(retrained_on: Manifest, now: Manifest, after: float | None) -> str | None:
    """Why the next session should be the retrain, or None: the training images grew by at least `after` (a
    share: 1/3 is a third more) since `retrained_on`, the data version the chain's last retrain was trained on."""
    before, current = len(retrained_on.files["train"]), len(now.files["train"])
    if after is None or current < before * (1 + after):
        return None
    return (f"consolidation: {current} training images, {current / before - 1:.0%} more than the {before} the last "
            f"retrain saw (consolidate_after {after:.0%})")
