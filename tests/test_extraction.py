import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from torch import nn

from sktransfer import DeepFeatureExtractor, load_image_folder


def small_extractor(**params):
    params = {"weights": None, "random_state": 0, **params}
    return DeepFeatureExtractor("resnet18", **params)


def test_layers_are_concatenated_with_their_slices(rgb_images):
    extractor = small_extractor(layers=["layer2", "layer4"])
    features = extractor.fit_transform(rgb_images)
    assert features.shape == (6, 128 + 512) and features.dtype == np.float32
    assert extractor.layer_slices_ == {"layer2": slice(0, 128), "layer4": slice(128, 640)}
    assert extractor.layer_shapes_["layer4"] == (512, 7, 7)
    alone = small_extractor(layers="layer4").fit_transform(rgb_images)
    np.testing.assert_allclose(features[:, 128:], alone, rtol=1e-5, atol=1e-6)


def test_default_layer_is_the_penultimate_features(rgb_images):
    extractor = small_extractor().fit(rgb_images)
    assert extractor.layers_ == ["flatten"]
    assert extractor.transform(rgb_images).shape == (6, 512)


def test_pooling_options(rgb_images):
    avgmax = small_extractor(layers="layer4", pooling="avgmax").fit_transform(rgb_images)
    avg = small_extractor(layers="layer4", pooling="avg").fit_transform(rgb_images)
    assert avgmax.shape == (6, 1024)
    np.testing.assert_allclose(avgmax[:, :512], avg, rtol=1e-5, atol=1e-6)
    flat = small_extractor(layers="layer4", pooling=None).fit_transform(rgb_images[:2])
    assert flat.shape == (2, 512 * 7 * 7)


def test_feature_names_and_pandas_output(rgb_images):
    extractor = small_extractor(layers=["layer3", "flatten"], pooling="avgmax").fit(rgb_images)
    names = extractor.get_feature_names_out()
    assert names[0] == "layer3__avg0" and names[256] == "layer3__max0"
    assert names[512] == "flatten__f0" and len(names) == extractor.n_features_out_
    frame = extractor.set_output(transform="pandas").transform(rgb_images[:2])
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == list(names)


def test_unknown_layer_lists_valid_ones(rgb_images):
    with pytest.raises(ValueError, match=r"\['layer9'\] not present.*Valid layers include.*layer4"):
        small_extractor(layers="layer9").fit(rgb_images)


def test_bad_parameters_are_rejected_before_any_work(rgb_images):
    with pytest.raises(ValueError, match="'pooling' parameter of DeepFeatureExtractor"):
        small_extractor(pooling="median").fit(rgb_images)
    with pytest.raises(ValueError, match="Unknown weights 'IMAGENET9K'"):
        DeepFeatureExtractor("resnet18", weights="IMAGENET9K").fit(rgb_images)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_an_error(rgb_images):
    with pytest.raises(ValueError, match="no CUDA GPU"):
        small_extractor(device="cuda").fit(rgb_images)


def test_transform_before_fit_and_kind_mismatch(rgb_images):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        small_extractor().transform(rgb_images)
    module = nn.Sequential(nn.Flatten(), nn.LazyLinear(4), nn.ReLU(), nn.Linear(4, 2))
    extractor = DeepFeatureExtractor(module, random_state=0).fit(np.random.rand(3, 5))
    with pytest.raises(ValueError, match="fitted on vectors but transform got array"):
        extractor.transform(rgb_images / 255.0)


def test_network_is_built_once_and_user_module_untouched(rgb_images):
    module = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    before = [p.detach().clone() for p in module.parameters()]
    extractor = DeepFeatureExtractor(module, layers="1").fit(rgb_images)
    network = extractor.network_
    extractor.transform(rgb_images)
    assert extractor.network_ is network
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters()))
    assert extractor.backbone_.module is not module


def test_images_from_paths_match_arrays(image_folder):
    paths, labels = load_image_folder(image_folder)
    extractor = small_extractor(layers="layer3", n_jobs=2).fit(paths)
    from_paths = extractor.transform(paths)
    from PIL import Image

    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    from_list = extractor.transform(arrays)
    np.testing.assert_allclose(from_paths, from_list, rtol=1e-5, atol=1e-6)


def test_clone_pickle_and_grid_search(rgb_images):
    X = np.concatenate([rgb_images, rgb_images[:, ::-1]])
    y = np.array(["cat", "dog"] * 6)
    extractor = small_extractor(layers="layer2")
    fitted = clone(extractor).fit(X)
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.transform(X), fitted.transform(X))
    search = GridSearchCV(
        make_pipeline(extractor, LogisticRegression(max_iter=200)),
        {"deepfeatureextractor__layers": ["layer1", "layer2"]},
        cv=2,
    ).fit(X, y)
    assert set(search.predict(X)) <= {"cat", "dog"}


@pytest.mark.real_weights
def test_real_weights_end_to_end_on_chelsea():
    skimage_data = pytest.importorskip("skimage.data")
    extractor = DeepFeatureExtractor("mobilenet_v2", layers="classifier.1")
    logits = extractor.fit_transform([skimage_data.chelsea()])
    assert extractor.weights_ == "MobileNet_V2_Weights.IMAGENET1K_V1"
    assert 281 <= int(logits.argmax()) <= 285
