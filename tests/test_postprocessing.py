import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from sktransfer import (
    DeepFeatureExtractor,
    LayerwiseNormalizer,
    TernaryDiscretizer,
    make_full_network_embedding,
)
from sktransfer.postprocessing import FullNetworkScaler, full_network_layers


def test_each_block_gets_unit_norm():
    X = np.array([[3.0, 4.0, 0.0, 10.0, 0.0], [0.0, 0.0, 0.0, 1.0, 1.0]])
    out = LayerwiseNormalizer(block_sizes=[2, 3]).fit_transform(X)
    np.testing.assert_allclose(out[0], [0.6, 0.8, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(out[1, :2], [0.0, 0.0])  # a zero block stays zero
    np.testing.assert_allclose(np.linalg.norm(out[1, 2:]), 1.0)


def test_blocks_from_feature_names():
    frame = pd.DataFrame([[3.0, 4.0, 5.0]], columns=["a__avg0", "a__avg1", "b__f0"])
    normalizer = LayerwiseNormalizer().fit(frame)
    assert normalizer.blocks_ == [slice(0, 2), slice(2, 3)]


def test_block_sizes_must_add_up():
    with pytest.raises(ValueError, match=r"add up to 4 columns, but X has 5"):
        LayerwiseNormalizer(block_sizes=[2, 2]).fit(np.ones((2, 5)))


def test_layerwise_normalizer_after_an_extractor(rgb_images):
    extractor = DeepFeatureExtractor(
        "resnet18", weights=None, layers=["layer1", "layer4"], random_state=0
    ).set_output(transform="pandas")
    pipe = make_pipeline(extractor, LayerwiseNormalizer()).fit(rgb_images)
    out = np.asarray(pipe.transform(rgb_images))
    np.testing.assert_allclose(np.linalg.norm(out[:, :64], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out[:, 64:], axis=1), 1.0, rtol=1e-5)


def test_ternary_thresholds():
    X = np.array([[-0.3, -0.25, 0.0, 0.15, 0.16]])
    np.testing.assert_array_equal(TernaryDiscretizer().fit_transform(X), [[-1, 0, 0, 0, 1]])
    with pytest.raises(ValueError, match=r"low \(1\) must not exceed high \(0\)"):
        TernaryDiscretizer(low=1, high=0).fit(X)


def test_full_network_embedding_pipeline(rgb_images):
    fne = make_full_network_embedding("resnet18", weights=None, random_state=0)
    assert fne[0].layers == [f"layer{i}.{j}" for i in range(1, 5) for j in (0, 1)]
    out = fne.fit_transform(rgb_images)
    assert out.shape == (6, 2 * (64 + 128 + 256 + 512))
    assert set(np.unique(out)) <= {-1.0, 0.0, 1.0}
    with pytest.raises(ValueError, match="taps must be 'blocks' or 'conv'; got 'all'"):
        make_full_network_embedding("resnet18", taps="all", weights=None)


def test_constant_training_feature_is_zero_on_every_row():
    train = np.array([[0.0, 3.0, 1.0], [2.0, 3.0, 1.0], [4.0, 3.0, 1.0]])
    test = np.array([[2.0, 3.5, 1.0], [6.0, 2.0, 0.0]])
    scaler = FullNetworkScaler().fit(train)
    np.testing.assert_array_equal(scaler.constant_features_, [False, True, True])
    out = scaler.transform(test)
    np.testing.assert_array_equal(out[:, 1:], 0.0)
    plain = StandardScaler().fit(train).transform(test)
    np.testing.assert_allclose(out[:, 0], plain[:, 0])
    assert plain[0, 1] == 0.5  # what StandardScaler gives: the ternary code would be 1
    # Incremental fits see the same constant features as one fit on all the rows.
    incremental = FullNetworkScaler().partial_fit(train[:2]).partial_fit(train[2:])
    np.testing.assert_array_equal(incremental.constant_features_, scaler.constant_features_)
    refit = FullNetworkScaler().fit(test).fit(train)
    np.testing.assert_array_equal(refit.constant_features_, scaler.constant_features_)


def test_full_network_layers_tap_every_conv_and_hidden_linear_after_its_unit():
    network = nn.Sequential(
        nn.Conv2d(3, 4, 3),  # "0": with its BN and ReLU -> "2"
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(4, 5, 1), nn.BatchNorm2d(5), nn.ReLU6()),  # a unit: "3"
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 6),  # "6", with its ReLU -> "7"
        nn.ReLU(),
        nn.Linear(6, 2),  # the source logits: left out
    )
    assert full_network_layers(network) == ["2", "3", "7"]


def test_full_network_layers_of_known_networks():
    mobilenet = full_network_layers("mobilenet_v2")
    assert len(mobilenet) == 52  # every Conv2d of MobileNetV2, none of its Linear
    assert mobilenet[:4] == [
        "features.0",
        "features.1.conv.0",
        "features.1.conv.2",
        "features.2.conv.0",
    ]
    assert "classifier.1" not in mobilenet
    resnet = full_network_layers("resnet18")
    # Outside an nn.Sequential only the normalisation follows: a block's ReLU runs twice.
    assert resnet[:3] == ["bn1", "layer1.0.bn1", "layer1.0.bn2"]
    assert "layer2.0.downsample" in resnet and len(resnet) == 20
