"""scikit-learn's common estimator checks on small configurations."""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks
from torch import nn

from sktransfer import DeepFeatureExtractor, LayerwiseNormalizer, TernaryDiscretizer


def tiny_vector_backbone():
    # The checks feed 2-D tabular data of varying widths: a lazy first layer adapts to it.
    return nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.Linear(8, 3))


ESTIMATORS = [
    DeepFeatureExtractor(tiny_vector_backbone(), random_state=0),
    LayerwiseNormalizer(),
    TernaryDiscretizer(),
]

EXPECTED_FAILED_CHECKS = {
    "DeepFeatureExtractor": {
        "check_estimators_overwrite_params": (
            "joblib.hash of a deep copy of a torch module differs from the original even when "
            "nothing changed (tensor pickles are not canonical); fit deep-copies the backbone "
            "and never mutates it, which test_extraction checks with torch.equal instead."
        ),
    },
    "LayerwiseNormalizer": {},
    "TernaryDiscretizer": {},
}


@parametrize_with_checks(
    ESTIMATORS, expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS[type(est).__name__]
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


def test_expected_failures_are_documented():
    for failures in EXPECTED_FAILED_CHECKS.values():
        assert all(isinstance(reason, str) and reason for reason in failures.values())
    pytest.importorskip("sklearn")
