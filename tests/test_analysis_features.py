"""extract_layer_features: every layer from one pass, equal to tapping them one by one."""

import numpy as np
import pytest
from scipy.special import softmax

from sktransfer import DeepFeatureExtractor
from sktransfer.analysis import extract_layer_features, logits_layer

IMAGES = np.random.default_rng(0).integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)


def test_one_pass_equals_one_layer_at_a_time():
    features, probabilities = extract_layer_features(
        IMAGES,
        "resnet18",
        ["layer2", "layer4"],
        source_probabilities=True,
        weights=None,
        random_state=0,
    )
    assert list(features) == ["layer2", "layer4"]
    for layer, values in features.items():
        alone = DeepFeatureExtractor("resnet18", weights=None, layers=layer, random_state=0)
        np.testing.assert_allclose(values, alone.fit_transform(IMAGES), rtol=1e-5, atol=1e-6)
    logits = DeepFeatureExtractor("resnet18", weights=None, layers="fc", random_state=0)
    np.testing.assert_allclose(
        probabilities, softmax(logits.fit_transform(IMAGES).astype(float), axis=1), atol=1e-6
    )
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)


def test_default_layers_are_the_blocks():
    features = extract_layer_features(IMAGES, "resnet18", weights=None, random_state=0)
    assert list(features)[-1] == "layer4.1"
    assert all(f.shape[0] == 5 for f in features.values())


def test_logits_layer():
    assert logits_layer("mobilenet_v2") == "classifier.1"
    assert logits_layer("efficientnet_lite0") == "_fc"
    with pytest.raises(ValueError, match="no nn.Linear"):
        import torch

        logits_layer(torch.nn.Conv2d(3, 3, 1))


def test_layers_passed_twice_is_an_error():
    with pytest.raises(TypeError, match="layers"):
        extract_layer_features(IMAGES, "resnet18", ["layer1"], layers=["layer2"])
