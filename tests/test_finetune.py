"""Tests of FineTuneClassifier (sktransfer/finetune.py)."""

import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from tiny_networks import labelled_images as images
from tiny_networks import lazy_mlp
from torch import nn

from sktransfer import FineTuneClassifier
from sktransfer.devices import seeded

pytest.importorskip("peft", reason="LoRA tests need peft (pip install 'sktransfer[lora]')")

# Tiny networks: one torch thread (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_cnn():
    """Two blocks (a conv block, then a depthwise + pointwise block) and a 10-way classifier.

    Seeded: every call returns the same "pretrained" weights.
    """
    with seeded(0):
        return _tiny_cnn()


def _tiny_cnn():
    features = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU()),
        nn.Sequential(
            nn.Conv2d(8, 8, 3, groups=8, bias=False),
            nn.BatchNorm2d(8),
            nn.Conv2d(8, 6, 1),
            nn.ReLU(),
        ),
    )
    return nn.Sequential(
        OrderedDict(
            features=features,
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            classifier=nn.Linear(6, 10),
        )
    )


def build(**params):
    """A fitted-for-0-steps classifier: the network as built, before any training."""
    clf = FineTuneClassifier(tiny_cnn(), random_state=0, device="cpu", **params)
    X, _ = images()
    prepared = clf._prepare_fit(*images())
    return clf, X, prepared


def outputs(clf, X):
    network = clf.net_.module_.eval()
    with torch.no_grad():
        return network(torch.from_numpy(X).permute(0, 3, 1, 2).float() / 255)


def test_lora_output_equals_the_base_network_at_initialisation():
    base, X, _ = build()
    lora, _, _ = build(lora_rank=2)
    assert lora.lora_layers_ == ["features.0.0", "features.1.2"]  # depthwise conv skipped
    torch.testing.assert_close(outputs(lora, X), outputs(base, X), rtol=0, atol=0)


def test_trainable_parameter_counts_are_exact():
    head = 6 * 3 + 3
    cases = {
        "head": head,
        "all": 3 * 8 * 9 + 2 * 8 + 8 * 9 + 2 * 8 + 8 * 6 + 6 + head,
        "norm": 2 * 8 + 2 * 8 + head,
        1: 8 * 9 + 2 * 8 + 8 * 6 + 6 + head,
    }
    for train_layers, expected in cases.items():
        clf = FineTuneClassifier(tiny_cnn(), train_layers=train_layers, max_epochs=1).fit(*images())
        assert clf.n_trainable_params_ == expected, train_layers
        assert clf.n_params_ == cases["all"]
    r = 2
    lora = FineTuneClassifier(tiny_cnn(), lora_rank=r, max_epochs=1).fit(*images())
    adapters = (3 * r * 9 + r * 8) + (8 * r + r * 6)  # A (k x k conv), B (1x1) per layer
    assert lora.n_trainable_params_ == head + adapters
    assert lora.n_params_ == cases["all"] + adapters
    assert lora.trainable_fraction_ == pytest.approx((head + adapters) / lora.n_params_)


@pytest.mark.parametrize("train_layers", ["head", 1, "norm", ["features.1.2.*"]])
def test_frozen_weights_and_batchnorm_statistics_stay_bit_identical(train_layers):
    clf, X, prepared = build(train_layers=train_layers, lr=0.5, cache_features=False)
    body = clf.net_.module_.body
    trainable = {n for n, p in body.named_parameters() if p.requires_grad}
    frozen_bn = [
        name
        for name, m in body.named_modules()
        if isinstance(m, nn.BatchNorm2d) and not m.weight.requires_grad
    ]
    before = {k: v.clone() for k, v in body.state_dict().items()}
    clf._continue_training(prepared)
    after = body.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    stats = {f"{m}.{s}" for m in frozen_bn for s in ("running_mean", "running_var")}
    assert not changed & stats, "frozen BatchNorm statistics drifted"
    assert changed <= trainable | {k for k in before if "running" in k or "num_batches" in k}
    for name in before:
        if name.endswith(("weight", "bias")) and name not in trainable:
            assert torch.equal(before[name], after[name]), name
    if trainable:
        assert changed & trainable, "the trainable layers did not train"


def test_norm_only_trains_batchnorm_in_train_mode():
    clf, X, prepared = build(train_layers="norm", lr=0.5)
    body = clf.net_.module_.body
    before = body.features[0][1].running_mean.clone()
    clf._continue_training(prepared)
    assert not torch.equal(before, body.features[0][1].running_mean)


