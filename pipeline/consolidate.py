"""When the flow consolidates a chain of updates with a retrain (`consolidate_after`; off by default).

With it set, the flow trains the standard retrain instead of an update once the training images have grown by that
share since the data the chain's last retrain saw; the updates then continue from that retrain. Measured on the
production stream (docs/benchmarks.md, "Drift and consolidation"; 22 versions, 81% more data, 3 seeds): a chain of
updates does not drift away from the retrain of its version, it stays a roughly constant distance below it, about
the same after a consolidation as before; what consolidating adds to the mean comes mostly from the versions a
retrain serves, each at a retrain's cost. So it is off by default, a trade of compute for accuracy a team may choose.
"""

from __future__ import annotations

from pipeline.data import Manifest

CONSOLIDATE_AFTER = None  # the update-model flow's default (`consolidate_after`): never consolidate


def consolidation_due(retrained_on: Manifest, now: Manifest, after: float | None) -> str | None:
    """Why the next session should be the retrain, or None: the training images grew by at least `after` (a
    share: 1/3 is a third more) since `retrained_on`, the data version the chain's last retrain was trained on."""
    before, current = len(retrained_on.files["train"]), len(now.files["train"])
    if after is None or current < before * (1 + after):
        return None
    return (f"consolidation: {current} training images, {current / before - 1:.0%} more than the {before} the last "
            f"retrain saw (consolidate_after {after:.0%})")
