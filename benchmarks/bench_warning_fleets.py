"""Early warning of saved models on several held-out fleets, pooled, with a paired test against each baseline.

One held-out fleet holds about 66 eligible episodes, and the TFT and linear drift land within an episode or
two of each other on it: too few to tell a real lead from a seed's luck. This scores each model (a
`bench_warning.py --out` model directory) on three fleets of the held-out recipe, each with its own seed and
start, none seen in training, and pools them:

- per forecaster: episodes warned of and false alarms per server-day at its threshold fitted on the training
  fleet's validation origins (as `bench_warning.py` fits them);
- per baseline: the episodes only the TFT warned of and those only the baseline warned of, with the exact
  two-sided sign test on those discordant episodes (McNemar's exact test): how likely a split at least as
  uneven is if neither forecaster were better;
- the pooled recall–false-alarm curves: episodes warned of at ≤ 0.6 / 0.8 / 1.0 false alarms per server-day;
- a reference that reads the simulator's hidden state, not the metrics: a perfect ramp detector alerting at
  every origin where the server has been in `heavy_load` for at least m minutes. It shows how early a ramp
  must be recognised to warn of how many episodes, and what the non-escalating ramps cost in false alarms.

    python benchmarks/bench_warning_fleets.py --data /tmp/warn-cpu --out /tmp/fleets.json /tmp/exp/model-a ...
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_warning import HELDOUT_FLEET, HELDOUT_HOURS, TRAIN_FLEET, fleet

from tftmon.config import EvaluationConfig, PeerConfig, SimulationConfig
from tftmon.contract import MODEL_STEP, ORIGIN, PRECURSOR_STATE, SERVER_NAME, STATE, TIMESTAMP
from tftmon.evaluation import backtest
from tftmon.evaluation.actuals import origins
from tftmon.evaluation.backtest import WarningComparison
from tftmon.evaluation.baselines import ORACLE
from tftmon.evaluation.incidents import IncidentScores, PairedWarnings, episodes, incident_scores, paired_warnings
from tftmon.evaluation.peer import PeerModel, fit_peer, load_peer, save_peer
from tftmon.model.network import load_model

#: The recipe's fleet first (its data in `heldout/`), then two more with their own seed and start.
FLEETS: tuple[SimulationConfig, ...] = (
    HELDOUT_FLEET,
    SimulationConfig.model_validate({**HELDOUT_FLEET.model_dump(), "seed": 31, "start": "2026-05-04"}),
    SimulationConfig.model_validate({**HELDOUT_FLEET.model_dump(), "seed": 37, "start": "2026-08-03"}),
)
BUDGETS = (0.6, 0.8, 1.0)
RAMP_MINUTES = (5, 15, 30, 45, 60)
MODEL = "tft"


def fleet_dir(data: Path, config: SimulationConfig) -> Path:
    return data / ("heldout" if config == HELDOUT_FLEET else f"heldout-{config.seed}")


@dataclass
class Pooled:
    """Counts summed over fleets, per forecaster."""

    episodes: int = 0
    warned: int = 0
    false_alarms: float = 0.0
    server_days: float = 0.0
    true_alerts: int = 0
    judged: int = 0
    curve_warned: np.ndarray | None = None
    curve_false: np.ndarray | None = None

    def add(self, comparison: WarningComparison, name: str) -> None:
        scores = comparison.scores[name]
        curve = comparison.curves[comparison.curves["forecaster"] == name]
        warned = curve["recall"].to_numpy() * scores.episodes
        false = curve["false_alarms_per_server_day"].to_numpy() * scores.server_days
        self.episodes += scores.episodes
        self.warned += scores.warned
        self.false_alarms += scores.false_alarms
        self.server_days += scores.server_days
        self.true_alerts += scores.true_alerts
        self.judged += scores.alerts - scores.alerts_during
        self.curve_warned = warned if self.curve_warned is None else self.curve_warned + warned
        self.curve_false = false if self.curve_false is None else self.curve_false + false

    def at_budgets(self) -> list[int]:
        """Most episodes warned of at any threshold whose pooled false alarms stay within each budget."""
        assert self.curve_warned is not None and self.curve_false is not None
        rate = self.curve_false / self.server_days
        return [round(float(self.curve_warned[rate <= b].max(initial=0.0))) for b in BUDGETS]


def ramp_detector(frame: pd.DataFrame, holdout: pd.Timestamp, minutes: int) -> IncidentScores:
    """Alerts at the evaluation's origins where the server has been in PRECURSOR_STATE for ≥ `minutes`."""
    at = origins(frame, holdout)[[SERVER_NAME, ORIGIN]]
    states = frame[[SERVER_NAME, TIMESTAMP, STATE]].sort_values([SERVER_NAME, TIMESTAMP])
    ramping = states[STATE] == PRECURSOR_STATE
    run = (ramping != ramping.groupby(states[SERVER_NAME]).shift()).cumsum()
    since = states[TIMESTAMP] - states.groupby(run)[TIMESTAMP].transform("min") + MODEL_STEP
    states = states.assign(ramping=ramping, since=since).rename(columns={TIMESTAMP: ORIGIN})
    joined = at.merge(states, on=[SERVER_NAME, ORIGIN], how="left")
    alert = joined["ramping"].eq(True) & (joined["since"] >= pd.Timedelta(minutes=minutes))
    return incident_scores(at.assign(alert=alert.to_numpy()), episodes(frame))


