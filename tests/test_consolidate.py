"""When the flow consolidates a chain of updates with a retrain: the training images grew by a set share since the
data of the chain's last retrain."""

from pipeline.consolidate import CONSOLIDATE_AFTER, consolidation_due
from pipeline.data import Manifest

THIRD = 1 / 3


def version(n_train: int) -> Manifest:
    train = {f"train/c{i % 3}/{i}.png": (f"c{i % 3}", f"{i:064x}") for i in range(n_train)}
    return Manifest({"train": train, "test": {"test/c0/0.png": ("c0", "f" * 64)}})


def test_a_chain_consolidates_once_the_data_grew_by_the_share_since_its_last_retrain():
    retrained_on = version(300)
    assert consolidation_due(retrained_on, version(399), THIRD) is None  # +33.0%: not yet a third
    due = consolidation_due(retrained_on, version(400), THIRD)
    assert due == "consolidation: 400 training images, 33% more than the 300 the last retrain saw " \
                  "(consolidate_after 33%)"
    assert consolidation_due(retrained_on, version(3000), CONSOLIDATE_AFTER) is None  # the default: never
    assert consolidation_due(retrained_on, version(303), 0.01) is not None
