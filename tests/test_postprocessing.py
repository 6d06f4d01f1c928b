import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import make_pipeline

from sktransfer import (
    DeepFeatureExtractor,
    LayerwiseNormalizer,
    TernaryDiscretizer,
    make_full_network_embedding,
)


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
