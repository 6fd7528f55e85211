"""How far each metric's distribution moved between the training data and recent telemetry, per profile.

scipy's statistics, not hand-written ones. `shift` is the Wasserstein distance (how far the values moved, in
the metric's unit) divided by the training values' standard deviation, so scores compare across metrics: 1 means
moved by a whole training spread. `ks` is the two-sample Kolmogorov-Smirnov statistic (0 the same, 1 disjoint):
it needs no scale, so it also scores a metric that was constant in training (swap at 0 %), whose `shift` is
undefined (NaN). Profiles are compared separately because their normal levels differ (a database's I/O wait
is a compute node's incident). Each side is sampled down to a few thousand values: both statistics are stable
there, and a 900-server check stays fast.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp, wasserstein_distance

from tftmon.contract import METRIC, METRICS, PROFILE

SHIFT = "shift"
KS = "ks"
#: One row per metric and profile present on both sides.
SHIFT_COLUMNS: tuple[str, ...] = (
    METRIC, PROFILE, SHIFT, KS, "ks_pvalue", "reference_mean", "recent_mean", "n_reference", "n_recent",
)  # fmt: skip


def _sample(values: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """At most `size` of the finite values, drawn without replacement."""
    values = values[np.isfinite(values)]
    return values if len(values) <= size else rng.choice(values, size, replace=False)


def shift_scores(reference: pd.DataFrame, recent: pd.DataFrame, sample_size: int, seed: int = 0) -> pd.DataFrame:
    """Shift of every metric and profile the two frames share (SHIFT_COLUMNS), largest shift first."""
    rng = np.random.default_rng(seed)
    metrics = [m for m in METRICS if m in reference.columns and m in recent.columns]
    recent_groups = dict(tuple(recent.groupby(PROFILE, observed=True, sort=True)))
    rows = []
    for profile, before in reference.groupby(PROFILE, observed=True, sort=True):
        after = recent_groups.get(profile)
        if after is None:
            continue
        for metric in metrics:
            a = _sample(before[metric].to_numpy(dtype=float), sample_size, rng)
            b = _sample(after[metric].to_numpy(dtype=float), sample_size, rng)
            if not len(a) or not len(b):
                continue
            spread = float(a.std())
            distance = float(wasserstein_distance(a, b))
            ks = ks_2samp(a, b, method="asymp")
            rows.append(
                (metric, profile, distance / spread if spread > 0 else np.nan, float(ks.statistic), float(ks.pvalue),
                 float(a.mean()), float(b.mean()), len(a), len(b))
            )  # fmt: skip
    table = pd.DataFrame(rows, columns=list(SHIFT_COLUMNS))
    return table.sort_values([SHIFT, KS], ascending=False, na_position="last", ignore_index=True)


def by_metric(scores: pd.DataFrame) -> pd.DataFrame:
    """Per metric, the largest shift and KS over its profiles: one number per metric for a chart."""
    return scores.groupby(METRIC, sort=False)[[SHIFT, KS]].max()
