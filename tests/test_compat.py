"""Private names of scikit-learn and torchvision are imported in sktransfer/_compat.py only.

When a release moves one, that file is the only one to change (#15).
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import sklearn.base
import sklearn.utils
import sklearn.utils._param_validation
import sklearn.utils.validation

from sktransfer import _compat

PACKAGE = Path(__file__).resolve().parents[1] / "sktransfer"
#: The dependencies whose private names go through _compat.
GUARDED = ("sklearn", "torchvision")


def private_imports(source: str) -> list[str]:
    """``"line: name"`` for each private name of a :data:`GUARDED` package that ``source`` imports.

    Private: a module path with a part that starts with an underscore
    (``sklearn.utils._param_validation``), or an imported name that does (``_fit_context``).
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and not node.level and node.module:
            parts = node.module.split(".")
            if parts[0] not in GUARDED:
                continue
            private_module = any(part.startswith("_") for part in parts)
            for alias in node.names:
                if private_module or alias.name.startswith("_"):
                    found.append(f"{node.lineno}: {node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] in GUARDED and any(part.startswith("_") for part in parts):
                    found.append(f"{node.lineno}: {alias.name}")
    return found


@pytest.mark.parametrize(
    "source",
    [
        "from sklearn.base import BaseEstimator, _fit_context",
        "from sklearn.utils._param_validation import Interval",
        "import sklearn.utils._param_validation",
        "from torchvision.models._api import WeightsEnum",
        "def f():\n    from sklearn.utils import _safe_indexing",
    ],
)
def test_the_check_finds_private_imports(source):
    assert private_imports(source)


@pytest.mark.parametrize(
    "source",
    [
        "from sklearn.base import BaseEstimator",
        "from torchvision.models import WeightsEnum",
        "from ._compat import _fit_context",
        "from torch import _C",  # torch is not guarded (yet)
    ],
)
def test_the_check_passes_public_imports(source):
    assert not private_imports(source)


def test_only_compat_imports_private_names():
    offenders = {
        str(path.relative_to(PACKAGE.parent)): found
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "_compat.py" and (found := private_imports(path.read_text()))
    }
    assert not offenders, (
        f"{offenders} import private scikit-learn or torchvision names: import them from "
        "sktransfer._compat instead (add them there with why they are used and where to look "
        "when they move)."
    )


def test_compat_serves_the_dependencies_own_objects():
    assert _compat._fit_context is sklearn.base._fit_context
    assert _compat.Interval is sklearn.utils._param_validation.Interval
    assert _compat.StrOptions is sklearn.utils._param_validation.StrOptions
    assert _compat._safe_indexing is sklearn.utils._safe_indexing
    assert _compat._num_samples is sklearn.utils.validation._num_samples
    from torchvision.models import ResNet18_Weights

    assert isinstance(ResNet18_Weights.DEFAULT.transforms(), _compat.ImageClassification)


def test_unknown_name_raises_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'Intervals'"):
        _compat.Intervals  # noqa: B018


def test_scikit_learn_names_do_not_import_torchvision():
    code = "import sys, sktransfer._compat\nprint('torchvision' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PACKAGE.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "False"
