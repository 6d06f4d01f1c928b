"""Tests of BiT-HyperRule (sktransfer/hyperrule.py) and FineTuneClassifier(hyperrule=...)."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError
from torch import nn

from sktransfer import FineTuneClassifier, bit_hyperrule
from sktransfer import hyperrule as hyperrule_module
from sktransfer.hyperrule import BitSchedule, median_image_size
from sktransfer.images import check_images

pytestmark = pytest.mark.usefixtures("one_thread")


# The paper's table (section 3.3): (examples, image size) -> steps, warm-up, decays at
# 30/60/90 %, (resize, crop), MixUp alpha.
PAPER = [
    (1_000, 32, 500, 100, (150, 300, 450), (160, 128), 0.0),
    (19_999, 96, 500, 100, (150, 300, 450), (448, 384), 0.0),
    (20_000, 95, 10_000, 500, (3_000, 6_000, 9_000), (160, 128), 0.1),
    (499_999, (224, 224), 10_000, 500, (3_000, 6_000, 9_000), (448, 384), 0.1),
    (500_000, 500, 20_000, 500, (6_000, 12_000, 18_000), (448, 384), 0.1),
    (1_281_167, (95, 97), 20_000, 500, (6_000, 12_000, 18_000), (160, 128), 0.1),
]


@pytest.mark.parametrize("n, size, steps, warmup, milestones, resolution, alpha", PAPER)
def test_the_rule_follows_the_paper(n, size, steps, warmup, milestones, resolution, alpha):
    rule = bit_hyperrule(n, size)
    assert rule["steps"] == steps and rule["warmup_steps"] == warmup
    assert rule["milestones"] == milestones
    assert (rule["resize"], rule["crop"]) == resolution
    assert rule["mixup_alpha"] == alpha
    assert (rule["lr"], rule["momentum"], rule["weight_decay"]) == (0.003, 0.9, 0.0)
    assert rule["batch_size"] == 512 and rule["scale"] == 1.0


def test_scale_shrinks_steps_batch_and_pixels_but_not_the_regime():
    rule = bit_hyperrule(546, 28, scale=0.25)
    assert (rule["steps"], rule["batch_size"], rule["resize"], rule["crop"]) == (125, 128, 80, 64)
    assert rule["warmup_steps"] == 25 and rule["milestones"] == (38, 75, 112)
    assert rule["lr"] == 0.003  # the rate is not rescaled with the batch
    large = bit_hyperrule(50_000, 500, scale=0.1)
    assert (large["steps"], large["batch_size"], large["resize"], large["crop"]) == (
        1000,
        51,
        144,
        120,
    )
    assert large["mixup_alpha"] == 0.1 and large["regime"]["paper_steps"] == 10_000
    floor = bit_hyperrule(10, 28, scale=0.001)
    assert (floor["steps"], floor["batch_size"], floor["crop"]) == (10, 8, 32)
    assert floor["resize"] >= floor["crop"]


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((100, 32), {"scale": 0}, "scale must be a number in"),
        ((100, 32), {"scale": 1.5}, "scale must be a number in"),
        ((0, 32), {}, "n_samples must be a positive integer"),
        ((True, 32), {}, "n_samples must be a positive integer"),
        ((100, (32,)), {}, "image_size must be a positive side"),
        ((100, (32, 0)), {}, "image_size must be a positive side"),
        ((100, (1, 2, 3)), {}, "image_size must be a positive side"),
    ],
)
def test_rule_arguments_are_checked(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        bit_hyperrule(*args, **kwargs)


def test_schedule_warms_up_linearly_then_divides_by_ten_at_each_milestone():
    schedule = BitSchedule(4, (6, 8, 9), ratio=0.5)
    factors = [schedule(t) for t in range(11)]
    expected = [0.125, 0.25, 0.375, 0.5, 0.5, 0.5, 0.05, 0.05, 0.005, 5e-4, 5e-4]
    np.testing.assert_allclose(factors, expected)


def test_median_image_size_reads_arrays_pil_images_and_file_headers(tmp_path):
    from PIL import Image

    assert median_image_size(check_images(np.zeros((3, 20, 30, 3), np.uint8))) == (20, 30)
    pictures = [Image.new("RGB", (w, h)) for w, h in [(10, 10), (40, 30), (200, 100)]]
    assert median_image_size(check_images(pictures)) == (30, 40)
    paths = []
    for i, picture in enumerate(pictures):
        paths.append(tmp_path / f"{i}.png")
        picture.save(paths[-1])
    assert median_image_size(check_images([str(p) for p in paths])) == (30, 40)


def images(n=24, size=28):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    y = np.array(["ant", "bee"] * (n // 2))
    return X, y


def rule_classifier(**params):
    # resnet18 without weights: a preset (the rule sets its resolution), nothing to load
    params = {"train_layers": "all", "hyperrule": 0.01, "device": "cpu", **params}
    return FineTuneClassifier("resnet18", weights=None, random_state=0, **params)


@pytest.fixture(scope="module")
def fitted():
    """One fit shared by the tests that read it (one torch thread, as ``one_thread``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        X, y = images()
        return rule_classifier().fit(X, y), X
    finally:
        torch.set_num_threads(threads)


def test_fit_applies_the_scaled_rule(fitted):
    clf, _ = fitted
    rule = clf.hyperrule_
    # 24 images, batch 8 -> 3 steps an epoch; the rule's 10 steps round up to 4 epochs
    assert (rule["batch_size"], rule["epochs"], rule["steps"]) == (8, 4, 12)
    assert (rule["warmup_steps"], rule["milestones"]) == (2, (4, 7, 11))
    assert (rule["resize"], rule["crop"], rule["image_size"]) == (32, 32, (28, 28))
    assert clf.n_epochs_ == 4 and rule["mixup_alpha"] == 0.0
    assert clf.preprocessing_.transform.crop_size == [32]
    optimizer = clf.net_.optimizer_
    assert isinstance(optimizer, torch.optim.SGD)
    assert all(g["momentum"] == 0.9 and g["weight_decay"] == 0.0 for g in optimizer.param_groups)
    assert clf.net_.batch_size == 8 and not clf.features_cached_


def test_learning_rate_warms_up_then_decays_by_ten(fitted):
    clf, _ = fitted
    # the head's rate at each step (the first group; the body trains at 0.1 of it)
    lrs = [b["event_lr"] for epoch in clf.history_ for b in epoch["batches"]]
    expected = [0.0015, 0.003, 0.003, 0.003, 3e-4, 3e-4, 3e-4, 3e-5, 3e-5, 3e-5, 3e-5, 3e-6]
    np.testing.assert_allclose(lrs, expected)
    body = clf.net_.optimizer_.param_groups[1]
    np.testing.assert_allclose(body["lr"], 3e-7)  # 0.003 * backbone_lr_scale, decayed 3 times


def test_clone_and_pickle_keep_the_rule(fitted):
    clf, X = fitted
    assert clone(clf).hyperrule == 0.01 and not hasattr(clone(clf), "hyperrule_")
    restored = pickle.loads(pickle.dumps(clf))
    assert restored.hyperrule_ == clf.hyperrule_
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))


