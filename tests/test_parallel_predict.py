"""parallel_predict: a fitted estimator over Dask collections equals it over the whole data."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from tiny_networks import pooled_conv

from sktransfer import DeepFeatureExtractor, extract_features, parallel_predict

da = pytest.importorskip("dask.array", reason="needs the dask extra")
dd = pytest.importorskip("dask.dataframe", reason="needs the dask extra")


@pytest.fixture
def three_classes():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    y = np.array(["cat", "dog", "owl"])[np.argmax(X[:, :3], axis=1)]
    return X, y, LogisticRegression().fit(X, y)


def test_array_blocks_match_in_memory_predictions(three_classes):
    X, y, model = three_classes
    lazy = da.from_array(X, chunks=(7, 2))  # column chunks are joined first
    np.testing.assert_array_equal(parallel_predict(model, lazy).compute(), model.predict(X))
    probabilities = parallel_predict(model, lazy, method="predict_proba")
    assert probabilities.shape == (60, 3)
    np.testing.assert_allclose(probabilities.compute(), model.predict_proba(X), rtol=1e-12)


def test_frame_partitions_keep_index_and_name_probability_columns(three_classes):
    X, y, _ = three_classes
    frame = pd.DataFrame(X, columns=["f0", "f1", "f2", "f3"], index=np.arange(100, 160))
    frame.insert(0, "path", [f"img{i}.jpg" for i in range(60)])
    features = ["f0", "f1", "f2", "f3"]
    model = LogisticRegression().fit(frame[features], y)
    lazy = dd.from_pandas(frame, npartitions=4)

    predicted = parallel_predict(model, lazy, columns=features).compute()
    pd.testing.assert_series_equal(
        predicted, pd.Series(model.predict(frame[features]), index=frame.index, name="predict")
    )
    probabilities = parallel_predict(model, lazy, method="predict_proba", columns=features)
    assert list(probabilities.columns) == ["cat", "dog", "owl"]
    np.testing.assert_allclose(
        probabilities.compute().to_numpy(), model.predict_proba(frame[features]), rtol=1e-12
    )


@pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.reset_index")  # dask 2026.8
def test_features_written_by_a_job_predicted_over_dask(tmp_path):
    """The documented workflow: extract to Parquet, fit on pandas, predict over Dask."""
    rng = np.random.default_rng(0)
    for label in ("dark", "light"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(8):
            base = 40 if label == "dark" else 200
            pixels = np.clip(base + rng.normal(0, 20, (10, 10, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / label / f"{i}.png")
    extract_features(
        tmp_path / "images",
        tmp_path / "features",
        backbone=pooled_conv(),
        weights=None,
        layers=["1"],
        chunk_size=5,
        cache=False,
        n_jobs=1,
        verbose=0,
    )
    table = pd.read_parquet(tmp_path / "features")
    features = [c for c in table.columns if c not in ("path", "label")]
    model = LogisticRegression().fit(table[features], table["label"])
    lazy = dd.read_parquet(tmp_path / "features")
    assert lazy.npartitions == 4  # one per chunk file
    predicted = parallel_predict(model, lazy, columns=features).compute()
    np.testing.assert_array_equal(predicted.to_numpy(), model.predict(table[features]))


def test_a_pipeline_from_image_paths(tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    for i in range(10):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(paths[-1])
    labels = np.array([0, 1] * 5)
    extractor = DeepFeatureExtractor(pooled_conv(), weights=None, layers=["1"], n_jobs=1)
    pipeline = make_pipeline(extractor, LogisticRegression()).fit(paths, labels)
    lazy = dd.from_pandas(pd.Series(paths), npartitions=3)
    predicted = parallel_predict(pipeline, lazy).compute(scheduler="synchronous")
    np.testing.assert_array_equal(predicted.to_numpy(), pipeline.predict(paths))


def test_errors_say_what_to_pass(three_classes):
    X, _, model = three_classes
    lazy = da.from_array(X, chunks=10)
    with pytest.raises(ValueError, match="method must be one of .* got 'score'"):
        parallel_predict(model, lazy, method="score")
    with pytest.raises(ValueError, match="LogisticRegression has no transform"):
        parallel_predict(model, lazy, method="transform")
    with pytest.raises(NotFittedError):
        parallel_predict(LogisticRegression(), lazy)
    with pytest.raises(TypeError, match="must be a dask DataFrame, Series or Array; got ndarray"):
        parallel_predict(model, X)
    frame = dd.from_pandas(pd.DataFrame(X, columns=list("abcd")), npartitions=2)
    with pytest.raises(ValueError, match=r"columns not in X: \['z'\]"):
        parallel_predict(model, frame, columns=["a", "z"])
