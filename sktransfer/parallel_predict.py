"""A fitted estimator's predictions over a Dask collection, block by block.

The equivalent of dask-ml's ``ParallelPostFit`` without the dependency: fit on what fits in
memory (a sample of the features :func:`sktransfer.extract_features` wrote), then predict
over all of them, each partition on whichever Dask worker holds it. The estimator is put in
the task graph once, not once per partition.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

__all__ = ["parallel_predict"]

_METHODS = ("predict", "predict_proba", "predict_log_proba", "decision_function", "transform")


def parallel_predict(estimator, X, *, method="predict", columns=None):
    """Apply a fitted estimator's ``method`` to each block of a Dask collection, lazily.

    Parameters
    ----------
    estimator : fitted estimator or Pipeline
        Anything with ``method``; a pipeline that starts with a
        :class:`~sktransfer.DeepFeatureExtractor` takes a Dask Series of image paths.
    X : dask DataFrame, dask Series or dask Array
        A DataFrame (for example ``dask.dataframe.read_parquet(out)`` of an extraction job),
        a Series (image paths), or an array chunked along its first axis only.
    method : {"predict", "predict_proba", "predict_log_proba", "decision_function", \
"transform"}, default="predict"
    columns : list of str or None
        With a DataFrame: the columns the estimator takes (e.g. the feature columns, without
        ``path`` and ``label``). None: every column.

    Returns
    -------
    dask Series, DataFrame or Array
        One row per row of ``X``, in order: a Series (``predict``, 1-D outputs) or a
        DataFrame (columns ``classes_`` for probabilities, else ``0, 1, ...``) for frame
        input; an Array for array input. Nothing is computed until you call ``.compute()``
        (except one row of ``X``, run once to learn the output's type and width).

    Examples
    --------
    >>> import dask.array as da, numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sktransfer import parallel_predict
    >>> X = np.random.default_rng(0).normal(size=(40, 3))
    >>> y = (X[:, 0] > 0).astype(int)
    >>> model = LogisticRegression().fit(X, y)
    >>> lazy = parallel_predict(model, da.from_array(X, chunks=10))
    >>> bool((lazy.compute() == model.predict(X)).all())
    True
    """
    import dask
    import dask.array as da
    import dask.dataframe as dd

    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}; got {method!r}.")
    if not hasattr(estimator, method):
        raise ValueError(f"{type(estimator).__name__} has no {method}; pick another method.")
    check_is_fitted(estimator)
    if isinstance(X, dd.DataFrame | dd.Series):
        return _over_frame(dask.delayed(estimator), estimator, X, method, columns)
    if isinstance(X, da.Array):
        if columns is not None:
            raise ValueError("columns selects DataFrame columns; X is a dask Array.")
        return _over_array(dask.delayed(estimator), estimator, X, method)
    raise TypeError(
        f"X must be a dask DataFrame, Series or Array; got {type(X).__name__}. Call the "
        f"estimator's {method} directly for in-memory data."
    )


def _over_frame(delayed_estimator, estimator, X, method, columns):
    if columns is not None:
        columns = list(columns)
        if X.ndim != 2:
            raise ValueError("columns selects DataFrame columns; X is a dask Series.")
        missing = [c for c in columns if c not in X.columns]
        if missing:
            raise ValueError(f"columns not in X: {missing[:5]} (X has {len(X.columns)}).")
    names = _output_names(estimator, method)
    meta = _frame_block(X.head(1, npartitions=-1), estimator, method, columns, names).iloc[:0]
    return X.map_partitions(
        _frame_block, delayed_estimator, method, columns, names, meta=meta, align_dataframes=False
    )


def _frame_block(part, estimator, method, columns, names):
    values = getattr(estimator, method)(part if columns is None else part[columns])
    values = np.asarray(values)
    if values.ndim == 1:
        return pd.Series(values, index=part.index, name=method)
    if names is None or len(names) != values.shape[1]:
        names = list(range(values.shape[1]))
    return pd.DataFrame(values, index=part.index, columns=names)


def _output_names(estimator, method):
    classes = getattr(estimator, "classes_", None)
    if method in ("predict_proba", "predict_log_proba") and classes is not None:
        return [str(c) for c in classes]
    return None


def _over_array(delayed_estimator, estimator, X, method):
    import dask
    import dask.array as da

    if any(len(chunks) > 1 for chunks in X.chunks[1:]):
        X = X.rechunk({axis: -1 for axis in range(1, X.ndim)})
    sample = np.asarray(getattr(estimator, method)(X[:1].compute()))
    blocks = X.to_delayed().reshape(-1)
    apply = dask.delayed(_array_block, pure=True)
    parts = [
        da.from_delayed(
            apply(delayed_estimator, method, block), (rows, *sample.shape[1:]), sample.dtype
        )
        for block, rows in zip(blocks, X.chunks[0])
    ]
    return da.concatenate(parts, axis=0)


def _array_block(estimator, method, block):
    return np.asarray(getattr(estimator, method)(block))