def test_merged_and_unmerged_lora_outputs_agree():
    X, y = images()
    clf = FineTuneClassifier(tiny_cnn(), lora_rank=2, lr=0.5, max_epochs=3, random_state=0)
    clf.fit(X, y)
    unmerged = clf.predict_proba(X)
    lora_b = clf.net_.module_.body.features[0][0].lora_B["default"].weight
    assert lora_b.abs().sum() > 0, "adapters did not train"
    clf.merge_lora_adapters()
    np.testing.assert_allclose(clf.predict_proba(X), unmerged, rtol=1e-5, atol=1e-6)
    assert clf.lora_merged_ and clf.n_params_ == 395
    merged = FineTuneClassifier(
        tiny_cnn(), lora_rank=2, lr=0.5, max_epochs=3, random_state=0, merge_lora=True
    ).fit(X, y)
    np.testing.assert_allclose(merged.predict_proba(X), unmerged, rtol=1e-5, atol=1e-6)


def test_learning_rates_scale_and_decay_by_depth():
    clf, _, _ = build(train_layers="all", lr=0.1, backbone_lr_scale=0.5, layer_decay=0.1)
    groups = {round(g["lr"], 12): len(g["params"]) for g in clf.net_.optimizer_.param_groups}
    # head (2 tensors) at lr; top block (5) at lr*0.5; the bottom block (3) one decay lower
    assert groups == {0.1: 2, 0.05: 5, 0.005: 3}
    assert clf.blocks_ == ["features.0", "features.1"]


def test_lora_adapters_train_at_the_head_rate():
    clf, _, _ = build(lora_rank=2, lr=0.1, backbone_lr_scale=0.01)
    (group,) = clf.net_.optimizer_.param_groups
    assert group["lr"] == 0.1 and len(group["params"]) == 2 + 4


def test_cached_features_train_the_same_head():
    X, y = images()
    params = dict(max_epochs=3, random_state=0, lr=0.1)
    cached = FineTuneClassifier(tiny_cnn(), **params).fit(X, y)
    direct = FineTuneClassifier(tiny_cnn(), cache_features=False, **params).fit(X, y)
    assert cached.features_cached_ and not direct.features_cached_
    np.testing.assert_allclose(cached.predict_proba(X), direct.predict_proba(X), atol=1e-5)
    assert isinstance(cached.net_.module_.body, nn.Module)


@pytest.mark.parametrize("engine", ["onnxruntime", "auto"])
def test_cached_features_come_from_the_chosen_engine(engine, record_engines):
    pytest.importorskip("onnxruntime")
    from sktransfer import finetune_frozen

    used = record_engines(finetune_frozen)
    X, y = images()
    params = dict(max_epochs=3, random_state=0, lr=0.1, device="cpu")
    fast = FineTuneClassifier(tiny_cnn(), engine=engine, **params).fit(X, y)
    plain = FineTuneClassifier(tiny_cnn(), engine="torch", **params).fit(X, y)
    assert used == ["onnxruntime", "torch"]
    np.testing.assert_allclose(fast.predict_proba(X), plain.predict_proba(X), atol=1e-4)
    assert used[2:] == ["onnxruntime", "torch"]  # prediction runs the same frozen pass


def forward_images():
    from sktransfer.frozen import FORWARD_COUNTS

    return FORWARD_COUNTS["images"]


def test_head_only_predict_goes_through_the_frozen_pass_and_its_store():
    X, y = images()
    clf = FineTuneClassifier(tiny_cnn(), max_epochs=2, random_state=0, engine="torch").fit(X, y)
    assert clf.features_cached_ and clf.frozen_body_.layer == "flatten"
    before = forward_images()
    proba = clf.predict_proba(X)  # the training images: their features are stored
    assert forward_images() == before
    new = X[:6] // 2  # unseen images of a size already probed
    clf.predict(new)
    assert forward_images() == before + len(new)
    # The frozen pass then the head is the whole network's answer.
    from sktransfer.training import NeuralClassifierBase

    whole = NeuralClassifierBase._probabilities(clf, clf._check_inputs(X, reset=False))
    np.testing.assert_allclose(proba, whole, atol=1e-5)
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_allclose(again.predict_proba(X), proba, atol=1e-6)


def test_head_only_fit_after_the_extractor_pushes_no_image_through_the_network():
    from sktransfer import DeepFeatureExtractor

    X, y = images()
    features = DeepFeatureExtractor(tiny_cnn(), engine="torch").fit_transform(X)
    before = forward_images()
    clf = FineTuneClassifier(tiny_cnn(), max_epochs=2, random_state=0, engine="torch").fit(X, y)
    assert forward_images() == before
    np.testing.assert_allclose(clf._frozen_body_features(clf._check_inputs(X, False)), features)
    # Without a store both estimators compute their own features.
    FineTuneClassifier(tiny_cnn(), max_epochs=1, engine="torch", cache=None).fit(X, y)
    assert forward_images() == before + len(X)


def test_labels_with_gaps_augmentation_and_repeatable_runs():
    X, y = images()
    params = dict(train_layers="all", augmentation="crop_flip", max_epochs=2, random_state=1)
    a = FineTuneClassifier(tiny_cnn(), head_hidden=(4,), **params).fit(X, y)
    b = FineTuneClassifier(tiny_cnn(), head_hidden=(4,), **params).fit(X, y)
    assert a.classes_.tolist() == [1, 5, 9] and set(a.predict(X)) <= {1, 5, 9}
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    np.testing.assert_array_equal(a.predict_proba(X), a.predict_proba(X))  # no augmentation
    assert [type(m).__name__ for m in a.net_.module_.head] == [
        "Linear",
        "ReLU",
        "Dropout",
        "Linear",
    ]


