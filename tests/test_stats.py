"""The statistics behind the leaderboard, checked against scipy and published tables on hand-made data."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from mtbench import stats


def test_paired_test_matches_scipy_with_ties_and_zero_differences():
    # accuracies of 10 episodes (multiples of 1/5): several equal pairs (zero differences) and tied |d|
    x = np.array([0.8, 1.0, 0.6, 0.8, 1.0, 0.4, 0.8, 0.6, 1.0, 0.8])
    y = np.array([0.6, 1.0, 0.4, 0.8, 0.8, 0.4, 0.6, 0.4, 0.8, 1.0])
    result = stats.paired_test(x, y)
    d = x - y
    assert result.n == 10
    assert result.diff_mean == pytest.approx(d.mean())  # 0.12
    assert result.diff_ci95 == pytest.approx(sps.t.ppf(0.975, 9) * d.std(ddof=1) / math.sqrt(10))
    assert result.p_ttest == pytest.approx(sps.ttest_rel(x, y).pvalue)
    # in floating point 0.8 - 0.6 != 1.0 - 0.8, so scipy on raw differences breaks the ties (W = 3);
    # rounded, the nonzero differences are +0.2 six times and -0.2 once, all |d| tied at rank 4: W = 4
    assert sps.wilcoxon(x, y).statistic == 3.0
    rounded = np.round(d, stats.DIFF_DECIMALS)
    assert sps.wilcoxon(rounded).statistic == 4.0
    assert result.p_wilcoxon == pytest.approx(sps.wilcoxon(rounded).pvalue)  # zero differences dropped
    assert result.p_wilcoxon != pytest.approx(sps.wilcoxon(x, y).pvalue)


def test_a_known_significant_pair_and_a_null_pair():
    rng = np.random.default_rng(0)
    base = rng.normal(0.0, 1.0, 300)
    better = base + 0.1 + rng.normal(0, 0.05, 300)
    assert stats.paired_test(better, base).p_wilcoxon < 1e-20
    assert stats.paired_test(better, base).diff_mean == pytest.approx(0.1, abs=0.01)
    null = base + rng.normal(0, 0.05, 300)
    assert stats.paired_test(null, base).p_wilcoxon > 0.05


def test_identical_samples_are_never_significant():
    x = [0.5, 0.7, 0.9]
    result = stats.paired_test(x, x)
    assert (result.diff_mean, result.diff_ci95, result.p_wilcoxon, result.p_ttest) == (0.0, 0.0, 1.0, 1.0)


def test_welch_test_matches_scipy():
    x, y = [0.9, 0.8, 1.0, 0.85, 0.95], [0.5, 0.7, 0.6, 0.65]
    result = stats.welch_test(x, y)
    expected = sps.ttest_ind(x, y, equal_var=False)
    low, high = expected.confidence_interval(0.95)
    assert result.p_ttest == pytest.approx(expected.pvalue) and math.isnan(result.p_wilcoxon)
    assert result.diff_mean == pytest.approx(np.mean(x) - np.mean(y))
    assert result.diff_ci95 == pytest.approx((high - low) / 2)


def test_holm_by_hand():
    p = [0.01, 0.04, 0.03, 0.005, float("nan")]
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone 0.06
    expected = [0.03, 0.06, 0.06, 0.02, float("nan")]
    np.testing.assert_allclose(stats.holm(p), expected)
    assert stats.holm([0.6, 0.9]).tolist() == [1.0, 1.0]  # capped at 1


def test_tied_ranks_meta_dataset_style():
    # a best; b tied with a; c worse than a; d worse than a and than c; e tied with c
    worse_than = {"a": {"c", "d", "e"}, "c": {"d"}}
    ranks = stats.tied_ranks(["a", "b", "c", "e", "d"], lambda leader, others: worse_than.get(leader, set()) & set(others))
    assert ranks == {"a": 1, "b": 1, "c": 3, "e": 3, "d": 5}
    # ranks follow the order: "z" is not significantly worse than "x" (noisy), but "y" above it is
    ranks = stats.tied_ranks(["x", "y", "z"], lambda leader, others: {"y"} if leader == "x" else set())
    assert ranks == {"x": 1, "y": 2, "z": 2}


def test_nemenyi_critical_difference_matches_demsar_table():
    # Demšar 2006, Table 5(a): q_0.05 = 2.343 (k=3), 2.728 (k=5), 3.164 (k=10)
    for k, q in ((3, 2.343), (5, 2.728), (10, 3.164)):
        n = 14
        assert stats.nemenyi_cd(k, n) == pytest.approx(q * math.sqrt(k * (k + 1) / (6 * n)), rel=2e-3)


def test_friedman_matches_scipy_and_ranks_by_direction():
    scores = pd.DataFrame({"a": [0.9, 0.8, 0.95, 0.7], "b": [0.85, 0.82, 0.9, 0.6], "c": [0.5, 0.6, 0.7, 0.65]})
    result = stats.friedman(scores, higher_is_better=True)
    expected = sps.friedmanchisquare(scores["a"], scores["b"], scores["c"])
    assert result["statistic"] == pytest.approx(expected.statistic) and result["p"] == pytest.approx(expected.pvalue)
    assert result["average_ranks"] == {"a": 1.25, "b": 2.0, "c": 2.75} and result["n_cells"] == 4
    low = stats.friedman(scores, higher_is_better=False)
    assert low["average_ranks"] == {"a": 2.75, "b": 2.0, "c": 1.25}


def test_friedman_keeps_complete_experiments_or_returns_none():
    scores = pd.DataFrame({"a": [1, 2, 3.0], "b": [2, 3, 4.0], "c": [0, 1, 5.0], "d": [np.nan, 1, 1.0]})
    assert set(stats.friedman(scores)["average_ranks"]) == {"a", "b", "c"}
    assert stats.friedman(scores[["a", "b"]]) is None


def test_intervals():
    values = [0.6, 0.8, 1.0, 0.8]
    assert stats.episode_ci95(values) == pytest.approx(1.96 * np.std(values, ddof=1) / 2)
    assert stats.t_ci95(values) == pytest.approx(sps.t.ppf(0.975, 3) * np.std(values, ddof=1) / 2)
    assert math.isnan(stats.t_ci95([1.0]))
