"""Tests for sktransfer.footprint: the figures add up, "not measured" without codecarbon,
the grid changes CO2 and never energy, no files or log lines, the skorch callback."""

from __future__ import annotations

import logging
import pickle
import sys
import time

import numpy as np
import pytest
from torch import nn

from sktransfer import FineTuneClassifier
from sktransfer.footprint import (
    NOT_MEASURED,
    FootprintCallback,
    FootprintRecord,
    footprint,
    resolve_grid,
)

#: Power the tracker is told to assume: RAM at a fixed 12 W, CPU at a 0 W TDP, so that an
#: idle block draws 12 W whatever the machine and its load.
KNOWN_POWER = {"force_cpu_power": 0, "force_ram_power": 12}


@pytest.fixture
def codecarbon():
    return pytest.importorskip("codecarbon", reason="the optional codecarbon is not installed")


@pytest.fixture
def without_codecarbon(monkeypatch):
    """codecarbon as if it were not installed (its import raises ImportError)."""
    monkeypatch.setitem(sys.modules, "codecarbon", None)


def test_energy_is_power_times_time(codecarbon):
    with footprint(carbon_intensity=100.0, codecarbon_params=KNOWN_POWER) as record:
        time.sleep(1.0)
    assert record.seconds == pytest.approx(1.0, abs=0.1)
    # 12 W over the block; the tracker's start and stop measurements are a few ms off it
    assert record.energy_kwh * 3.6e6 == pytest.approx(12 * record.seconds, rel=0.05)
    assert record.power_w == pytest.approx(12, rel=0.05)
    assert record.co2_kg == pytest.approx(record.energy_kwh * 100.0 / 1000)
    assert record.sources["ram"] == "estimate: 12 W set by the user"
    assert record.sources["cpu"].startswith("estimate: CPU load of this process x TDP 0")
    assert record.how == "estimate"
    cells = record.cells()
    assert cells["P_AVG"] == f"{record.power_w:.1f} (est.)"
    assert cells["E_CO2"] == f"{record.co2_kg:.3g} (est.)"
    assert cells["energy"] == f"{record.energy_kwh:.3g} (est.)"


def test_not_measured_without_codecarbon(without_codecarbon):
    with footprint(carbon_intensity=300.0) as record:
        time.sleep(0.01)
    assert record.seconds >= 0.01
    assert record.energy_kwh is None and record.power_w is None and record.co2_kg is None
    assert "pip install 'sktransfer[footprint]'" in record.note
    cells = record.cells()
    assert cells["P_AVG"] == cells["energy"] == cells["E_CO2"] == NOT_MEASURED
    assert cells["T"] == f"{record.seconds:.1f}"
    data = record.to_dict()
    assert data["energy_kwh"] is None and data["co2_kg"] is None and data["how"] == NOT_MEASURED
    # a country cannot be looked up either: said so, not a made-up intensity
    intensity, grid = resolve_grid(country="FRA")
    assert intensity is None and NOT_MEASURED in grid


def test_grid_changes_co2_not_energy(codecarbon):
    # two trackers around the same block, one per grid setting: the same power; the outer
    # block also holds the inner tracker's start and stop, so compare power, not energy
    with footprint(country="FRA", codecarbon_params=KNOWN_POWER) as france:
        with footprint(carbon_intensity=800.0, codecarbon_params=KNOWN_POWER) as coal:
            time.sleep(1.0)
    assert coal.power_w == pytest.approx(france.power_w, rel=0.1)
    assert coal.power_w == pytest.approx(12, rel=0.1)
    assert coal.co2_kg / coal.energy_kwh == pytest.approx(0.8)
    assert france.grid == "France (FRA), codecarbon's energy mix"
    assert 10 < france.carbon_intensity < 200  # France's mostly nuclear grid
    poland = france.in_grid(country="pol")
    assert poland.energy_kwh == france.energy_kwh and poland.power_w == france.power_w
    assert poland.co2_kg / france.co2_kg == pytest.approx(
        poland.carbon_intensity / france.carbon_intensity
    )
    assert poland.co2_kg > 3 * france.co2_kg
    world = france.in_grid()
    assert world.grid.startswith("world average") and world.energy_kwh == france.energy_kwh


