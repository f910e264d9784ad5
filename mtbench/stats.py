"""Statistics of a leaderboard: confidence intervals, paired tests on shared episodes, Holm, ranks, Friedman.

Every algorithm of a protocol is scored on the same seeded episodes, so two rows of a cell are
compared *pairwise*, episode by episode: the per-episode difference removes the episode's difficulty,
which dominates the spread of either row alone (two rows whose intervals overlap can still differ
significantly, and two rows ranked apart can be a tie). The tests are scipy's (``scipy.stats``):
Wilcoxon signed-rank (the primary test: accuracies are bounded and lumpy, MSEs heavy-tailed, so no
normality is assumed) and the paired t-test beside it. p-values of a table are Holm-corrected
(Holm 1979), ranks across cells use Friedman's test with Nemenyi's critical difference (Demšar 2006).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05
DIFF_DECIMALS = 6  # stored scores carry float32 precision (~7 significant digits); finer digits are noise


def episode_ci95(values: Sequence[float]) -> float:
    """The few-shot literature's interval over episodes: ``1.96 * std(ddof=1) / sqrt(n)``."""
    arr = np.asarray(values, dtype=float)
    if len(arr) < 2:
        return float("nan")
    return float(1.96 * arr.std(ddof=1) / math.sqrt(len(arr)))


def t_ci95(values: Sequence[float]) -> float:
    """Half-width of the Student-t 95% interval of the mean (for few values: seeds, or differences)."""
    arr = np.asarray(values, dtype=float)
    if len(arr) < 2:
        return float("nan")
    return float(stats.t.ppf(0.975, len(arr) - 1) * arr.std(ddof=1) / math.sqrt(len(arr)))


@dataclass(frozen=True)
class PairedTest:
    """``x - y`` over shared episodes: mean difference, its t-based 95% CI, and two p-values."""

    n: int
    diff_mean: float
    diff_ci95: float
    p_wilcoxon: float
    p_ttest: float


def paired_test(x: Sequence[float], y: Sequence[float]) -> PairedTest:
    """Wilcoxon signed-rank (zero differences dropped, scipy's default) and paired t on ``x - y``.

    For the signed ranks, differences are rounded to ``DIFF_DECIMALS`` first: scores are stored from float32 (0.96 is
    0.9599999785), so two accuracy differences of one query (1/75) would otherwise differ in the 8th
    digit and not tie, and equal scores would not cancel. Identical samples give p = 1 (scipy would
    return nan: nothing differs, so nothing is significant).
    """
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have one length, got {len(a)} and {len(b)}")
    d = a - b
    rounded = np.round(d, DIFF_DECIMALS)
    n = len(d)
    if n < 2:
        return PairedTest(n, float(d.mean()) if n else float("nan"), float("nan"), float("nan"), float("nan"))
    if not np.any(rounded != 0):
        return PairedTest(n, 0.0, 0.0, 1.0, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p_w = float(stats.wilcoxon(rounded).pvalue)
        p_t = float(stats.ttest_rel(a, b).pvalue) if np.ptp(rounded) > 0 else 0.0  # a constant non-zero shift
    return PairedTest(n, float(d.mean()), t_ci95(d), p_w, p_t)


def welch_test(x: Sequence[float], y: Sequence[float]) -> PairedTest:
    """``mean(x) - mean(y)`` without pairing (Welch's t-test, its 95% CI); for samples of other episodes."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    diff = float(a.mean() - b.mean()) if len(a) and len(b) else float("nan")
    if len(a) < 2 or len(b) < 2:
        return PairedTest(min(len(a), len(b)), diff, float("nan"), float("nan"), float("nan"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_ind(a, b, equal_var=False)
        low, high = result.confidence_interval(0.95)
    return PairedTest(min(len(a), len(b)), diff, float((high - low) / 2), float("nan"), float(result.pvalue))


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (nan entries stay nan and do not count as tests)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    running = 0.0
    for i, idx in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - i) * p[idx]))
        out[idx] = running
    return out


def tied_ranks(order: Sequence[Hashable], worse: Callable[[Hashable, list], set]) -> dict[Hashable, int]:
    """Ranks with ties as in Meta-Dataset: the leader and every row not significantly worse share a rank.

    ``order`` lists the rows best first; ``worse(leader, others)`` returns those of ``others`` that are
    significantly worse than ``leader`` (one call per round, so a round's tests can be corrected
    together). The leader of the rows still unranked takes the next rank (competition ranking: 1, 1, 3)
    together with the rows after it, in order, up to the first one significantly worse: a row never
    ranks above a row with a better mean (significance is not transitive: a noisy row far down can be
    "not significantly worse" than a leader that rows between them are worse than).
    """
    ranks: dict[Hashable, int] = {}
    remaining = list(order)
    while remaining:
        leader, others = remaining[0], remaining[1:]
        beaten = worse(leader, others) if others else set()
        group = [leader]
        for r in others:
            if r in beaten:
                break
            group.append(r)
        rank = len(ranks) + 1
        for r in group:
            ranks[r] = rank
        remaining = [r for r in remaining if r not in ranks]
    return ranks


def nemenyi_cd(k: int, n_blocks: int, alpha: float = ALPHA) -> float:
    """Nemenyi's critical difference of average ranks: ``q_alpha * sqrt(k (k + 1) / (6 N))`` (Demšar 2006)."""
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return float(q * math.sqrt(k * (k + 1) / (6.0 * n_blocks)))


def friedman(scores: pd.DataFrame, higher_is_better: bool = True) -> dict | None:
    """Friedman test over blocks (rows: cells) and treatments (columns: experiments).

    The test needs a complete design: it keeps the experiments present in every cell (or, if fewer
    than 3 are, the cells where every experiment is present). Returns statistic, p, the Nemenyi
    critical difference, the average ranks (1 = best) and the number of cells, or None when fewer than
    3 experiments or 2 cells remain.
    """
    complete = scores.dropna(axis=1, how="any")
    if complete.shape[1] < 3:
        complete = scores.dropna(axis=0, how="any")
    if complete.shape[1] < 3 or complete.shape[0] < 2:
        return None
    signed = -complete.to_numpy(dtype=float) if higher_is_better else complete.to_numpy(dtype=float)
    ranks = np.apply_along_axis(stats.rankdata, 1, signed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.friedmanchisquare(*complete.to_numpy(dtype=float).T)
    k, n = complete.shape[1], complete.shape[0]
    return {"statistic": float(result.statistic), "p": float(result.pvalue), "cd": nemenyi_cd(k, n),
            "average_ranks": {str(c): float(r) for c, r in zip(complete.columns, ranks.mean(axis=0))},
            "n_cells": int(n), "alpha": ALPHA}
