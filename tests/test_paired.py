"""The non-inferiority bound on paired outcomes: its error rate, checked by simulation, and its planning numbers."""

import math

import pytest
import torch

from pipeline.config import GateParams
from pipeline.evaluate.paired import drop_bound, half_width, images_needed, paired_bound
from pipeline.gate import decide

# (images, P(loss), P(gain)): from a handful of discordant images to thousands, ties and true regressions
CASES = [(400, 0.005, 0.005), (400, 0.03, 0.01), (400, 0.002, 0.0), (2000, 0.01, 0.01), (2000, 0.002, 0.0),
         (2000, 0.05, 0.03), (10000, 0.02, 0.02), (10000, 0.004, 0.001)]


def _simulate(n: int, p_loss: float, p_gain: float, reps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    counts = torch.distributions.Multinomial(n, torch.tensor([p_loss, p_gain, 1 - p_loss - p_gain]))
    torch.manual_seed(seed)
    sample = counts.sample((reps,))
    return sample[:, 0], sample[:, 1]


@pytest.mark.parametrize(("n", "p_loss", "p_gain"), CASES)
def test_the_bound_covers_the_true_drop_at_its_confidence(n, p_loss, p_gain):
    losses, gains = _simulate(n, p_loss, p_gain, reps=4000, seed=n)
    bound = drop_bound(losses, gains, torch.full_like(losses, n), 0.95)
    missed = (bound < 100 * (p_loss - p_gain)).double().mean().item()  # the bound below the truth: a wrong pass
    assert missed <= 0.065, f"the 95% bound missed the true drop in {missed:.1%} of draws"


def test_the_normal_approximation_it_replaces_fails_where_discordant_images_are_few():
    """The check above can fail: the old bound (mean + z * sd / sqrt(n) of the paired differences) misses a real
    0.2-point drop in about 40% of draws on 400 images; the score bound does not."""
    n, p_loss = 400, 0.002
    losses, gains = _simulate(n, p_loss, 0.0, reps=4000, seed=1)
    mean = (losses - gains) / n
    sd = (((losses + gains) / n - mean**2) * n / (n - 1)).clamp(min=0).sqrt()
    normal = 100 * (mean + 1.6449 * sd / math.sqrt(n))
    assert (normal < 100 * p_loss).double().mean() > 0.3
    assert (drop_bound(losses, gains, torch.full_like(losses, n), 0.95) < 100 * p_loss).double().mean() < 0.05


def test_no_disagreement_still_leaves_the_bound_above_zero():
    z = 1.6448536
    assert paired_bound(torch.ones(1000, dtype=torch.bool), torch.ones(1000, dtype=torch.bool), 0.95) == \
        pytest.approx(100 * z**2 / (1000 + z**2), abs=1e-3)  # the score bound when nothing differs


def test_the_bound_narrows_with_more_images():
    assert float(drop_bound(20, 0, 1000, 0.95)) > 2.5  # a 2-point drop on 1,000 images
    assert float(drop_bound(200, 0, 10000, 0.95)) < 2.4  # the same drop on 10,000
    assert float(drop_bound(2, 0, 100, 0.95)) > 5


def test_planning_numbers_agree_with_each_other():
    width = half_width(4000, 0.05, 0.95)
    assert width == pytest.approx(164.485 * math.sqrt(0.05 / 4000), rel=1e-4)
    assert images_needed(0.05, width, 0.95, 0.5) == pytest.approx(4000, abs=1)  # half-width = margin: 50% pass
    assert images_needed(0.05, width, 0.95, 0.95) == pytest.approx(16000, abs=2)  # twice the z: four times the n


def _outcomes(n: int, losses: int, gains: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Predictions of two 10-class models on n images: both right everywhere but on `losses` images only the
    champion is right, on `gains` only the candidate."""
    targets = torch.arange(n) % 10
    champion, candidate = targets.clone(), targets.clone()
    candidate[:losses] = (targets[:losses] + 1) % 10
    champion[losses:losses + gains] = (targets[losses:losses + gains] + 1) % 10
    return champion, candidate, targets


def test_a_tie_lost_by_two_images_is_promoted_and_a_clear_regression_is_not():
    """The old rule on the point estimate rejected the first (0.1 points down on 2,000 images)."""
    rules, names = GateParams(old_acc_margin=1.0, min_class_acc=0), [f"c{i}" for i in range(10)]
    champion, candidate, targets = _outcomes(2000, losses=12, gains=10)
    checks, evidence = decide(champion, candidate, candidate, targets, names, 10, rules)
    assert evidence["old_acc_drop"] == pytest.approx(0.1) and all(c["passed"] for c in checks), checks
    champion, candidate, targets = _outcomes(2000, losses=50, gains=10)  # 2 points down
    checks, evidence = decide(champion, candidate, candidate, targets, names, 10, rules)
    assert [c["check"] for c in checks if not c["passed"]] == \
        ["old-class accuracy drop among old classes (upper bound)"], checks