def peer_for(train_frame: pd.DataFrame, fit: EvaluationConfig, path: Path | None) -> PeerModel | None:
    """The LightGBM peer trained on the training fleet before its held-out time (saved at `path`, or
    loaded from there when an earlier run saved it)."""
    if path is None:
        return None
    if path.exists():
        return load_peer(path)
    holdout = backtest.holdout_start(train_frame, fit.holdout_hours)
    peer = fit_peer(train_frame[train_frame[TIMESTAMP] < holdout], PeerConfig())
    save_peer(peer, path)
    return peer


def score_model(
    path: Path,
    train_frame: pd.DataFrame,
    heldout: list[tuple[SimulationConfig, pd.DataFrame]],
    fit: EvaluationConfig,
    peer: PeerModel | None = None,
) -> dict[str, Any]:
    """One model calibrated on the training fleet, then scored on each held-out fleet and pooled."""
    model = load_model(path)
    backtest.calibrate(model, train_frame, backtest.holdout_start(train_frame, fit.holdout_hours), fit, peer)
    evaluation = fit.model_copy(update={"holdout_hours": HELDOUT_HOURS})
    pooled: dict[str, Pooled] = {}
    discordant: dict[str, list[int]] = {}
    paged: dict[str, list[float]] = {}
    versus: list[pd.DataFrame] = []
    per_fleet = []
    for config, frame in heldout:
        _, results = backtest.evaluate_model(
            model, frame, backtest.holdout_start(frame, HELDOUT_HOURS), evaluation, peer
        )
        comparison = results.warnings
        assert comparison is not None
        if results.peer is not None:
            versus.append(results.peer.assign(seed=config.seed))
        row: dict[str, Any] = {"seed": config.seed, "start": config.start}
        for name, page in (results.pages or {}).items():
            total = paged.setdefault(name, [0, 0, 0, 0, 0, 0.0])
            for i, value in enumerate(
                (page.warned, page.episodes, page.pages, page.pages_during, page.true_pages, page.server_days)
            ):
                total[i] += value
        for name in comparison.scores:
            pooled.setdefault(name, Pooled()).add(comparison, name)
            scores = comparison.scores[name]
            row[name] = (
                f"{scores.warned}/{scores.episodes} at {scores.false_alarms_per_server_day:.2f}, "
                f"precision {scores.precision:.2f}"
            )
            if name not in (MODEL, ORACLE):
                pair = paired_warnings(comparison.scores[MODEL], scores)
                total = discordant.setdefault(name, [0, 0])
                total[0], total[1] = total[0] + pair.only_first, total[1] + pair.only_second
        per_fleet.append(row)
        logging.info("%s, fleet seed %d: %s", path.name, config.seed, row)
    out: dict[str, Any] = {"model": str(path), "per_fleet": per_fleet, "pooled": {}, "pages": {}}
    if versus:
        out["versus_peer"] = pd.concat(versus).to_dict(orient="records")
    for name, (warned, eligible, pages, during, true, days) in paged.items():
        out["pages"][name] = {
            "warned": f"{warned}/{eligible}",
            "recall": round(warned / eligible, 3) if eligible else None,
            "pages_per_server_day": round(pages / days, 3),
            "false_pages_per_server_day": round((pages - during - true) / days, 3),
            "precision": round(true / (pages - during), 3) if pages > during else None,
        }
    for name, p in pooled.items():
        entry: dict[str, Any] = {
            "warned": p.warned,
            "episodes": p.episodes,
            "false_alarms_per_server_day": round(p.false_alarms / p.server_days, 3),
            "precision": round(p.true_alerts / p.judged, 3) if p.judged else None,
            "warned_at_budgets": dict(zip(map(str, BUDGETS), p.at_budgets(), strict=True)),
        }
        if name in discordant:
            only_tft, only_base = discordant[name]
            entry["only_tft"], entry["only_this"] = only_tft, only_base
            entry["sign_test_p"] = round(PairedWarnings(only_tft, only_base).p_value, 3)
        out["pooled"][name] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", type=Path, nargs="*", help="model directories saved by bench_warning.py --out")
    parser.add_argument("--data", type=Path, default=Path("/tmp/tftmon-warning"), help="bench_warning.py's --data")
    parser.add_argument("--out", type=Path, default=None, help="write the results here as JSON")
    parser.add_argument(
        "--alert-budget", type=float, default=None, help="false alarms per server-day the thresholds are fitted for"
    )
    parser.add_argument(
        "--peer", type=Path, default=None, help="the LightGBM peer's directory: loaded, or trained and saved there"
    )
    args = parser.parse_args()
    fit = EvaluationConfig() if args.alert_budget is None else EvaluationConfig(alert_budget=args.alert_budget)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%X")
    heldout = [(config, fleet(config, fleet_dir(args.data, config))) for config in FLEETS]
    ceiling: dict[str, list[float]] = {}
    for _, frame in heldout:
        for minutes in RAMP_MINUTES:
            scores = ramp_detector(frame, backtest.holdout_start(frame, HELDOUT_HOURS), minutes)
            total = ceiling.setdefault(f"in {PRECURSOR_STATE} ≥ {minutes} min", [0, 0, 0.0, 0.0, 0, 0])
            judged = scores.alerts - scores.alerts_during
            counts = (
                scores.warned,
                scores.episodes,
                scores.false_alarms,
                scores.server_days,
                scores.true_alerts,
                judged,
            )
            for i, value in enumerate(counts):
                total[i] += value
    ramp = {
        name: {
            "warned": int(w),
            "episodes": int(n),
            "false_alarms_per_server_day": round(f / d, 3),
            "precision": round(t / j, 3) if j else None,
        }
        for name, (w, n, f, d, t, j) in ceiling.items()
    }
    print(pd.DataFrame.from_dict(ramp, orient="index").to_string())
    results: list[dict[str, Any]] = [{"ramp_detector": ramp}]
    if args.models:
        train_frame = fleet(TRAIN_FLEET, args.data / "train")
        peer = peer_for(train_frame, fit, args.peer)
        results += [score_model(path, train_frame, heldout, fit, peer) for path in args.models]
    text = json.dumps(results, indent=2, default=str)
    if args.out is not None:
        args.out.write_text(text)
    for result in results[1:]:
        print(result["model"])
        print(pd.DataFrame(result["pooled"]).T.to_string())
        print(pd.DataFrame(result["pages"]).T.to_string())
        if "versus_peer" in result:
            print(pd.DataFrame(result["versus_peer"]).to_string())


if __name__ == "__main__":
    main()
