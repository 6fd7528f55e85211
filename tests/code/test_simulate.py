"""The fleet simulator: determinism, contract invariants, realistic episodes, fleets, streaming, files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tftmon.config import SimulationConfig
from tftmon.contract import (
    COLUMNS,
    CPU_PARTS,
    CPU_SUM_TOLERANCE,
    DEFAULT_FLEET_SIZE,
    INCIDENT_STATE,
    JAVA_CPU,
    JAVA_CPU_BOUND,
    MAINTENANCE_STATE,
    METRICS,
    OFFLINE_STATE,
    PERCENT_METRICS,
    PROFILE,
    PROFILES,
    SERVER_ID,
    SERVER_NAME,
    STATE,
    STATES,
    TIMESTAMP,
    UPTIME,
)
from tftmon.data.simulate import FleetSimulator, build_fleet, load_fleet_file, simulate, write_dataset
from tftmon.data.simulate import sink as sim_mod
from tftmon.encoding import ServerMapping, server_id
from tftmon.io import MAPPING_FILE, METADATA_FILE, METRICS_DIR, METRICS_FILE, read_json, read_metrics

HEAVY, CRITICAL, RECOVERY = STATES[3], INCIDENT_STATE, STATES[5]
EPISODE_STATES = (HEAVY, CRITICAL, RECOVERY, MAINTENANCE_STATE, OFFLINE_STATE)
DB, ML, WEB = "database", "ml_compute", "web_api"
IOWAIT, USER, MEM = CPU_PARTS[2], CPU_PARTS[0], METRICS[5]
BACK_CW, FRONT_CW = "back_close_wait", "front_close_wait"


def assert_contract(df: pd.DataFrame) -> None:
    """Every invariant of a simulated row."""
    assert list(df.columns) == [c.name for c in COLUMNS]
    for column in COLUMNS:
        assert str(df[column.name].dtype) == column.pandas_dtype, column.name
    assert not df.isna().any().any()
    cpu = df[list(CPU_PARTS)].sum(axis=1)
    assert ((cpu - 100).abs() <= CPU_SUM_TOLERANCE).all()
    assert (df[JAVA_CPU] <= df[list(JAVA_CPU_BOUND)].sum(axis=1) + 1e-9).all()
    assert ((df[list(PERCENT_METRICS)] >= 0) & (df[list(PERCENT_METRICS)] <= 100)).all().all()
    assert (df[list(METRICS)] >= 0).all().all()
    assert df[UPTIME].between(0, 30).all()
    assert set(df[STATE]) <= set(STATES)
    assert (df[SERVER_ID] == df[SERVER_NAME].map(server_id)).all()
    offline = df[df[STATE] == OFFLINE_STATE]
    others = [m for m in METRICS if m != CPU_PARTS[3]]
    assert (offline[others] == 0).all().all() and (offline[CPU_PARTS[3]] == 100).all()
    order = df.sort_values([SERVER_NAME, TIMESTAMP], kind="stable").index
    assert (order == df.index).all()


def runs(df: pd.DataFrame) -> pd.DataFrame:
    """State runs per server: state, first/last timestamp, length, and the state before."""
    out = []
    for name, g in df.groupby(SERVER_NAME, sort=False):
        s = g[STATE].to_numpy()
        ts = g[TIMESTAMP].to_numpy()
        cut = np.flatnonzero(s[1:] != s[:-1]) + 1
        starts, ends = np.r_[0, cut], np.r_[cut, len(s)]
        for a, b in zip(starts, ends, strict=True):
            out.append((name, s[a], ts[a], ts[b - 1], b - a, s[a - 1] if a else None, a == 0 or b == len(s)))
    return pd.DataFrame(out, columns=["server", "state", "first", "last", "ticks", "before", "edge"])


@pytest.fixture(scope="module")
def fleet() -> tuple[FleetSimulator, pd.DataFrame]:
    config = SimulationConfig(servers=30, hours=14 * 24, interval="5min", seed=7)
    return FleetSimulator(config), simulate(config)


def test_same_seed_same_data_other_seed_other_data() -> None:
    config = SimulationConfig(servers=8, hours=6, interval="1min", seed=1)
    a, b = simulate(config), simulate(config)
    pd.testing.assert_frame_equal(a, b)
    c = simulate(config.model_copy(update={"seed": 2}))
    assert not np.allclose(a[USER], c[USER])


def test_every_row_keeps_the_contract(fleet: tuple[FleetSimulator, pd.DataFrame]) -> None:
    _, df = fleet
    assert_contract(df)
    assert set(df[PROFILE]) == {p.name for p in PROFILES}
    assert set(df[STATE]) == set(STATES), "two weeks of 30 servers should show every state"


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(interval=st.sampled_from(["5s", "30s", "1min", "5min", "15min"]), seed=st.integers(0, 2**40))
def test_any_interval_keeps_the_contract(interval: str, seed: int) -> None:
    config = SimulationConfig(servers=7, hours=3, interval=interval, seed=seed)
    df = simulate(config)
    assert len(df) == 7 * config.ticks
    assert_contract(df)


def test_5s_and_5min_data_look_alike() -> None:
    """Noise correlation is defined in time: hour-scale means and spreads agree across intervals."""
    base = {"servers": 14, "hours": 48, "seed": 3, "scenario": "healthy", "scenario_fraction": 1.0}
    fine = simulate(SimulationConfig(interval="5s", **base))
    coarse = simulate(SimulationConfig(interval="5min", **base))
    for metric in (USER, MEM):
        assert fine[metric].mean() == pytest.approx(coarse[metric].mean(), rel=0.05)
        assert fine[metric].std() == pytest.approx(coarse[metric].std(), rel=0.1)


def test_uptime_resets_after_maintenance_and_outages(fleet: tuple[FleetSimulator, pd.DataFrame]) -> None:
    _, df = fleet
    reboots = 0
    for _, g in df.groupby(SERVER_NAME):
        s = g[STATE].to_numpy()
        ends = np.flatnonzero(np.isin(s[:-1], [MAINTENANCE_STATE, OFFLINE_STATE]) & (s[1:] != s[:-1]))
        assert (g[UPTIME].to_numpy()[ends + 1] == 0).all()
        reboots += len(ends)
    assert reboots > 0
    assert df[UPTIME].max() > 0


def test_states_last_minutes_to_hours_and_critical_follows_a_ramp(
    fleet: tuple[FleetSimulator, pd.DataFrame],
) -> None:
    _, df = fleet
    r = runs(df)
    inner = r[~r.edge & r.state.isin(EPISODE_STATES)]
    minutes = (inner["last"] - inner["first"]) / pd.Timedelta(minutes=1) + 5
    assert (minutes >= 10).all(), inner[minutes < 10]
    critical = r[(r.state == CRITICAL) & ~r.edge]
    assert len(critical) >= 20, "a two-week 30-server fleet needs plenty of incidents to learn from"
    assert (critical.before == HEAVY).all()
    ramps = r[(r.state == HEAVY) & r.server.isin(critical.server)]
    ramp_minutes = (ramps["last"] - ramps["first"]) / pd.Timedelta(minutes=1)
    assert 60 <= ramp_minutes.median() <= 180


def test_the_ramp_is_visible_30_minutes_before_critical(fleet: tuple[FleetSimulator, pd.DataFrame]) -> None:
    """An early-warning model needs the lead-up: key metrics rise well before critical starts."""
    _, df = fleet
    r = runs(df)
    critical = r[(r.state == CRITICAL) & ~r.edge]
    key = {DB: IOWAIT, ML: USER, WEB: FRONT_CW}
    rises = []
    for row in critical.itertuples():
        g = df[df[SERVER_NAME] == row.server].set_index(TIMESTAMP)
        metric = key.get(g[PROFILE].iloc[0], USER)
        lead = g.loc[row.first - pd.Timedelta(minutes=45) : row.first - pd.Timedelta(minutes=30), metric]
        baseline = g.loc[g[STATE].isin(STATES[:3]), metric].median()
        rises.append(lead.mean() > 1.2 * baseline)
    assert np.mean(rises) >= 0.8


def test_incidents_hit_the_metrics_that_matter_for_each_profile(
    fleet: tuple[FleetSimulator, pd.DataFrame],
) -> None:
    _, df = fleet
    mean = df.groupby([PROFILE, STATE])[[IOWAIT, USER, MEM, FRONT_CW]].mean()

    def rise(profile: str, metric: str) -> float:
        return mean.loc[(profile, CRITICAL), metric] - mean.loc[(profile, STATES[0]), metric]

    assert rise(DB, IOWAIT) > 3 * rise(ML, IOWAIT)
    assert rise(ML, USER) > 2 * rise(DB, USER)
    assert rise(ML, MEM) > rise(WEB, MEM)
    assert rise(WEB, FRONT_CW) > 5 * rise(ML, FRONT_CW)


def test_database_incidents_cascade_to_dependants(fleet: tuple[FleetSimulator, pd.DataFrame]) -> None:
    sim, df = fleet
    wide = df.pivot(index=TIMESTAMP, columns=SERVER_NAME, values=STATE)
    during, outside = [], []
    for i, spec in enumerate(sim.fleet):
        ups = [sim.fleet[u] for u in sim.upstreams[i] if u >= 0 and sim.fleet[u].profile == DB]
        if not ups:
            continue
        own = wide[spec.name].isin(STATES[:3])  # the dependant itself is fine
        upstream_critical = wide[ups[0].name] == CRITICAL
        cw = df[df[SERVER_NAME] == spec.name].set_index(TIMESTAMP)[BACK_CW]
        during.append(cw[own & upstream_critical])
        outside.append(cw[own & ~upstream_critical])
    during_mean, outside_mean = pd.concat(during).mean(), pd.concat(outside).mean()
    assert len(pd.concat(during)) > 10
    assert during_mean > 5 * outside_mean


def test_problem_children_have_more_incidents(fleet: tuple[FleetSimulator, pd.DataFrame]) -> None:
    sim, df = fleet
    problem = {s.name for s in sim.fleet if s.problem_child}
    assert 0 < len(problem) < len(sim.fleet) / 3
    share = df.assign(p=df[SERVER_NAME].isin(problem)).groupby("p")[STATE].apply(lambda s: (s == HEAVY).mean())
    assert share[True] > 2 * share[False]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 600))
def test_n_servers_keep_the_default_proportions(n: int) -> None:
    fleet = build_fleet(SimulationConfig(servers=n))
    assert len(fleet) == n
    assert len({s.name for s in fleet}) == n
    counts = pd.Series([s.profile for s in fleet]).value_counts()
    for profile in PROFILES:
        share = n * profile.default_count / DEFAULT_FLEET_SIZE
        assert abs(counts.get(profile.name, 0) - share) <= 1 + (n < 20), profile.name
        names = sorted(s.name for s in fleet if s.profile == profile.name)
        assert names == [profile.hostname(i) for i in range(1, len(names) + 1)]
    if n >= len(PROFILES):
        assert len(counts) == len(PROFILES)


def test_90_servers_is_the_default_fleet() -> None:
    counts = pd.Series([s.profile for s in build_fleet(SimulationConfig(servers=90))]).value_counts()
    assert counts.to_dict() == {p.name: p.default_count for p in PROFILES}


def test_fleet_file(tmp_path: Path) -> None:
    path = tmp_path / "fleet.csv"
    path.write_text("server_name,profile\n# comment\nPPDB007,\ncustomhost,database\nppweb900\n\n")
    fleet = load_fleet_file(path)
    assert fleet == [("ppdb007", None), ("customhost", DB), ("ppweb900", None)]
    df = simulate(SimulationConfig(fleet=fleet, hours=1))
    assert df.groupby(SERVER_NAME)[PROFILE].first().to_dict() == {"customhost": DB, "ppdb007": DB, "ppweb900": WEB}

    path.write_text("ppdb001\nppdb002,nosuch\n")
    with pytest.raises(ValueError, match=r"fleet.csv:2: unknown profile 'nosuch'"):
        load_fleet_file(path)
    path.write_text("ppdb001\nppweb001\nPPDB001\n")
    with pytest.raises(ValueError, match=r"fleet.csv:3: duplicate server ppdb001 \(first on line 1\)"):
        load_fleet_file(path)


def test_drifted_fleet_keeps_survivors_identical() -> None:
    base_cfg = SimulationConfig(servers=20, hours=48, interval="5min", seed=11)
    drift_cfg = base_cfg.model_copy(update={"add_servers": 4, "retire_servers": 3})
    base_sim, drift_sim = FleetSimulator(base_cfg), FleetSimulator(drift_cfg)
    base, drift = simulate(base_cfg), simulate(drift_cfg)
    base_names = [s.name for s in build_fleet(base_cfg)]
    drift_names = [s.name for s in build_fleet(drift_cfg)]
    survivors, retired = base_names[:-3], base_names[-3:]
    added = drift_names[len(survivors) :]
    assert drift_names[: len(survivors)] == survivors
    assert len(added) == 4 and not set(added) & set(base_names)
    assert set(drift[SERVER_NAME]) == set(survivors) | set(added) and not set(retired) & set(drift[SERVER_NAME])

    def upstream_names(sim: FleetSimulator) -> dict[str, tuple[str, ...]]:
        return {s.name: tuple(sim.fleet[u].name for u in sim.upstreams[i] if u >= 0) for i, s in enumerate(sim.fleet)}

    same_upstreams = upstream_names(base_sim), upstream_names(drift_sim)
    compared = 0
    for name in survivors:
        a = base[base[SERVER_NAME] == name].reset_index(drop=True)
        b = drift[drift[SERVER_NAME] == name].reset_index(drop=True)
        pd.testing.assert_series_equal(a[STATE], b[STATE])
        assert (a[SERVER_ID] == b[SERVER_ID]).all()
        if same_upstreams[0][name] == same_upstreams[1][name]:
            pd.testing.assert_frame_equal(a, b)
            compared += 1
    assert compared >= len(survivors) // 2


def test_healthy_scenario_keeps_a_share_free_of_trouble() -> None:
    config = SimulationConfig(servers=20, hours=7 * 24, scenario="healthy", scenario_fraction=0.5, seed=5)
    sim = FleetSimulator(config)
    df = simulate(config)
    quiet = {sim.fleet[i].name for i in np.flatnonzero(sim.quiet)}
    assert len(quiet) == 10
    states = df[df[SERVER_NAME].isin(quiet)][STATE]
    assert not states.isin([HEAVY, CRITICAL, RECOVERY, OFFLINE_STATE]).any()
    assert df[~df[SERVER_NAME].isin(quiet)][STATE].isin([HEAVY]).any()


@pytest.mark.parametrize(("scenario", "final"), [("degrading", HEAVY), ("critical", CRITICAL)])
def test_forced_scenarios_end_on_their_path(scenario: str, final: str) -> None:
    config = SimulationConfig(servers=20, hours=12, scenario=scenario, scenario_fraction=0.3, seed=2)
    df = simulate(config)
    last = df.groupby(SERVER_NAME).tail(1)
    assert (last[STATE] == final).sum() >= 6
    forced = last[last[STATE] == final][SERVER_NAME]
    before = df[df[SERVER_NAME].isin(forced) & (df[TIMESTAMP] == df[TIMESTAMP].max() - pd.Timedelta(hours=1))]
    assert (before[STATE] == HEAVY).all()  # the ramp leads up to the end of the period


def test_scenario_start_hours_places_the_path_for_a_live_feed() -> None:
    config = SimulationConfig(
        servers=10,
        hours=math.inf,
        interval="5min",
        scenario="critical",
        scenario_fraction=0.2,
        scenario_start_hours=0.25,
        seed=4,
    )
    frames = []
    for i, frame in enumerate(FleetSimulator(config).ticks()):
        frames.append(frame)
        if i == 40:
            break
    df = pd.concat(frames)
    t0 = df[TIMESTAMP].min()
    crit = df[df[STATE] == CRITICAL]
    assert crit[SERVER_NAME].nunique() == 2
    assert crit[TIMESTAMP].min() == t0 + pd.Timedelta(hours=2.25)


def test_live_ticks_equal_batch_rows() -> None:
    batch_cfg = SimulationConfig(servers=5, hours=1.1, interval="5s", seed=9)
    live_cfg = batch_cfg.model_copy(update={"hours": math.inf})
    batch = simulate(batch_cfg)
    sim = FleetSimulator(live_cfg)
    ticks = []
    for i, frame in enumerate(sim.ticks()):
        if i >= 715:
            ticks.append(frame)
        if i == 725:  # across the first block boundary (720 ticks at 5 s)
            break
    live = pd.concat(ticks).sort_values([SERVER_NAME, TIMESTAMP]).reset_index(drop=True)
    want = batch[batch[TIMESTAMP].isin(live[TIMESTAMP])].reset_index(drop=True)
    pd.testing.assert_frame_equal(live, want)
    blocks = pd.concat(FleetSimulator(batch_cfg).blocks()).sort_values([SERVER_NAME, TIMESTAMP])
    pd.testing.assert_frame_equal(blocks.reset_index(drop=True), batch)


def test_write_small_dataset_single_file(tmp_path: Path) -> None:
    config = SimulationConfig(servers=9, hours=6, seed=3)
    out = tmp_path / "data"
    meta = write_dataset(config, out, progress=False)
    assert (out / METRICS_FILE).is_file() and not (out / METRICS_DIR).exists()
    df = read_metrics(out)
    pd.testing.assert_frame_equal(df, simulate(config))
    assert_contract(df)
    saved = read_json(out / METADATA_FILE)
    assert saved == json.loads(json.dumps(meta, default=str))
    assert saved["rows"] == len(df) == sum(saved["state_counts"].values())
    assert saved["files"] == [METRICS_FILE]
    assert {f["server_name"] for f in saved["fleet"]} == set(df[SERVER_NAME])
    assert saved["state_counts"] == df[STATE].value_counts().reindex(STATES, fill_value=0).to_dict()
    mapping = ServerMapping.load(out / MAPPING_FILE)
    assert all(mapping.id_of(n) == server_id(n) for n in df[SERVER_NAME].unique())


def test_write_long_dataset_partitioned_by_day(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sim_mod, "ROWS_PER_CHUNK", 2000)  # several row groups (server chunks) per file
    config = SimulationConfig(servers=7, hours=62, seed=3, start="2026-03-01T12:00:00Z")
    out = tmp_path / "data"
    meta = write_dataset(config, out, progress=False)
    days = ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"]
    assert meta["files"] == [f"{METRICS_DIR}/date={d}/part-0.parquet" for d in days]
    df = read_metrics(out)
    for file in meta["files"]:
        part = read_metrics(out / file)
        assert (part[TIMESTAMP].dt.strftime("%Y-%m-%d") == file.split("=")[1][:10]).all()
        assert part.equals(part.sort_values([SERVER_NAME, TIMESTAMP], kind="stable"))
    whole = df.sort_values([SERVER_NAME, TIMESTAMP], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(whole, simulate(config))


def test_a_crash_leaves_no_partial_dataset_and_the_old_one_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "data"
    write_dataset(SimulationConfig(servers=3, hours=2, seed=1), out, progress=False)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(sim_mod, "_metadata", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_dataset(SimulationConfig(servers=3, hours=30, seed=2), out, progress=False)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_dataset(SimulationConfig(servers=3, hours=2, seed=2), tmp_path / "fresh", progress=False)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
