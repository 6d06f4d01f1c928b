"""rank_layers: one table of layers (and backbones), best first."""

import numpy as np
import pandas as pd
import pytest

from sktransfer.analysis import leep_score, logme_score, nce_score, rank_layers, sfda_score


@pytest.fixture
def task():
    rng = np.random.default_rng(0)
    y = np.repeat(["ant", "bee", "wasp"], 10)
    onehot = (y[:, None] == ["ant", "bee", "wasp"]).astype(float)
    layers = {
        "early": rng.normal(size=(30, 4)),
        "middle": onehot + 1.0 * rng.normal(size=(30, 3)),
        "late": onehot + 0.2 * rng.normal(size=(30, 3)),
    }
    return layers, y


def test_layers_ranked_by_first_score(task):
    layers, y = task
    table = rank_layers(layers, y, scores=["logme", "h_score"])
    assert isinstance(table, pd.DataFrame)
    assert table["layer"].tolist() == ["late", "middle", "early"]
    assert table["rank"].tolist() == [1, 2, 3]
    assert table.set_index("layer")["depth"].to_dict() == {"early": 0, "middle": 1, "late": 2}
    assert table.set_index("layer").loc["late", "logme"] == pytest.approx(
        logme_score(layers["late"], y)
    )
    assert {"logme_seconds", "h_score_seconds", "n_features"} <= set(table.columns)


def test_probe_column_and_backbones(task):
    layers, y = task
    other = {"a": layers["early"], "b": layers["late"]}
    theta = np.full((30, 4), 0.25)
    table = rank_layers(
        {"net1": layers, "net2": other},
        y,
        scores=["h_score", "leep"],
        source_probabilities={"net1": theta, "net2": theta},
        probe=True,
    )
    assert len(table) == 5
    assert set(table["backbone"]) == {"net1", "net2"}
    assert table["probe_accuracy"].between(0, 1).all()
    assert table["leep"].to_numpy() == pytest.approx(leep_score(theta, y))
    best = table.iloc[0]
    assert best["layer"] in ("late", "b")


def test_every_new_score_and_nce(task):
    layers, y = task
    theta = np.eye(4)[np.arange(30) % 4] * 0.7 + 0.075
    table = rank_layers(
        layers,
        y,
        scores=["sfda", "nleep", "transrate", "gbc", "h_score_shrunk", "nce"],
        source_probabilities=theta,
    )
    assert table["layer"].iloc[0] == "late"
    assert table.set_index("layer").loc["middle", "sfda"] == pytest.approx(
        sfda_score(layers["middle"], y)
    )
    assert table["nce"].to_numpy() == pytest.approx(nce_score(np.arange(30) % 4, y))
    assert {"nce_seconds", "gbc_seconds"} <= set(table.columns)


def test_errors(task):
    layers, y = task
    with pytest.raises(ValueError, match="Unknown score"):
        rank_layers(layers, y, scores=["accuracy"])
    with pytest.raises(ValueError, match="source_probabilities"):
        rank_layers(layers, y, scores=["leep"])
    with pytest.raises(ValueError, match=r"\['nce'\] need"):
        rank_layers(layers, y, scores=["logme", "nce"])
    with pytest.raises(ValueError, match="mixes"):
        rank_layers({"a": layers, "b": layers["late"]}, y)


def test_images_go_through_one_extractor_pass_per_backbone():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)
    y = np.repeat([0, 1], 4)
    table = rank_layers(
        images,
        y,
        scores=["logme", "leep"],
        backbones=["resnet18"],
        layers=["layer1", "layer4"],
        weights=None,
        random_state=0,
    )
    assert sorted(table["layer"]) == ["layer1", "layer4"]
    assert table["backbone"].unique().tolist() == ["resnet18"]
    assert table["leep"].nunique() == 1
    assert table.set_index("layer").loc["layer4", "n_features"] == 512
