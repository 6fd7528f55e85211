"""Incident early warning: alerts from the risk scale against the simulator's incident episodes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from tftmon.alerting import PageRule, pages
from tftmon.contract import (
    INCIDENT_STATE,
    MODEL_STEP,
    ORIGIN,
    PRECURSOR_STATE,
    PREDICTION_STEPS,
    SERVER_NAME,
    STATE,
    TIMESTAMP,
)
from tftmon.risk import AlertCalibration, Severity, score


def episodes(actuals: pd.DataFrame) -> pd.DataFrame:
    """Incident episodes: maximal runs of consecutive 5-min bins in INCIDENT_STATE per server.

    A missing bin ends a run. Returns server_name, start (first bin), end (last bin + one step, exclusive).
    """
    frame = actuals[[SERVER_NAME, TIMESTAMP, STATE]].sort_values([SERVER_NAME, TIMESTAMP], kind="stable")
    inc = (frame[STATE] == INCIDENT_STATE).to_numpy()
    same = (frame[SERVER_NAME] == frame[SERVER_NAME].shift()).to_numpy()
    adjacent = (frame[TIMESTAMP].diff() == pd.Timedelta(MODEL_STEP)).to_numpy()
    prev_inc = np.concatenate([[False], inc[:-1]])
    starts = inc & ~(same & adjacent & prev_inc)
    run = np.cumsum(starts)
    inc_rows = frame[inc].assign(run=run[inc])
    out = inc_rows.groupby("run").agg(
        **{SERVER_NAME: (SERVER_NAME, "first"), "start": (TIMESTAMP, "first"), "end": (TIMESTAMP, "last")}
    )
    out["end"] = out["end"] + pd.Timedelta(MODEL_STEP)
    return out.reset_index(drop=True)


def alerts(forecast: pd.DataFrame, calibration: AlertCalibration | None = None) -> pd.DataFrame:
    """Per server × origin of a forecast: raw score, risk, severity and alert (severity critical).

    The alert is taken as raised at the origin (the last observed bin the forecast was made from).
    """
    scored = score(forecast, calibration=calibration)
    scored["alert"] = scored["severity"] == Severity.CRITICAL.value
    return scored[[SERVER_NAME, ORIGIN, "raw", "risk", "severity", "alert"]]


def _origin_kinds(origins_: pd.DataFrame, episode_frame: pd.DataFrame, horizon: timedelta) -> pd.DataFrame:
    """Each origin's kind were an alert raised there: `during` an incident (start ≤ t < end), `true` (an
    episode of its server starts in (t, t + horizon]) or, otherwise, a false alarm."""
    keyed = origins_[[SERVER_NAME, ORIGIN]].reset_index(drop=True).rename_axis("origin_id").reset_index()
    cross = keyed.merge(episode_frame[[SERVER_NAME, "start", "end"]], on=SERVER_NAME, how="inner")
    during = cross.loc[(cross["start"] <= cross[ORIGIN]) & (cross[ORIGIN] < cross["end"]), "origin_id"]
    ahead = cross["start"] - cross[ORIGIN]
    true = cross.loc[(ahead > pd.Timedelta(0)) & (ahead <= horizon), "origin_id"]
    kind = np.full(len(keyed), "false", dtype=object)
    kind[true.unique()] = "true"
    kind[during.unique()] = "during"
    return keyed.assign(kind=kind)


def _server_days(origins_: pd.DataFrame) -> float:
    """Σ over servers of evaluated origins × that server's median origin spacing, in days."""
    spacing = (
        origins_.sort_values(ORIGIN)
        .groupby(SERVER_NAME)[ORIGIN]
        .agg(lambda s: s.diff().median() if len(s) > 1 else pd.Timedelta(MODEL_STEP))
    )
    count = origins_.groupby(SERVER_NAME).size()
    return float((count * (spacing / pd.Timedelta(days=1))).sum())  # type: ignore[operator]  # pandas-stubs


def _warning_windows(
    episode_frame: pd.DataFrame, origins_: pd.DataFrame, lead: timedelta, horizon: timedelta
) -> tuple[pd.DataFrame, pd.Series]:
    """Every episode × evaluated origin of its server (column `before` = start − origin), and which pairs
    lie in the warning window [start − horizon, start − lead] of an eligible episode.

    Eligible: the window holds an origin (a warning in time was possible) and an origin of the server comes
    after start − lead (the evaluation ran past the last chance to warn). The second rule leaves out the
    episodes of the held-out period's last hours: origins stop a whole forecast before the data ends, so
    their windows are cut short before the ramp, and they would count as missed only because nothing was
    asked at the time a warning was due.
    """
    eps = episode_frame.reset_index(drop=True).rename_axis("episode").reset_index()
    pairs = eps.merge(origins_, on=SERVER_NAME, how="inner")
    pairs["before"] = pairs["start"] - pairs[ORIGIN]
    covered = pairs.loc[pairs["before"] < lead, "episode"].unique()
    in_window = (pairs["before"] >= lead) & (pairs["before"] <= horizon) & pairs["episode"].isin(covered)
    return pairs, in_window


