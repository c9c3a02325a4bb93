"""How sure the comparison is: a paired bootstrap over held-out conversations.

Every model scored the same conversations, so one resample of conversations is applied to every model at once
(`scipy.stats.bootstrap`, `paired=True`, on the conversations' indices, with one vector-valued statistic): the
interval of a difference then carries only the noise that does not cancel between the two models. Each statistic is a
ratio of sums, summed loss over label tokens of the resampled conversations, as the chat loss itself is. Percentile
intervals: BCa's jackknife is undefined where two models score identically (a difference that is 0 in every
resample), which is exactly the case that must read "no difference".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

RESAMPLES = 4000
SEED = 20261208  # fixed: the same records give the same intervals, run after run
CONFIDENCE = 0.95
POWER_Z = 1.959964 + 0.841621  # a two-sided 95 % interval that excludes 0 four times in five (80 % power)


@dataclass(frozen=True)
class Interval:
    """A point estimate, its 95 % interval and the bootstrap's standard error."""

    estimate: float
    low: float
    high: float
    se: float

    @property
    def resolved(self) -> bool:
        """Whether the interval excludes 0."""
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class Paired:
    """Each model's chat loss and each pair's difference (first minus second, in `names`' order)."""

    names: list[str]
    conversations: int
    loss: dict[str, Interval]
    difference: dict[tuple[str, str], Interval]

    def between(self, a: str, b: str) -> Interval:
        """a's loss minus b's."""
        if (a, b) in self.difference:
            return self.difference[a, b]
        d = self.difference[b, a]
        return Interval(-d.estimate, -d.high, -d.low, d.se)

    def ranks(self) -> dict[str, int]:
        """1 + the number of models resolvably better (lower loss): models no pair of intervals separates share a
        rank."""
        return {a: 1 + sum(1 for b in self.names if b != a and self.between(b, a).high < 0) for a in self.names}

    def verdict(self, a: str, b: str) -> str:
        """One sentence on a against b: who is better by how much, or that the held-out set cannot tell."""
        d = self.between(a, b)
        if not d.resolved:
            return f"{a} vs {b}: no difference the held-out set can resolve ({_span(d)})."
        better, worse, gap = (a, b, d) if d.estimate < 0 else (b, a, self.between(b, a))
        return (
            f"{better} is better than {worse} by {-gap.estimate:.3f} (95 % interval {-gap.high:.3f} to "
            f"{-gap.low:.3f}) over {self.conversations:,} conversations."
        )

    def widest_se(self) -> float:
        """The largest standard error of a difference: the pair hardest to resolve."""
        return max((d.se for d in self.difference.values()), default=0.0)


def _span(d: Interval) -> str:
    low, mid, high = (round(x, 3) + 0.0 for x in (d.low, d.estimate, d.high))  # + 0.0: no "-0.000"
    return f"difference {mid:+.3f}, 95 % interval {low:+.3f} to {high:+.3f}"


def paired(
    scores: dict[str, tuple[Sequence[float], Sequence[int]]], resamples: int = RESAMPLES, seed: int = SEED
) -> Paired:
    """The paired bootstrap of `scores` (name -> per-conversation summed loss and label tokens, every model the same
    conversations in the same order)."""
    from scipy.stats import bootstrap

    names = list(scores)
    loss = np.stack([np.asarray(scores[n][0], dtype=np.float64) for n in names])
    tokens = np.stack([np.asarray(scores[n][1], dtype=np.float64) for n in names])
    n = loss.shape[1]
    pairs = list(combinations(range(len(names)), 2))
    first = np.array([i for i, _ in pairs], dtype=int)
    second = np.array([j for _, j in pairs], dtype=int)

    def statistic(index: np.ndarray, axis: int = -1) -> np.ndarray:
        picked = index.astype(int)
        means = loss[:, picked].sum(axis=-1) / tokens[:, picked].sum(axis=-1)  # models x resamples
        return np.concatenate([means, means[first] - means[second]])

    whole = statistic(np.arange(n))
    if n < 2:
        low = high = whole
        se = np.zeros_like(whole)
    else:
        result = bootstrap(
            (np.arange(n),),
            statistic,
            n_resamples=resamples,
            paired=True,
            vectorized=True,
            confidence_level=CONFIDENCE,
            method="percentile",
            rng=np.random.default_rng(seed),
            batch=max(1, 20_000_000 // (len(names) * n)),  # resamples at once: ~160 MB of gathered sums
        )
        low, high = result.confidence_interval.low, result.confidence_interval.high
        se = result.standard_error
    intervals = [Interval(float(w), float(lo), float(hi), float(s)) for w, lo, hi, s in zip(whole, low, high, se)]
    return Paired(
        names,
        n,
        dict(zip(names, intervals[: len(names)])),
        {(names[i], names[j]): iv for (i, j), iv in zip(pairs, intervals[len(names) :])},
    )


def conversations_needed(difference: float, se: float, conversations: int) -> int:
    """Held-out conversations at which a true `difference` in chat loss is resolved four times in five, from a
    difference's standard error `se` measured on `conversations` (the error shrinks as 1/sqrt(n))."""
    return max(1, math.ceil(conversations * (POWER_Z * se / difference) ** 2))
