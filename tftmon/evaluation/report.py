"""Plots and the markdown summary of an evaluation.

Figures are built on `matplotlib.figure.Figure` directly (no pyplot), so importing or plotting never
touches matplotlib's global backend state.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tftmon.contract import (
    CPU_IDLE,
    CPU_IOWAIT,
    HORIZON,
    HORIZONS,
    MEM_USED,
    METRIC,
    ORIGIN,
    PRECURSOR_STATE,
    QUANTILE_NAMES,
    SERVER_NAME,
    STEP,
    STEP_MINUTES,
    TIMESTAMP,
)
from tftmon.evaluation.backtest import FITTED_WITH_MODEL, EvaluationResults, ranked
from tftmon.evaluation.baselines import BASELINES, ORACLE
from tftmon.evaluation.incidents import paired_warnings
from tftmon.evaluation.metrics import MODEL, SEEN
from tftmon.evaluation.peer import PEER
from tftmon.io import write_bytes_atomic

#: What operators look at first: the bottleneck signal, CPU, memory.
FAN_CHART_METRICS: tuple[str, ...] = (CPU_IOWAIT, CPU_IDLE, MEM_USED)


_CPU_USED_LABEL = "CPU used = 100 − cpu_idle_pct (%)"


def plot_fan(
    forecast: pd.DataFrame,
    actuals: pd.DataFrame,
    series: Sequence[tuple[str, str]],
    *,
    origin: pd.Timestamp | None = None,
    history: timedelta = timedelta(hours=8),
) -> Figure:
    """Fan charts, one panel per (server, metric): the p10–p90 band and p50 from one origin (the latest
    by default) against the actuals before and after it. Idle CPU is drawn as CPU used, as operators read it.
    """
    fig = Figure(figsize=(8, 2.4 * len(series)))
    axes = fig.subplots(len(series), 1, squeeze=False, sharex=False)
    for ax, (server, metric) in zip(axes[:, 0], series, strict=True):
        fc = forecast[(forecast[SERVER_NAME] == server) & (forecast[METRIC] == metric)]
        at = origin if origin is not None else fc[ORIGIN].max()
        fc = fc[fc[ORIGIN] == at].sort_values(STEP)
        mine = actuals[actuals[SERVER_NAME] == server]
        act = mine[mine[TIMESTAMP].between(at - history, fc[TIMESTAMP].max())].sort_values(TIMESTAMP)
        lo, mid, hi = (fc[name].to_numpy() for name in QUANTILE_NAMES)
        y = act[metric].to_numpy()
        label = metric
        if metric == CPU_IDLE:
            lo, mid, hi, y, label = 100 - hi, 100 - mid, 100 - lo, 100 - y, _CPU_USED_LABEL
        ax.fill_between(fc[TIMESTAMP], lo, hi, color="tab:blue", alpha=0.25, label="p10–p90")
        ax.plot(fc[TIMESTAMP], mid, color="tab:blue", lw=1.5, label="p50")
        ax.plot(act[TIMESTAMP], y, color="black", lw=1, label="actual")
        ax.axvline(at, color="grey", ls="--", lw=0.8)
        ax.set_title(f"{server} · {label}", fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def plot_mase_by_horizon(agg: pd.DataFrame) -> Figure:
    """Grouped bars of mean MASE per horizon for the model and each baseline (lower is better; 1 = the
    in-sample seasonal naive)."""
    overall = agg[~agg[SEEN].astype(bool) | agg[SEEN].astype(bool)] if SEEN in agg else agg
    wide = overall.groupby([HORIZON, MODEL], sort=False)["mase"].mean().unstack(MODEL).reindex(list(HORIZONS))
    fig = Figure(figsize=(6, 3.2))
    ax = fig.subplots()
    width = 0.8 / max(len(wide.columns), 1)
    x = np.arange(len(wide.index))
    for i, name in enumerate(wide.columns):
        ax.bar(x + i * width, wide[name].to_numpy(), width, label=name)
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_xticks(x + width * (len(wide.columns) - 1) / 2, wide.index)
    ax.set_ylabel("mean MASE")
    ax.set_title("MASE by horizon (lower is better)", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_warning_curves(curves: pd.DataFrame, table: pd.DataFrame, budget: float) -> Figure:
    """Recall against false alarms per server-day as each forecaster's alert threshold sweeps, with the
    operating point its fitted threshold chose and the false-alarm budget; up and left is better."""
    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    for name, curve in curves.groupby("forecaster", sort=False):
        style = ":" if name == ORACLE else "-"
        line = ax.plot(curve["false_alarms_per_server_day"], curve["recall"], style, lw=1.5, label=str(name))[0]
        chosen = table[table["forecaster"] == name]
        ax.plot(chosen["false_alarms_per_server_day"], chosen["recall"], "o", color=line.get_color())
    ax.axvline(budget, color="grey", ls="--", lw=0.8, label=f"budget {budget:g}/server-day")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("false alarms per server-day")
    ax.set_ylabel("incident recall (≥ 30 min ahead)")
    ax.set_ylim(0, 1.02)
    ax.set_title("Early warning: recall vs false alarms (dots: fitted thresholds)", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: Path, dpi: int = 80) -> Path:
    """Write a figure as PNG atomically (readers never see half a file)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    write_bytes_atomic(Path(path), buffer.getvalue())
    return Path(path)