def fit_threshold(
    raw: pd.DataFrame,
    episode_frame: pd.DataFrame,
    *,
    budget: float,
    every: timedelta,
    horizon: timedelta = PREDICTION_STEPS * MODEL_STEP,
    floor: float = 0.05,
) -> AlertCalibration:
    """The lowest alert threshold on the raw score whose false alarms stay within `budget` per server-day.

    `raw`: server_name, origin, raw at validation origins before any held-out period (never on it). The
    origins may be denser than the evaluation's (more samples): false alarms are counted as they would be at
    origins every `every` (false-alarm share of origins × origins per day). Recall only grows as the
    threshold falls, so the lowest threshold within budget is the best one; `floor` keeps a forecaster
    that never alarms falsely on validation from alerting on noise.
    """
    kinds = _origin_kinds(raw, episode_frame, horizon)["kind"].to_numpy()
    false_scores = np.sort(raw["raw"].to_numpy()[kinds == "false"])[::-1]
    allowed = int(np.floor(budget * len(raw) * (every / timedelta(days=1))))
    if allowed >= len(false_scores):
        return AlertCalibration(floor)
    # Alert when raw ≥ threshold: the (allowed + 1)-th highest false score must stay below it.
    threshold = float(np.nextafter(false_scores[allowed], np.inf))
    return AlertCalibration(float(np.clip(threshold, floor, 1.0)))


def warning_curve(
    raw: pd.DataFrame,
    episode_frame: pd.DataFrame,
    *,
    lead: timedelta,
    horizon: timedelta = PREDICTION_STEPS * MODEL_STEP,
    thresholds: np.ndarray | None = None,
) -> pd.DataFrame:
    """Recall and false alarms per server-day as the raw-score threshold sweeps (a detection trade-off
    curve): columns threshold, recall, false_alarms_per_server_day, with the definitions of
    `incident_scores`. The default sweep is geometric: alert scores are probabilities of a critical
    crossing, and the thresholds that matter are the small ones."""
    thresholds = np.geomspace(0.01, 1.0, 80) if thresholds is None else np.asarray(thresholds)
    pairs, in_window = _warning_windows(episode_frame, raw[[SERVER_NAME, ORIGIN, "raw"]], lead, horizon)
    best = pairs[in_window].groupby("episode")["raw"].max().to_numpy()
    kinds = _origin_kinds(raw, episode_frame, horizon)["kind"].to_numpy()
    false_scores = raw["raw"].to_numpy()[kinds == "false"]
    days = _server_days(raw)
    recall = (best[None, :] >= thresholds[:, None]).mean(axis=1) if len(best) else np.full(len(thresholds), np.nan)
    false_alarms = (false_scores[None, :] >= thresholds[:, None]).sum(axis=1) / days if days else np.nan
    return pd.DataFrame({"threshold": thresholds, "recall": recall, "false_alarms_per_server_day": false_alarms})


def without_sign(
    origins_: pd.DataFrame,
    episode_frame: pd.DataFrame,
    actuals: pd.DataFrame,
    *,
    lead: timedelta,
    horizon: timedelta = PREDICTION_STEPS * MODEL_STEP,
) -> int:
    """Eligible episodes (as `incident_scores` counts them) whose server was not yet in PRECURSOR_STATE at
    any of its origins from start − horizon to start − lead: their ramp had not begun in the history a
    forecaster reads, so no forecaster can warn of them in time (the oracle, reading the future, can).

    `origins_`: one row per evaluated server × origin, as `incident_scores` takes them.
    """
    pairs, in_window = _warning_windows(episode_frame, origins_[[SERVER_NAME, ORIGIN]], lead, horizon)
    window = pairs[in_window]
    states = actuals[[SERVER_NAME, TIMESTAMP, STATE]].rename(columns={TIMESTAMP: ORIGIN})
    at_origin = window.merge(states, on=[SERVER_NAME, ORIGIN], how="left")
    ramping = (at_origin[STATE] == PRECURSOR_STATE).groupby(at_origin["episode"]).any()
    return int((~ramping).sum())


@dataclass
class IncidentScores:
    """Incident early-warning numbers; the exact definitions are in `incident_scores`."""

    lead: timedelta
    horizon: timedelta
    episodes: int
    warned: int
    recall: float
    median_lead_min: float
    alerts: int
    alerts_during: int
    true_alerts: int
    precision: float
    false_alarms: int
    server_days: float
    false_alarms_per_server_day: float
    per_episode: pd.DataFrame = field(repr=False)