def test_no_files_and_no_log_lines(codecarbon, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    logger = logging.getLogger("codecarbon")
    level = logger.level
    # codecarbon also logs each periodic measurement, from its own thread
    with footprint(codecarbon_params={**KNOWN_POWER, "measure_power_secs": 0.1}):
        time.sleep(0.5)
    assert list(tmp_path.iterdir()) == []  # no emissions.csv in the working folder
    captured = capfd.readouterr()
    assert "codecarbon" not in captured.err + captured.out
    assert logger.level == level


def test_records_add_up():
    first = FootprintRecord(seconds=2.0, energy_kwh=1e-3, carbon_intensity=50.0, grid="g")
    second = FootprintRecord(seconds=1.0, energy_kwh=2e-3, carbon_intensity=50.0, grid="g")
    both = first + second
    assert both.seconds == 3.0 and both.energy_kwh == pytest.approx(3e-3)
    assert both.power_w == pytest.approx(3e-3 * 3.6e6 / 3.0)  # 3.6 W
    assert both.co2_kg == pytest.approx(3e-3 * 50 / 1000)
    unmeasured = FootprintRecord(seconds=1.0, carbon_intensity=50.0, note="no tracker")
    assert (first + unmeasured).energy_kwh is None  # part unmeasured: the sum is too
    with pytest.raises(ValueError, match="different grids"):
        first + FootprintRecord(seconds=1.0, energy_kwh=1e-3, carbon_intensity=60.0)
    assert FootprintRecord.from_dict(both.to_dict()) == both


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(country="FRA", carbon_intensity=50), "either country or carbon_intensity"),
        (dict(country="FR"), "ISO 3166 alpha-3 code.*Got 'FR'"),
        (dict(carbon_intensity=-1), "0 or more. Got -1"),
        (dict(carbon_intensity="high"), "finite number.*Got 'high'"),
        (dict(tracking_mode="gpu"), r"\('process', 'machine'\). Got 'gpu'"),
    ],
)
def test_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        with footprint(**kwargs):
            pass


def test_unknown_country_suggests_close_codes(codecarbon):
    with pytest.raises(ValueError, match="'FRX' is not in codecarbon's table.*'FRA'"):
        resolve_grid(country="FRX")


def _tiny_classifier(callback, **params):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    params = {"max_epochs": 2, **params}
    return FineTuneClassifier(
        net, weights=None, random_state=0, callbacks=[("footprint", callback)], **params
    )


def test_callback_records_each_epoch(codecarbon, one_thread):
    X = np.random.default_rng(0).random((8, 12, 12, 3), dtype=np.float32)
    callback = FootprintCallback(carbon_intensity=100.0, codecarbon_params=KNOWN_POWER)
    clf = _tiny_classifier(callback).fit(X, [0, 1] * 4)
    energies = clf.history_[:, "energy_kwh"]
    assert len(energies) == 2 and all(e > 0 for e in energies)
    assert clf.history_[:, "co2_kg"] == pytest.approx([e * 0.1 for e in energies])
    total = dict(clf.net_.callbacks_)["footprint"].footprint_
    assert total.energy_kwh == pytest.approx(sum(energies))
    assert not hasattr(callback, "footprint_")  # the estimator trained a copy
    pickle.loads(pickle.dumps(clf))  # no running tracker left behind


def test_callback_closes_the_epoch_early_stopping_ended(codecarbon, one_thread):
    X = np.random.default_rng(0).random((20, 12, 12, 3), dtype=np.float32)
    callback = FootprintCallback(carbon_intensity=100.0, codecarbon_params=KNOWN_POWER)
    clf = _tiny_classifier(
        callback, max_epochs=30, lr=1e-9, early_stopping=True, n_iter_no_change=1
    ).fit(X, [0, 1] * 10)
    assert clf.n_epochs_ < 30  # stopped early, from early stopping's on_epoch_end
    energies = clf.history_[:, "energy_kwh"]
    assert len(energies) == clf.n_epochs_  # the last epoch too
    total = dict(clf.net_.callbacks_)["footprint"].footprint_
    assert total.energy_kwh == pytest.approx(sum(energies))
    pickle.loads(pickle.dumps(clf))


def test_callback_without_codecarbon(without_codecarbon, one_thread):
    X = np.random.default_rng(0).random((8, 12, 12, 3), dtype=np.float32)
    clf = _tiny_classifier(FootprintCallback()).fit(X, [0, 1] * 4)
    assert "energy_kwh" not in clf.history_[-1]
    total = dict(clf.net_.callbacks_)["footprint"].footprint_
    assert total.energy_kwh is None and total.seconds > 0
    assert total.cells()["E_CO2"] == NOT_MEASURED
