"""Non-inferiority on paired per-image outcomes: how much worse can the candidate be than the champion?

Each test image is a pair of outcomes (champion right or wrong, candidate right or wrong). Only the discordant
images carry information: `losses` (the champion right, the candidate wrong) and `gains` (the reverse), out of
`n` images. The drop in accuracy is (losses - gains) / n. Its one-sided upper confidence bound is Tango's score
bound (Tango 1998, Statistics in Medicine 17:891; recommended for paired proportions by Fagerland, Lydersen and
Laake 2013): the largest drop that the score test, with the nuisance rate at its constrained maximum-likelihood
value, cannot reject. Unlike the normal approximation on the paired differences it stays valid when two good
models disagree on only a handful of images (tests/test_paired.py checks the error rate by simulation).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import torch


def _score(losses: torch.Tensor, gains: torch.Tensor, n: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """Tango's score statistic for H0: true drop = `drop` (a share in (-1, 1)); it falls as `drop` grows."""
    # the constrained maximum-likelihood gain rate solves qa*x^2 + qb*x + qc = 0
    qa, qb, qc = 2 * n, (2 * n - losses + gains) * drop - losses - gains, -gains * drop * (1 - drop)
    gain_rate = (torch.sqrt((qb * qb - 4 * qa * qc).clamp(min=0)) - qb) / (2 * qa)
    variance = n * (2 * gain_rate + drop * (1 - drop))
    return (losses - gains - n * drop) / torch.sqrt(variance.clamp(min=1e-300))


def drop_bound(losses, gains, n, confidence: float) -> torch.Tensor:
    """One-sided `confidence` upper bound (points) on the accuracy drop; works elementwise on tensors of counts."""
    losses, gains, n = (torch.as_tensor(x, dtype=torch.float64) for x in (losses, gains, n))
    z = NormalDist().inv_cdf(confidence)
    low = (losses - gains) / n  # the point estimate: the score is 0 there
    high = torch.ones_like(low)
    for _ in range(60):  # bisection to ~1e-18: the score is monotone in the hypothesised drop
        middle = (low + high) / 2
        above = _score(losses, gains, n, middle) > -z  # not rejected yet: the bound lies higher
        low, high = torch.where(above, middle, low), torch.where(above, high, middle)
    return 100 * high


def paired_bound(candidate_correct: torch.Tensor, champion_correct: torch.Tensor, confidence: float) -> float:
    """The bound (points) from per-image outcomes of the same images."""
    losses = int((champion_correct & ~candidate_correct).sum())
    gains = int((candidate_correct & ~champion_correct).sum())
    return round(float(drop_bound(losses, gains, champion_correct.numel(), confidence)), 4)


def half_width(n: int, discordance: float, confidence: float) -> float:
    """Points between an equal-quality candidate's drop estimate (0) and its bound, when the two models disagree on
    a share `discordance` of the `n` images (normal approximation, for planning): the smallest drop the split
    resolves."""
    return 100 * NormalDist().inv_cdf(confidence) * math.sqrt(discordance / n)


def images_needed(discordance: float, margin: float, confidence: float, pass_rate: float) -> int:
    """Old-class test images at which an equal-quality candidate passes a `margin`-point bound with probability
    `pass_rate` (normal approximation)."""
    z = NormalDist().inv_cdf(confidence) + NormalDist().inv_cdf(pass_rate)
    return math.ceil(discordance * (100 * z / margin) ** 2)