def test_learns_a_simple_image_task():
    # Each class has its own saturated colour channel: learnable, and judged on unseen images.
    X, y = images(n=60, coloured=(1, 5, 9))
    train, test = slice(0, 45), slice(45, None)
    clf = FineTuneClassifier(tiny_cnn(), train_layers="all", lr=0.1, max_epochs=30, random_state=0)
    majority = np.unique(y[test], return_counts=True)[1].max() / len(y[test])
    assert clf.fit(X[train], y[train]).score(X[test], y[test]) >= majority + 0.5


def test_early_stopping_and_pickle_round_trip():
    X, y = images(n=60)
    clf = FineTuneClassifier(
        tiny_cnn(), train_layers=1, early_stopping=True, validation_fraction=0.2, random_state=0
    ).fit(X, y)
    assert clf.best_epoch_ is not None and "valid_acc" in clf.history_[-1]
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))
    assert clone(clf).get_params()["train_layers"] == 1


@pytest.mark.parametrize(
    "params, match",
    [
        ({"train_layers": 3}, "has 2 blocks"),
        ({"head_hidden": (4, 4, 4, 4)}, "0 to 3 positive layer widths"),
        ({"cache_features": True, "augmentation": "flip"}, "cache_features=True needs"),
        ({"train_layers": [1]}, "parameter-name patterns"),
    ],
)
def test_errors_say_what_and_how_to_fix(params, match):
    with pytest.raises(ValueError, match=match):
        FineTuneClassifier(tiny_cnn(), max_epochs=1, **params).fit(*images())


def test_lora_with_nothing_left_to_adapt_warns():
    with pytest.warns(UserWarning, match="no adapter was added"):
        clf = FineTuneClassifier(tiny_cnn(), train_layers="all", lora_rank=2, max_epochs=1)
        clf.fit(*images())
    assert clf.lora_layers_ == []


def test_backbone_without_a_linear_classifier_is_rejected():
    with pytest.raises(ValueError, match="no nn.Linear classifier"):
        FineTuneClassifier(nn.Sequential(nn.Conv2d(3, 2, 3))).fit(*images())


def test_fit_leaves_the_backbone_untouched():
    module = tiny_cnn()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    clf = FineTuneClassifier(module, train_layers="all", lora_rank=0, max_epochs=2).fit(*images())
    assert clf.backbone is module and module.classifier.out_features == 10
    for key, value in module.state_dict().items():
        assert torch.equal(before[key], value), key
    assert all(p.requires_grad for p in module.parameters())


def test_grid_search_with_two_jobs():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4)).astype(np.float32)
    y = np.where(X[:, 0] > 0, "yes", "no")
    grid = GridSearchCV(
        FineTuneClassifier(lazy_mlp(), max_epochs=3, lr=0.1, random_state=0),
        {"train_layers": ["head", "all"], "lora_rank": [0, 2]},
        cv=2,
        n_jobs=2,
        error_score="raise",
    ).fit(X, y)
    assert grid.best_estimator_.predict(X[:2]).dtype.kind == "U"
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()


@pytest.mark.real_weights
def test_mobilenet_top_blocks_keep_frozen_batchnorm_statistics():
    X, y = images(n=6, size=40)
    clf = FineTuneClassifier(
        "mobilenet_v2", train_layers=2, max_epochs=1, batch_size=3, random_state=0
    )
    prepared = clf._prepare_fit(X, y)
    body = clf.net_.module_.body
    bottom = body.features[10].conv[1][1]  # a BatchNorm well below the top two blocks
    top = body.features[18][1]
    bottom_mean, top_mean = bottom.running_mean.clone(), top.running_mean.clone()
    clf._continue_training(prepared)
    assert torch.equal(bottom_mean, bottom.running_mean)
    assert not torch.equal(top_mean, top.running_mean)
    assert clf.blocks_[-2:] == ["features.17", "features.18"]
    assert clf.weights_ == "MobileNet_V2_Weights.IMAGENET1K_V1"


def test_image_size_changes_the_preset_resolution_only():
    from sktransfer import load_backbone
    from sktransfer.finetune import _resized

    preset = load_backbone("resnet18", weights=None).transform
    resized = _resized(preset, 64)
    assert resized.crop_size == [64] and resized.resize_size == [64]
    assert resized.mean == preset.mean and resized.std == preset.std
    out = resized(torch.zeros(3, 28, 40, dtype=torch.uint8))
    assert out.shape == (3, 64, 64)
    with pytest.raises(ValueError, match="image_size needs a backbone with a torchvision"):
        FineTuneClassifier(tiny_cnn(), image_size=8).fit(*images())