def incident_scores(
    alert_frame: pd.DataFrame,
    episode_frame: pd.DataFrame,
    *,
    lead: timedelta = timedelta(minutes=30),
    horizon: timedelta = PREDICTION_STEPS * MODEL_STEP,
) -> IncidentScores:
    """Score critical alerts against incident episodes.

    `alert_frame`: one row per evaluated server × origin with a boolean `alert` (see `alerts`); the
    origins with alert False matter too: they define when a warning was possible and the server-days.

    - eligible episode: at least one evaluated origin of its server lies in [start − horizon,
      start − lead] (the system had a chance to warn in time) and one after start − lead (the
      evaluation ran past that chance, `_warning_windows`); others are left out.
    - warned: an alert on that server at t with start − horizon ≤ t ≤ start − lead.
      recall = warned / eligible.
    - lead of an eligible episode = start − its earliest alert in [start − horizon, start);
      median_lead_min = median over episodes with any such alert (minutes; NaN when none).
    - an alert at t is `during` an episode when start ≤ t < end (the incident is already on: neither
      an early warning nor a false alarm; excluded below); otherwise it is true when an episode of its
      server starts in (t, t + horizon], else a false alarm.
      precision = true / (alerts − during).
    - server-days = Σ over servers of (evaluated origins × that server's median origin spacing);
      false_alarms_per_server_day = false alarms / server-days.
    """
    origins_ = alert_frame[[SERVER_NAME, ORIGIN, "alert"]]
    eps = episode_frame.reset_index(drop=True).rename_axis("episode").reset_index()
    pairs, in_window = _warning_windows(episode_frame, origins_, lead, horizon)
    eligible = pairs.loc[in_window, "episode"].unique()
    warned = pairs.loc[in_window & pairs["alert"], "episode"].unique()
    early = pairs[pairs["alert"] & (pairs["before"] > pd.Timedelta(0)) & (pairs["before"] <= horizon)]
    lead_by_episode = early.groupby("episode")["before"].max()
    per_episode = eps.assign(
        eligible=eps["episode"].isin(eligible),
        warned=eps["episode"].isin(warned),
        lead_min=eps["episode"].map(lead_by_episode / pd.Timedelta(minutes=1)),  # type: ignore[operator]  # pandas-stubs
    )
    leads = per_episode.loc[per_episode["eligible"], "lead_min"].dropna()

    kinds = _origin_kinds(origins_, episode_frame, horizon)["kind"][origins_["alert"].to_numpy()]
    n_alerts, n_during, n_true = len(kinds), int((kinds == "during").sum()), int((kinds == "true").sum())
    false_alarms = n_alerts - n_during - n_true

    server_days = _server_days(origins_)
    n_eligible, n_warned = int(per_episode["eligible"].sum()), int(per_episode["warned"].sum())
    return IncidentScores(
        lead=lead,
        horizon=horizon,
        episodes=n_eligible,
        warned=n_warned,
        recall=n_warned / n_eligible if n_eligible else float("nan"),
        median_lead_min=float(leads.median()) if len(leads) else float("nan"),
        alerts=n_alerts,
        alerts_during=n_during,
        true_alerts=n_true,
        precision=n_true / (n_alerts - n_during) if n_alerts > n_during else float("nan"),
        false_alarms=false_alarms,
        server_days=server_days,
        false_alarms_per_server_day=false_alarms / server_days if server_days else float("nan"),
        per_episode=per_episode,
    )


@dataclass(frozen=True)
class PairedWarnings:
    """Two forecasters on the same eligible episodes: the ones only one of them warned of.

    Recall alone hides how two forecasters differ: 56 against 55 may be one extra episode, or ten won and
    nine lost. Only the episodes they disagree on tell them apart, and how unevenly those split says
    whether the difference could be chance.
    """

    only_first: int
    only_second: int

    @property
    def p_value(self) -> float:
        """Exact two-sided sign test on the disagreements (McNemar's exact test): the chance of a split at
        least this uneven were neither forecaster better."""
        n = self.only_first + self.only_second
        return float(binomtest(self.only_first, n).pvalue) if n else 1.0


def paired_warnings(first: IncidentScores, second: IncidentScores) -> PairedWarnings:
    """The eligible episodes only `first` warned of and those only `second` warned of (same episodes)."""
    a, b = first.per_episode, second.per_episode
    if not a["episode"].equals(b["episode"]) or not a["eligible"].equals(b["eligible"]):
        raise ValueError("paired warnings need both forecasters scored on the same episodes and origins")
    eligible = a["eligible"].to_numpy()
    ours, theirs = a["warned"].to_numpy()[eligible], b["warned"].to_numpy()[eligible]
    return PairedWarnings(int((ours & ~theirs).sum()), int((theirs & ~ours).sum()))


