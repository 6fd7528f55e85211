"""tftmon's forecasts as Prometheus series: the text a scrape of METRICS_PATH reads (docs/PROMETHEUS.md).

Operators already graph and alert in Prometheus; with each host's forecast carrying the `instance` and `job`
labels its node_exporter series carry, one PromQL expression can hold the forecast and the actual side by side
(`on(instance, job)`), and a rule file can alert on tftmon's severity instead of tftmon posting alerts itself.

Series per server: one gauge per forecast metric, horizon and quantile (`FORECAST_SERIES`, labelled `horizon`
in PromQL duration syntax and `quantile` as a number) and the per-server gauges of `SERVER_SERIES`. Every
series carries `server` and `profile`, and `instance` and `job` for a host read from Prometheus; those two
keep their values only when the scrape job sets `honor_labels: true`.

The text is written directly, a preformatted label string per server and per (horizon, quantile): 73 ms for
the 132,000 samples of 1,000 servers, where prometheus_client's metric families and generate_latest take 1 s
(benchmarks/bench_exporter.py). Values are never NaN or infinite: such a sample is left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from math import isfinite
from typing import Any

from tftmon.config import ServiceConfig
from tftmon.contract import (
    COLUMNS_BY_NAME,
    HORIZONS,
    METRIC_COLUMNS,
    METRICS,
    MODEL_STEP,
    QUANTILE_NAMES,
    QUANTILES,
    Column,
)
from tftmon.risk import SEVERITY_BANDS, Severity

#: Where the service serves the text (the scrape snippet's metrics_path: deploy/prometheus/scrape-tftmon.yml).
METRICS_PATH = "/metrics/forecasts"
#: The scrape target labels of a host read from Prometheus, attached as given, in this order.
TARGET_LABELS: tuple[str, ...] = ("instance", "job")

#: Contract unit -> (how contract column names abbreviate it, the Prometheus unit suffix that replaces it).
#: Values keep the contract's units, so they equal the service's JSON; a new contract unit fails import here.
UNIT_NAMES: dict[str, tuple[str, str]] = {
    "%": ("_pct", "percent"),
    "MB/s": ("_mb_s", "megabytes_per_second"),
    "connections": ("", "connections"),
    "days": ("_days", "days"),
    "": ("", ""),
}


def series_name(column: Column) -> str:
    """The forecast gauge of a contract metric: tftmon_forecast_ + its name with the unit spelled out."""
    if column.unit not in UNIT_NAMES:
        raise ValueError(f"contract unit {column.unit!r} of {column.name} has no Prometheus name in UNIT_NAMES")
    abbreviation, unit = UNIT_NAMES[column.unit]
    base = f"tftmon_forecast_{column.name.removesuffix(abbreviation)}"
    return f"{base}_{unit}" if unit else base


def prometheus_duration(duration: timedelta) -> str:
    """A duration as PromQL writes it, in its largest whole unit: 30 min -> 30m, 8 h -> 8h."""
    seconds = int(duration.total_seconds())
    for suffix, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{suffix}"
    return f"{seconds}s"


#: Contract metric -> its forecast gauge, e.g. mem_used_pct -> tftmon_forecast_mem_used_percent.
FORECAST_SERIES: dict[str, str] = {c.name: series_name(c) for c in METRIC_COLUMNS}
#: Contract horizon -> its `horizon` label: a PromQL duration (30m, 1h, 8h), the `offset` that lays a forecast
#: over the actual it forecast. No horizon_seconds beside it: PromQL cannot compute with a label value anyway,
#: and a second label on 126 series a server would only lengthen every line.
HORIZON_LABELS: dict[str, str] = {h: prometheus_duration(n * MODEL_STEP) for h, n in HORIZONS.items()}
#: Contract quantile name -> its `quantile` label, as Prometheus writes quantiles: p10 -> 0.1.
QUANTILE_LABELS: dict[str, str] = {name: f"{q:g}" for q, name in zip(QUANTILES, QUANTILE_NAMES, strict=True)}
#: Severity -> the value of tftmon_server_severity: its rank on the one scale (tftmon.risk).
SEVERITY_CODES: dict[str, int] = {s.value: i for i, s in enumerate(Severity)}

RISK = "tftmon_server_risk_ratio"
SEVERITY = "tftmon_server_severity"
ALERT_SCORE = "tftmon_server_alert_score"
AGE = "tftmon_server_forecast_age_seconds"
STALE = "tftmon_server_forecast_stale"
INFO = "tftmon_server_forecast_info"
_BANDS = ", ".join(
    f"{SEVERITY_CODES[b.severity]} {b.severity.value}" + (f" (risk >= {b.lower:g})" if b.lower else "")
    for b in SEVERITY_BANDS
)
#: The per-server gauges, with their HELP text.
SERVER_SERIES: dict[str, str] = {
    RISK: "Risk 0-1 of the server's latest forecast (tftmon.risk; the larger, the likelier and sooner)",
    SEVERITY: f"Severity of the server's latest forecast: {_BANDS}; only critical alerts",
    ALERT_SCORE: "The critical level's alert score of the latest forecast, which the model's fitted threshold "
    "turns critical",
    AGE: "Seconds from the forecast origin (data time of the last model step read) to this scrape",
    STALE: "1 when the server's newest sample is older than the service's stale limit (stale_after_seconds), else 0",
    INFO: "The server's latest forecast (value 1): model version, cold_start (the model never saw the server)",
}


@dataclass(frozen=True)
class ExportOptions:
    """What the forecast gauges cover, by contract names (`from_config`: the service's export_* settings):
    fewer metrics, horizons or quantiles bound the series per server (`series_per_server`)."""

    #: Contract metrics; None: every metric each record forecasts.
    metrics: tuple[str, ...] | None = None
    #: Contract horizons (contract.HORIZONS keys); None: all.
    horizons: tuple[str, ...] | None = None
    #: Contract quantile names (p10, p50, p90); None: all.
    quantiles: tuple[str, ...] | None = None
    #: False: only the per-server gauges.
    forecasts: bool = True
    #: A server whose newest sample is older than this (seconds) is stale, as the service judges it (its default).
    stale_after_seconds: float = ServiceConfig.model_fields["stale_after_seconds"].default

    @classmethod
    def from_config(cls, config: ServiceConfig) -> ExportOptions:
        """The service's export_* and stale_after_seconds settings: an unknown name stops it at start."""
        return cls(
            metrics=config.export_metrics,
            horizons=config.export_horizons,
            quantiles=config.export_quantiles,
            stale_after_seconds=config.stale_after_seconds,
        )

    def __post_init__(self) -> None:
        for field, given, known in (
            ("metrics", self.metrics, METRICS),
            ("horizons", self.horizons, tuple(HORIZONS)),
            ("quantiles", self.quantiles, QUANTILE_NAMES),
        ):
            unknown = [v for v in given or () if v not in known]
            if unknown:
                raise ValueError(f"export {field}: {', '.join(unknown)} unknown; choose from {', '.join(known)}")

    def chosen_metrics(self, forecast: Iterable[str]) -> list[str]:
        """The metrics of `forecast` exported, in contract order."""
        given = set(forecast)
        return [m for m in METRICS if m in given and (self.metrics is None or m in self.metrics)]

    @property
    def chosen_horizons(self) -> list[str]:
        return [h for h in HORIZONS if self.horizons is None or h in self.horizons]

    @property
    def chosen_quantiles(self) -> list[str]:
        return [q for q in QUANTILE_NAMES if self.quantiles is None or q in self.quantiles]


DEFAULT_OPTIONS = ExportOptions()


def series_per_server(options: ExportOptions = DEFAULT_OPTIONS, forecast: Iterable[str] = METRICS) -> int:
    """Series one server adds to a scrape, for a model forecasting `forecast`: 14 x 3 x 3 + 6 = 132 at most."""
    per_metric = len(options.chosen_horizons) * len(options.chosen_quantiles) if options.forecasts else 0
    return len(options.chosen_metrics(forecast)) * per_metric + len(SERVER_SERIES)


def _escape(value: str) -> str:
    """A label value as the text format quotes it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _prefixes(predictions: Sequence[Mapping[str, Any]], targets: Mapping[str, Mapping[str, str]] | None) -> list[str]:
    """Each server's labels, formatted once: server, profile, then its scrape target labels where given."""
    targets = targets or {}
    prefixes = []
    for record in predictions:
        given = targets.get(record["server_name"], {})
        labels = {"server": record["server_name"], "profile": record["profile"]}
        labels |= {name: given[name] for name in TARGET_LABELS if name in given}
        prefixes.append(",".join(f'{name}="{_escape(str(value))}"' for name, value in labels.items()))
    return prefixes


def _family(name: str, help_text: str, samples: list[str]) -> list[str]:
    """HELP and TYPE once, then the samples; nothing for a family without samples."""
    return [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", *samples] if samples else []


def _text(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode() if lines else b""


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and isfinite(value)


def render_forecasts(
    predictions: Sequence[Mapping[str, Any]],
    targets: Mapping[str, Mapping[str, str]] | None = None,
    ages: Mapping[str, float] | None = None,
    options: ExportOptions = DEFAULT_OPTIONS,
    now: datetime | None = None,
) -> bytes:
    """The text exposition of the forecast records (`LiveFleet.cache["predictions"]`, as tftmon.serve.live
    builds them) at `now` (default: the current time).

    targets: per server, the scrape target labels it was read with (`instance`, `job`; none for a host not
    read from Prometheus). ages: per server, seconds since its newest sample (`LiveFleet.ages`), judged
    against options.stale_after_seconds; a server without one keeps its record's `stale`.
    No timestamps: Prometheus stamps the scrape, and the age gauge says how old the forecast is.
    """
    prefixes = _prefixes(predictions, targets)
    forecasts = _forecast_lines(predictions, prefixes, options) if options.forecasts else []
    return _text(_server_lines(predictions, prefixes, ages, options, now) + forecasts)


class ForecastExporter:
    """`render_forecasts` for a service scraped more often than it forecasts (every 15-60 s vs every 5 min).

    The forecast gauges' text (all but 6 of a server's 132 series, and nearly all the time) is kept while the
    records are the same list object with the same labels: LiveFleet replaces the list at each forecast and
    only re-ages records in place. The per-server gauges, age and stale among them, are built at every scrape.
    """

    def __init__(self, options: ExportOptions = DEFAULT_OPTIONS) -> None:
        self.options = options
        #: (records, their label prefixes, forecast text): one tuple, swapped whole, so concurrent scrapes
        #: never pair one forecast's key with another's text.
        self._kept: tuple[Sequence[Mapping[str, Any]], list[str], bytes] | None = None

    def render(
        self,
        predictions: Sequence[Mapping[str, Any]],
        targets: Mapping[str, Mapping[str, str]] | None = None,
        ages: Mapping[str, float] | None = None,
        now: datetime | None = None,
    ) -> bytes:
        """As render_forecasts, with this exporter's options."""
        prefixes = _prefixes(predictions, targets)
        kept = self._kept
        if kept is None or kept[0] is not predictions or kept[1] != prefixes:
            forecasts = _forecast_lines(predictions, prefixes, self.options) if self.options.forecasts else []
            kept = self._kept = (predictions, prefixes, _text(forecasts))
        return _text(_server_lines(predictions, prefixes, ages, self.options, now)) + kept[2]


def _server_lines(
    predictions: Sequence[Mapping[str, Any]],
    prefixes: list[str],
    ages: Mapping[str, float] | None,
    options: ExportOptions,
    now: datetime | None,
) -> list[str]:
    """The per-server gauges of SERVER_SERIES."""
    now_s = (now or datetime.now(UTC)).timestamp()

    def gauge(name: str, values: Iterable[Any]) -> list[str]:
        samples = [f"{name}{{{p}}} {v!r}" for p, v in zip(prefixes, values, strict=True) if _finite(v)]
        return _family(name, SERVER_SERIES[name], samples)

    def is_stale(record: Mapping[str, Any]) -> bool:
        data_age = (ages or {}).get(record["server_name"])
        return bool(record.get("stale")) if data_age is None else data_age > options.stale_after_seconds

    def age(record: Mapping[str, Any]) -> float:
        """Never negative: a fast simulated feed runs ahead of the clock."""
        return max(0.0, round(now_s - datetime.fromisoformat(record["prediction_time"]).timestamp(), 3))

    info = [
        f'{INFO}{{{prefix},model_version="{_escape(str(r["model_version"]))}",'
        f'cold_start="{str(bool(r["cold_start"])).lower()}"}} 1'
        for prefix, r in zip(prefixes, predictions, strict=True)
    ]
    return [
        *gauge(RISK, (r.get("risk") for r in predictions)),
        *gauge(SEVERITY, (SEVERITY_CODES.get(r.get("severity", "")) for r in predictions)),
        *gauge(ALERT_SCORE, (r.get("alert_score") for r in predictions)),
        *gauge(AGE, (age(r) for r in predictions)),
        *gauge(STALE, (int(is_stale(r)) for r in predictions)),
        *_family(INFO, SERVER_SERIES[INFO], info),
    ]


def _forecast_lines(predictions: Sequence[Mapping[str, Any]], prefixes: list[str], options: ExportOptions) -> list[str]:
    """The forecast gauges, one family per metric: the hot loop (126 of a server's 132 samples at most).

    Server by server, each sample one f-string of preformatted pieces appended to its metric's family: reading
    each record once keeps it in cache (metric by metric over 1,000 records took 1.4 times as long).
    """
    horizons = options.chosen_horizons
    forecast = {m for record in predictions for h in horizons for m in record["horizons"].get(h, ())}
    families: dict[str, list[str]] = {m: [] for m in options.chosen_metrics(forecast)}
    plan = [
        (
            h,
            [(m, f"{FORECAST_SERIES[m]}{{", samples.append) for m, samples in families.items()],
            [
                (q, f',horizon="{HORIZON_LABELS[h]}",quantile="{QUANTILE_LABELS[q]}"}} ')
                for q in options.chosen_quantiles
            ],
        )
        for h in horizons
    ]
    for prefix, record in zip(prefixes, predictions, strict=True):
        by_horizon = record["horizons"]
        for h, metrics, quantiles in plan:
            by_metric = by_horizon.get(h)
            if by_metric is None:
                continue
            for metric, head, append in metrics:
                values = by_metric.get(metric)
                if values is None:
                    continue
                for q, tail in quantiles:
                    value = values.get(q)
                    if value is not None and isfinite(value):
                        append(f"{head}{prefix}{tail}{value!r}")
    lines: list[str] = []
    for metric, samples in families.items():
        column = COLUMNS_BY_NAME[metric]
        help_text = (
            f"Forecast of {metric} ({column.description.rstrip('.')}; unit {column.unit or 'none'}): the value "
            "expected `horizon` after the forecast origin, at forecast quantile `quantile`"
        )
        lines.extend(_family(FORECAST_SERIES[metric], help_text, samples))
    return lines
