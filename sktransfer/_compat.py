"""The one place sktransfer imports private names of its dependencies.

scikit-learn and torchvision give no stability promise for names that start with an
underscore or live in a private module; a minor release may move or rename them. Every other
module imports them from here (``tests/test_compat.py`` fails otherwise), so when one moves,
this file is the only one to change. Each import says why the project uses it and where to
look when it breaks.

The torchvision names are imported on first use (module ``__getattr__``), so the modules that
need only the scikit-learn names (``postprocessing``) do not pay for importing torchvision.
"""

from __future__ import annotations

# The decorator every estimator's fit (and partial fit) wears: it validates the parameters
# against ``_parameter_constraints`` once, skips nested validation, and honours
# ``sklearn.config_context(skip_parameter_validation=True)``, as scikit-learn's own
# estimators do. If it moves: look for it in ``sklearn/base.py``; without it, call
# ``self._validate_params()`` at the top of each fit and drop the decorator.
from sklearn.base import _fit_context

# Rows of an array, a list, a DataFrame or a sparse matrix by position, whatever the
# container, as scikit-learn's cross-validation does; used to slice a teacher's inputs into
# batches. If it moves: ``sklearn/utils/_indexing.py``; a replacement must keep DataFrames
# and sparse matrices (plain ``X[indices]`` does not index a list or a DataFrame by rows).
from sklearn.utils import _safe_indexing

# The constraint objects of ``_parameter_constraints`` (ranges of numbers, sets of strings),
# the vocabulary scikit-learn's estimator checks and error messages speak. If they move:
# ``sklearn/utils/_param_validation.py`` (scikit-learn has discussed making it public as
# ``sklearn.utils.param_validation``); import them from there.
from sklearn.utils._param_validation import Interval, StrOptions

# The number of samples of any array-like (a list of paths, an array, a DataFrame), with the
# error scikit-learn users know for a scalar or a 0-d array. If it moves:
# ``sklearn/utils/validation.py``; ``len(X)`` is a replacement for the inputs the
# estimators accept once ``check_images`` has validated them.
from sklearn.utils.validation import _num_samples

#: The scikit-learn names; the torchvision ones (``ImageClassification``, ``jpeg_decoder_op``)
#: are served by ``__getattr__`` below.
__all__ = [
    "Interval",
    "StrOptions",
    "_fit_context",
    "_num_samples",
    "_safe_indexing",
]


def __getattr__(name: str):
    if name == "ImageClassification":
        # torchvision's preset that every weights entry's ``transforms()`` builds (resize,
        # crop, rescale, normalise); ``backbones.ImagePreset`` subclasses it to resize uint8
        # tensors in uint8, and fine-tuning reads its sizes and statistics. It has no public
        # name. If it moves: find it through ``type(weights.transforms())`` of any
        # classification weights (``torchvision.models.ResNet18_Weights.DEFAULT``).
        from torchvision.transforms._presets import ImageClassification

        return ImageClassification
    if name == "jpeg_decoder_op":
        # torchvision's libjpeg-turbo decoder, the op ``torchvision.io.decode_jpeg`` calls
        # (arguments: the file's bytes as a 1-D uint8 tensor, an ``ImageReadMode`` value,
        # apply_exif_orientation). Since torchvision 0.29 ``decode_jpeg`` warns (a
        # DeprecationWarning, torchcodec supersedes it) on every call; the op does not, so
        # decoding needs no warning filter: a library must not change the process's filters,
        # and ``catch_warnings`` cannot scope one per thread (decoding runs in threads). If
        # it moves or is removed (an AttributeError here): decode JPEGs with torchcodec's
        # ``decode_jpeg``, or with Pillow only (``decoding._decode_jpeg`` returning None).
        import torch
        import torchvision.io  # noqa: F401  (loads the library that registers torch.ops.image)

        return torch.ops.image.decode_jpeg
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
