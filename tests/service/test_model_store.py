"""Issue 9, defects 1 and 11 against the real service: BentoML store imports keyed by the weights' digest, a
recreated or deleted tracking DB, a corrupted import, /readyz without a model, /metrics families once."""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
import requests
import torch

from tests.service.conftest import ADMIN_TOKEN, FEED, Served, register_version, store_env
from tests.service.test_service import recent, rows
from tftmon.model.network import WEIGHTS_FILE, load_model, save_model

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _registered_store(root: Path, model_dir: Path, history: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh sqlite registry under root with model_dir as its version 1, promoted."""
    from tftmon.ops import registry

    for key, value in store_env(root).items():
        monkeypatch.setenv(key, value)
    mlflow.set_tracking_uri(store_env(root)["MLFLOW_TRACKING_URI"])
    version = register_version(model_dir, history)
    registry.promote(version, force=True, reason="store tests")
    return version


def _p90(service: Served, history: pd.DataFrame, server: str) -> float:
    body = {"rows": rows(recent(history, [server]))}
    response = requests.post(f"{service.url}/predict", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]["horizons"]["30min"]["cpu_user_pct"]["p90"]


def _reload(service: Served) -> requests.Response:
    return requests.post(f"{service.url}/admin/reload", headers=ADMIN, timeout=120)


def _metric_families(service: Served) -> tuple[Counter[str], list[str]]:
    text = requests.get(f"{service.url}/metrics", timeout=10).text
    families = Counter(re.findall(r"^# TYPE (tftmon_\w+)", text, flags=re.MULTILINE))
    return families, re.findall(r"^tftmon_model_info\{[^}]*\} 1\.0$", text, flags=re.MULTILINE)


@pytest.fixture
def other_model_dir(model_store: dict, tmp_path: Path) -> Path:
    """The store's model with other (still finite) weights: same shape, another digest and answer."""
    model = load_model(model_store["model_dir"])
    with torch.no_grad():
        for parameter in model.network.parameters():
            parameter.mul_(1.5)
    save_model(model, tmp_path / "other_model")
    return tmp_path / "other_model"


def test_store_keyed_by_digest_corrupt_import_and_deleted_db(
    model_store: dict, other_model_dir: Path, fleet_history: pd.DataFrame, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")
    server = model_store["servers"][0]
    served_root, other_root = tmp_path / "served", tmp_path / "other"
    assert _registered_store(served_root, model_store["model_dir"], fleet_history, monkeypatch) == "1"
    env: dict[str, Any] = {**store_env(served_root), "TFTMON_ADMIN_TOKEN": ADMIN_TOKEN}
    service = Served(env, tmp_path / "serve.log", served_root / "bentoml")
    try:
        service.wait_ready()
        assert requests.get(f"{service.url}/readyz", timeout=5).status_code == 200
        disabled = requests.post(f"{service.url}/feed", json={"rows": []}, headers=FEED, timeout=10)
        assert disabled.status_code == 403 and "TFTMON_FEED_TOKEN" in disabled.json()["fix"], disabled.text
        first = _p90(service, fleet_history, server)
        families, info = _metric_families(service)
        assert families and set(families.values()) == {1}, families
        assert info == ['tftmon_model_info{version="1"} 1.0']

        # Defect 1: the tracking DB recreated with another version 1; the service must serve the new one.
        assert _registered_store(other_root, other_model_dir, fleet_history, monkeypatch) == "1"
        os.replace(other_root / "mlflow.db", served_root / "mlflow.db")
        reloaded = _reload(service)
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json()["changed"] is True
        assert _p90(service, fleet_history, server) != first
        imports = sorted(p.name for p in (served_root / "bentoml" / "models" / "tftmon").iterdir() if p.is_dir())
        assert len(imports) == 2 and all(name.startswith("v1-") for name in imports), imports
        # Defect 11: still each family once, and one model_info series at 1.
        families, info = _metric_families(service)
        assert set(families.values()) == {1}, families
        assert info == ['tftmon_model_info{version="1"} 1.0']
        assert _reload(service).json()["changed"] is False
        service.stop()

        # A corrupted import is refused at load, removed from the store, and imported afresh on reload.
        for weights in (served_root / "bentoml" / "models" / "tftmon").rglob(WEIGHTS_FILE):
            weights.write_bytes(b"corrupt")
        service = Served(env, tmp_path / "serve2.log", served_root / "bentoml")
        service.wait_ready()
        assert requests.get(f"{service.url}/health", timeout=5).json()["model_loaded"] is False
        assert requests.get(f"{service.url}/readyz", timeout=5).status_code == 503
        reloaded = _reload(service)
        assert reloaded.status_code == 200, reloaded.text
        assert requests.get(f"{service.url}/readyz", timeout=5).status_code == 200
        assert _p90(service, fleet_history, server) != first

        # Defect 1 (deleted DB): reload refuses instead of answering from the unlinked file.
        (served_root / "mlflow.db").unlink()
        gone = _reload(service)
        assert gone.status_code == 409 and "is gone" in gone.json()["error"], gone.text
        assert not (served_root / "mlflow.db").exists()
    finally:
        service.stop()