def write_plots(
    results: EvaluationResults,
    forecast: pd.DataFrame,
    actuals: pd.DataFrame,
    out_dir: Path,
    *,
    servers: int = 3,
    metrics: Sequence[str] = FAN_CHART_METRICS,
) -> list[Path]:
    """Write mase_by_horizon.png and fan_<server>.png for the first `servers` servers; returns the paths."""
    out_dir = Path(out_dir)
    paths = [save_figure(plot_mase_by_horizon(results.aggregate), out_dir / "mase_by_horizon.png")]
    if results.warnings is not None:
        fig = plot_warning_curves(results.warnings.curves, results.warnings.table, results.config.target_false_alarms)
        paths.append(save_figure(fig, out_dir / "recall_vs_false_alarms.png"))
    forecast_metrics = list(dict.fromkeys(forecast[METRIC]))
    # A model of other metrics than the preferred ones (real telemetry) still gets fan charts of its own.
    chosen = [m for m in metrics if m in forecast_metrics] or forecast_metrics[: len(metrics)]
    for server in sorted(forecast[SERVER_NAME].unique())[:servers]:
        fig = plot_fan(forecast, actuals, [(server, m) for m in chosen])
        paths.append(save_figure(fig, out_dir / f"fan_{server}.png"))
    return paths


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or pd.isna(x) else f"{x:.{digits}f}"


