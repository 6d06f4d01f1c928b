"""Tests for the report's "feature extraction against light fine-tuning" table: the
lecture's columns in report.json, report.md and report.html, with and without codecarbon."""

from __future__ import annotations

import json
import sys

import pytest
from tiny_networks import tiny_network

from sktransfer.footprint import NOT_MEASURED
from sktransfer.report import build_report


def run(tmp_path, **params):
    out = tmp_path / "out"
    results = build_report(
        None,
        backbone=tiny_network(),
        weights=None,
        out=out,
        cache=tmp_path / "cache",
        max_images=60,
        verbose=0,
        **params,
    )
    return out, results


def test_table_measured(tmp_path, one_thread):
    pytest.importorskip("codecarbon", reason="the optional codecarbon is not installed")
    out, results = run(tmp_path, budget_minutes=1, carbon_intensity=100.0)
    assert results["fine_tuning"] is not None, results["budget_notes"]
    extraction, forward_pass, finetune = results["trade_off"]["rows"]
    for row in (extraction, forward_pass, finetune):
        assert row["energy_kwh"] > 0 and row["seconds"] > 0
        assert row["co2_kg"] == pytest.approx(row["energy_kwh"] * 100.0 / 1000)
        assert row["power_w"] == pytest.approx(row["energy_kwh"] * 3.6e6 / row["seconds"])
    # the extraction row is the pass plus the classifier fits
    assert extraction["energy_kwh"] > forward_pass["energy_kwh"]
    assert extraction["seconds"] > forward_pass["seconds"]
    layer = results["feature_extraction"]["layer"]
    probe = next(r["probe_accuracy"] for r in results["layers"] if r["layer"] == layer)
    assert extraction["v_acc"] == probe and finetune["v_acc"] is None
    assert extraction["t_acc"] == results["feature_extraction"]["accuracy"]
    n_layers, folds = len(results["layers"]), 3  # 60 digits: at least 3 per class
    assert extraction["n_exp"] == (folds + 1) * n_layers and finetune["n_exp"] == 1
    page = (out / "report.html").read_text()
    for column in ("V_ACC", "T_ACC", "P_AVG (W)", "energy (kWh)", "E_CO2 (kg)", "n_EXP"):
        assert f"<th>{column}</th>" in page
    assert f"<td>{extraction['power_w']:.1f} (est.)</td>" in page or " (meas.)</td>" in page
    assert "set by the user: 100 g CO2e/kWh" in page
    stored = json.loads((out / "report.json").read_text())
    assert stored["trade_off"]["rows"][0]["energy_kwh"] == extraction["energy_kwh"]


def test_table_not_measured_without_codecarbon(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "codecarbon", None)
    out, results = run(tmp_path, finetune=False)
    rows = results["trade_off"]["rows"]
    assert len(rows) == 2  # no fine-tuning row
    assert all(row["energy_kwh"] is None and row["co2_kg"] is None for row in rows)
    assert all(row["seconds"] > 0 for row in rows)
    markdown = (out / "report.md").read_text()
    table = markdown.split("## Feature extraction against light fine-tuning")[1]
    first_row = next(line for line in table.splitlines() if line.startswith("| feature"))
    assert first_row.count(NOT_MEASURED) == 3  # P_AVG, energy, E_CO2
    assert "pip install 'sktransfer[footprint]'" in table
    stored = json.loads((out / "report.json").read_text())
    assert stored["trade_off"]["rows"][0]["energy_kwh"] is None  # null, never 0


def test_bad_grid_fails_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="either country or carbon_intensity"):
        run(tmp_path, country="FRA", carbon_intensity=50.0)
    assert not (tmp_path / "out").exists()