@dataclass
class PageScores:
    """Alerts as an on-call sees them: pages (alert episodes under the service's `PageRule`) per
    server-day, the share followed by an incident, recall and lead; the definitions are in `page_scores`."""

    rule: PageRule
    episodes: int
    warned: int
    recall: float
    median_lead_min: float
    pages: int
    pages_during: int
    true_pages: int
    precision: float
    false_pages: int
    server_days: float
    pages_per_server_day: float
    false_pages_per_server_day: float


def page_frame(alert_frame: pd.DataFrame, rule: PageRule) -> pd.DataFrame:
    """The pages of forecasts at every model step (`alert_frame`: server_name, origin, alert): one row per
    page with server_name, opened, cleared (the forecast that cleared it; NaT while still open at the end).

    A gap in a server's origins (a step not evaluated) starts its state afresh, as a restarted service would.
    """
    frame = alert_frame[[SERVER_NAME, ORIGIN, "alert"]].sort_values([SERVER_NAME, ORIGIN], kind="stable")
    names, flags = frame[SERVER_NAME].to_numpy(), frame["alert"].to_numpy(dtype=bool)
    times = pd.DatetimeIndex(frame[ORIGIN])
    apart = np.asarray(times[1:] - times[:-1]) != np.timedelta64(MODEL_STEP)
    breaks = np.flatnonzero((names[1:] != names[:-1]) | apart) + 1
    server, opened, cleared = [], [], []
    for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(frame)], strict=True):
        for first, last in pages(flags[a:b], rule):
            server.append(names[a])
            opened.append(a + first)
            cleared.append(a + last if a + last < b else -1)
    cleared_at = times.take(np.maximum(cleared, 0)).where(np.asarray(cleared, dtype=np.int64) >= 0)
    return pd.DataFrame({SERVER_NAME: server, "opened": times.take(opened), "cleared": cleared_at})


def page_scores(
    alert_frame: pd.DataFrame,
    episode_frame: pd.DataFrame,
    rule: PageRule,
    *,
    lead: timedelta = timedelta(minutes=30),
    horizon: timedelta = PREDICTION_STEPS * MODEL_STEP,
) -> PageScores:
    """Score the pages of forecasts made at every model step (`alert_frame`: server_name, origin, alert).

    - a page is `during` an incident when it opens while one is on (start ≤ opened < end): excluded below;
      otherwise it is true when an incident of its server starts in (opened, opened + horizon], else false.
      precision = true / (pages − during); pages and false pages per server-day.
    - eligible episodes as `incident_scores` counts them on these origins; warned: a page open at some time
      in [start − horizon, start − lead]; lead = start − when the first such page opened (at most the horizon).
    """
    pages_ = page_frame(alert_frame, rule)
    eps = episode_frame.reset_index(drop=True).rename_axis("episode").reset_index()
    cross = pages_.reset_index(names="page").merge(eps, on=SERVER_NAME, how="inner")
    during = cross.loc[(cross["start"] <= cross["opened"]) & (cross["opened"] < cross["end"]), "page"].unique()
    ahead = cross["start"] - cross["opened"]
    true = np.setdiff1d(cross.loc[(ahead > pd.Timedelta(0)) & (ahead <= horizon), "page"].unique(), during)
    n_pages, n_during, n_true = len(pages_), len(during), len(true)

    origins_ = alert_frame[[SERVER_NAME, ORIGIN]]
    windows, in_window = _warning_windows(episode_frame, origins_.drop_duplicates(), lead, horizon)
    eligible = windows.loc[in_window, "episode"].unique()
    last = pd.Timestamp.max.tz_localize("UTC")
    active = cross.assign(cleared=cross["cleared"].fillna(last))
    early = active[
        active["episode"].isin(eligible)
        & (active["opened"] <= active["start"] - lead)
        & (active["cleared"] > active["start"] - horizon)
    ]
    opened_at = early.groupby("episode")["opened"].min()
    eps_start = eps.set_index("episode")["start"]
    minutes = (eps_start.reindex(opened_at.index) - opened_at) / pd.Timedelta(minutes=1)  # type: ignore[operator]  # pandas-stubs
    leads = np.minimum(minutes, horizon / timedelta(minutes=1))
    days = _server_days(origins_)
    false_pages = n_pages - n_during - n_true
    return PageScores(
        rule=rule,
        episodes=len(eligible),
        warned=len(opened_at),
        recall=len(opened_at) / len(eligible) if len(eligible) else float("nan"),
        median_lead_min=float(leads.median()) if len(leads) else float("nan"),
        pages=n_pages,
        pages_during=n_during,
        true_pages=n_true,
        precision=n_true / (n_pages - n_during) if n_pages > n_during else float("nan"),
        false_pages=false_pages,
        server_days=days,
        pages_per_server_day=n_pages / days if days else float("nan"),
        false_pages_per_server_day=false_pages / days if days else float("nan"),
    )