def _markdown_table(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        cells = (v if isinstance(v, str) else str(v) if isinstance(v, int | np.integer) else _fmt(v) for v in row)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _target_lines(results: EvaluationResults) -> list[str]:
    cfg = results.config
    lines = []
    row: Any  # an itertuples row: pandas-stubs cannot know the columns' types
    for row in results.ratio.itertuples(index=False):
        ok = row.ratio <= cfg.target_mase_ratio
        lines.append(
            f"| p50 MASE ≤ {cfg.target_mase_ratio:g} × best baseline ({row.horizon}) | {_fmt(row.ratio)} × "
            f"{row.best_baseline} | {'PASS' if ok else 'FAIL'} | {_fmt(cfg.target_mase_ratio - row.ratio)} margin |"
        )
    lo, hi = cfg.target_coverage
    cover = results.aggregate[results.aggregate[MODEL] == results.model]
    for row in cover.itertuples(index=False):
        ok = lo <= row.coverage <= hi
        margin = min(row.coverage - lo, hi - row.coverage)
        lines.append(
            f"| p10–p90 coverage in {lo:.0%}–{hi:.0%} ({row.horizon}) | {_fmt(row.coverage)} | "
            f"{'PASS' if ok else 'FAIL'} | {_fmt(margin)} margin |"
        )
    if results.cold_start is not None:
        for row in results.cold_start.itertuples(index=False):
            # One-sided: unseen servers may be easier than seen ones (a negative gap), never much harder.
            ok = row.gap <= cfg.target_cold_start_gap
            lines.append(
                f"| unseen servers' MASE ≤ seen + {cfg.target_cold_start_gap:.0%} ({row.horizon}) | {_fmt(row.gap)} | "
                f"{'PASS' if ok else 'FAIL'} | {_fmt(cfg.target_cold_start_gap - row.gap)} margin |"
            )
    else:
        lines.append("| cold start (unseen servers) | not measured: no server unseen in training | – | – |")
    inc = results.incidents
    if inc is not None and inc.episodes == 0:
        lines.append(
            "| incident recall | not measured: no incident episode in the held-out period could be warned of in "
            "time and asked about; hold out more hours | – | – |"
        )
    elif inc is not None:
        lead_min = int(inc.lead / timedelta(minutes=1))
        ok = inc.recall >= cfg.target_recall and inc.false_alarms_per_server_day <= cfg.target_false_alarms
        lines.append(
            f"| incident recall ≥ {cfg.target_recall:g} at ≥ {lead_min} min lead with ≤ {cfg.target_false_alarms:g} "
            f"false alarm per server-day | {_fmt(inc.recall)} ({inc.warned}/{inc.episodes}) at "
            f"{_fmt(inc.false_alarms_per_server_day, 2)} | {'PASS' if ok else 'FAIL'} | "
            f"{_fmt(inc.recall - cfg.target_recall)} recall margin |"
        )
    else:
        lines.append(f"| incident recall | {results.incidents_skipped} | – | – |")
    return lines


def summary_markdown(results: EvaluationResults) -> str:
    """A readable report: the targets with pass/fail and margin, then the tables behind them."""
    cfg = results.config
    mode = "at exactly the horizon step" if cfg.horizon_mode == "at" else "averaged over steps up to the horizon"
    parts = [
        f"# Evaluation of `{results.model}`",
        "",
        f"Horizons scored {mode}; MASE scaled by each server × metric's in-sample seasonal-naive MAE "
        f"(< 1 beats it; one under {cfg.negligible_scale:.0%} of the metric's fleet median borrows its peers'). "
        "Baseline bands come from their own training-part residuals.",
        "",
        "## Targets",
        "",
        "| target | measured | result | by how much |",
        "|---|---|---|---|",
        *_target_lines(results),
        "",
        "## Model vs best baseline (mean MASE over metrics)",
        "",
        _markdown_table(results.ratio),
        "",
        "## Per horizon, all models",
        "",
        _markdown_table(results.aggregate),
    ]
    if results.cold_start is not None:
        parts += ["", "## Cold start (seen vs unseen servers)", "", _markdown_table(results.cold_start)]
    if results.peer is not None:
        parts += ["", "## Against a strong practical peer (LightGBM)", "", *peer_lines(results)]
    if results.warnings is not None:
        parts += ["", "## Incident early warning, side by side", "", *warning_lines(results)]
    if results.pages:
        parts += ["", "## Pages, as an on-call gets them", "", *page_lines(results)]
    model_rows = results.metrics[results.metrics[MODEL] == results.model]
    parts += ["", f"## `{results.model}` per metric", "", _markdown_table(model_rows.drop(columns=[MODEL]))]
    return "\n".join(parts) + "\n"


def warning_lines(results: EvaluationResults) -> list[str]:
    """The side-by-side early-warning table (every forecaster through the same risk scale and rule) and
    which forecaster wins."""
    assert results.warnings is not None
    cfg = results.config
    comparison = results.warnings
    table = comparison.table.assign(
        forecaster=comparison.table["forecaster"].map(lambda f: f"{f} (ceiling)" if f == ORACLE else f)
    )
    lead = int(cfg.warning_lead / timedelta(minutes=1))
    verdict = (
        f"**{comparison.winner}** warns of the most incidents within {cfg.target_false_alarms:g} false alarm per "
        "server-day."
        if comparison.winner
        else f"No forecaster stays within {cfg.target_false_alarms:g} false alarm per server-day."
    )
    where = (
        "Every threshold was fitted at the same origins: the model's validation origins."
        if set(table["threshold_fitted_on"]) == {FITTED_WITH_MODEL}
        else "`threshold_fitted_on` says where each threshold was fitted: thresholds the model does not carry "
        "are fitted on this data, before its held-out period."
    )
    eligible = int(table["episodes"].iloc[0])
    unseen = comparison.without_sign
    them = "it" if unseen == 1 else "them"
    reach = (
        f" {unseen} of the {eligible} episodes showed no sign in time: at no origin {lead} min to 8 h before "
        f"{them} was the server already in `{PRECURSOR_STATE}`, the ramp incidents grow out of, so no forecaster "
        f"that reads history could warn of {them}; {eligible - unseen}/{eligible} (recall "
        f"{(eligible - unseen) / eligible:.2f}) is the most any of them can reach here."
        if unseen and eligible
        else ""
    )
    return [
        f"An alert is severity critical at an origin (risk ≥ its fitted threshold on validation origins before "
        f"the held-out period, for ≤ {cfg.alert_budget:g} false alarms per server-day there); an incident is "
        f"warned when an alert came {lead} min to 8 h before it started; an episode counts when origins of its "
        f"server ran past its last chance to warn (those in the data's last hours, where origins stop a whole "
        f"forecast before the end, are left out). {where} {verdict}{reach}{_paired_line(results)}",
        "",
        _markdown_table(table),
    ]


def _paired_line(results: EvaluationResults) -> str:
    """The model against the strongest baseline on the episodes they disagree on: whether a lead in recall
    is more than chance."""
    assert results.warnings is not None
    table = results.warnings.table
    rivals = table[table["forecaster"].isin(BASELINES)]
    if results.model not in results.warnings.scores or rivals.empty:
        return ""
    rival = str(ranked(rivals).iloc[0]["forecaster"])
    scores = results.warnings.scores
    paired = paired_warnings(scores[results.model], scores[rival])
    chance = "unlikely to be chance" if paired.p_value < 0.05 else "within chance"
    return (
        f" Paired on the same episodes, `{results.model}` against `{rival}`, the strongest baseline: only "
        f"`{results.model}` warned of {paired.only_first}, only `{rival}` of {paired.only_second} (exact sign "
        f"test p = {paired.p_value:.2f}: {chance})."
    )


def registry_description(results: EvaluationResults, scored_on: str) -> str:
    """A model version's description for the registry: the targets with pass/fail, then the early-warning
    table side by side, naming what it was scored on (held out from training or not)."""
    parts = [
        f"**Evaluation on {scored_on}**, {results.config.horizon_mode} horizon steps, origins every "
        f"{results.config.origin_every}.",
        "",
        "| target | measured | result | by how much |",
        "|---|---|---|---|",
        *_target_lines(results),
    ]
    if results.peer is not None:
        parts += ["", *peer_lines(results)]
    if results.warnings is not None:
        parts += ["", *warning_lines(results)]
    if results.pages:
        parts += ["", *page_lines(results)]
    return "\n".join(parts)


def peer_lines(results: EvaluationResults) -> list[str]:
    """The model against the peer per horizon, and a plain verdict: where the peer is ahead, it says so."""
    assert results.peer is not None
    table = results.peer
    ahead = table[(table["mase_ratio"] < 1) & (table["quantile_loss_ratio"] < 1)][HORIZON].astype(str).tolist()
    behind = table[(table["mase_ratio"] >= 1) | (table["quantile_loss_ratio"] >= 1)][HORIZON].astype(str).tolist()
    verdict = (
        f"`{results.model}` is ahead of the peer at every horizon on both."
        if not behind
        else f"**The peer is ahead of `{results.model}` at {', '.join(behind)}** on p50 MASE or mean pinball"
        + (f"; `{results.model}` leads at {', '.join(ahead)}." if ahead else ".")
    )
    return [
        f"`{PEER}`: one LightGBM quantile model per metric and quantile on lags, rolling statistics, yesterday's "
        "value, calendar and profile (the forecast step a feature), trained on the same period. Ratios are "
        f"`{results.model}` / `{PEER}`, geometric means over metrics (< 1: `{results.model}` better); `better` "
        f"counts the metrics where `{results.model}` is. {verdict}",
        "",
        _markdown_table(table),
    ]


def page_lines(results: EvaluationResults) -> list[str]:
    """Every forecaster's pages in operator units, the oracle marked as the ceiling."""
    assert results.pages
    cfg = results.config
    rows = [
        {
            "forecaster": f"{name} (ceiling)" if name == ORACLE else name,
            "pages / server-day": scores.pages_per_server_day,
            "false pages / server-day": scores.false_pages_per_server_day,
            "precision": scores.precision,
            "warned": f"{scores.warned}/{scores.episodes}",
            "recall": scores.recall,
            "median lead (min)": scores.median_lead_min,
        }
        for name, scores in results.pages.items()
    ]
    lead = int(cfg.warning_lead / timedelta(minutes=1))
    return [
        f"Every forecaster forecast at every {STEP_MINUTES}-min step over the held-out period's first "
        f"{cfg.page_hours:g} h, as the service does, at its fitted threshold; {cfg.page_rule.text}. A page is "
        "true when an incident of its server starts within 8 h after it opens (pages opened during one are left "
        f"out); an incident is warned when a page was open {lead} min to 8 h before it started.",
        "",
        _markdown_table(pd.DataFrame(rows)),
    ]