def test_mixup_joins_from_twenty_thousand_examples(monkeypatch):
    monkeypatch.setattr(hyperrule_module, "MIXUP_FROM", 10)  # 24 images count as "large"
    X, y = images()
    clf = rule_classifier(train_layers="head").fit(X, y)
    assert clf.hyperrule_["mixup_alpha"] == 0.1
    lambdas = [b["mixup_lambda"] for epoch in clf.history_ for b in epoch["batches"]]
    assert len(lambdas) == clf.hyperrule_["steps"] and all(0 <= v <= 1 for v in lambdas)
    assert not clf.net_.module_._forward_pre_hooks  # off at prediction


@pytest.mark.parametrize("value", [0, 0.0, 1.5, "bit", -0.1])
def test_hyperrule_parameter_is_validated(value):
    X, y = images()
    with pytest.raises(InvalidParameterError, match="hyperrule"):
        rule_classifier(hyperrule=value).fit(X, y)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"image_size": 64}, "image_size=64 was also given"),
        ({"augmentation": "flip"}, "augmentation='flip' was also given"),
    ],
)
def test_conflicting_parameters_are_refused(params, match):
    X, y = images()
    with pytest.raises(ValueError, match=match):
        rule_classifier(**params).fit(X, y)


def test_a_backbone_without_preset_is_refused():
    X, y = images()
    network = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    with pytest.raises(ValueError, match="torchvision preprocessing preset"):
        FineTuneClassifier(network, hyperrule=True).fit(X, y)
