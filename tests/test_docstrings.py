"""Every public estimator documents each fitted attribute it sets (issue #16: the student
network was found only in the source)."""

import re

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from tiny_networks import small_mlp

from sktransfer import (
    DeepFeatureExtractor,
    DistilledClassifier,
    FineTuneClassifier,
    LayerwiseNormalizer,
    PrunedClassifier,
    TernaryDiscretizer,
)

pytestmark = pytest.mark.usefixtures("one_thread")

X = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
Y = np.arange(40) % 2


FITTED = {
    "DeepFeatureExtractor": lambda: DeepFeatureExtractor(small_mlp(), random_state=0).fit(X),
    "LayerwiseNormalizer": lambda: LayerwiseNormalizer(block_sizes=[3, 3]).fit(X),
    "TernaryDiscretizer": lambda: TernaryDiscretizer().fit(X),
    "FineTuneClassifier": lambda: FineTuneClassifier(small_mlp(), max_epochs=1).fit(X, Y),
    "DistilledClassifier": lambda: DistilledClassifier(
        LogisticRegression().fit(X, Y), student="mlp-8", max_epochs=1
    ).fit(X, Y),
    "PrunedClassifier": lambda: PrunedClassifier(
        FineTuneClassifier(small_mlp(), train_layers="all", max_epochs=1),
        n_rounds=1,
        reinit_control=True,
    ).fit(X, Y, eval_set=(X, Y)),
}


@pytest.mark.parametrize("name", FITTED)
def test_fitted_attributes_are_documented(name):
    estimator = FITTED[name]()
    attributes = [a for a in vars(estimator) if a.endswith("_") and not a.startswith("_")]
    assert attributes
    section = type(estimator).__doc__.split("Attributes\n    ----------", 1)[1]
    section = re.split(r"\n    (Examples|Notes|See Also)\n    -+", section)[0]
    missing = [a for a in attributes if not re.search(rf"\b{re.escape(a)}", section)]
    assert not missing, f"{name} sets undocumented fitted attributes {missing}"


def test_the_student_network_is_documented():
    assert "student_module_ : torch.nn.Module" in DistilledClassifier.__doc__


def test_documented_ctrl_c_leaves_a_usable_classifier():
    """NeuralClassifierBase's Notes: Ctrl-C mid-epoch stops training, warns, keeps weights."""
    from skorch.callbacks import Callback

    class CtrlC(Callback):
        def on_batch_end(self, net, training, **kwargs):
            if training and len(net.history) == 2 and len(net.history[-1]["batches"]) == 2:
                raise KeyboardInterrupt

    clf = FineTuneClassifier(
        small_mlp(), train_layers="all", batch_size=8, max_epochs=5, callbacks=[CtrlC()]
    )
    with pytest.warns(UserWarning, match="interrupted after 2 of 5 epochs"):
        clf.fit(X, Y)
    assert clf.n_epochs_ == 2
    assert clf.predict(X).shape == (40,)
    assert set(clf.predict(X)) <= {0, 1}
