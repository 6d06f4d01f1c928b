"""``import sktransfer`` is cheap: every public name is imported on first use (#16)."""

import subprocess
import sys
from pathlib import Path

import pytest

import sktransfer

ROOT = Path(__file__).parents[1]
#: What `import sktransfer` must not import: each costs seconds (torch._dynamo comes with
#: torchvision.ops; the analysis tools bring pandas and scipy).
HEAVY = (
    "torch",
    "torchvision",
    "torch._dynamo",
    "sklearn",
    "scipy",
    "pandas",
    "skorch",
    "matplotlib",
    "sktransfer.analysis",
    "sktransfer.extraction",
)


def modules_after(statement: str) -> list[str]:
    code = f"{statement}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return result.stdout.split()


def test_import_loads_no_heavy_module():
    assert modules_after("import sktransfer") == []


@pytest.mark.parametrize("name", sktransfer.__all__)
def test_every_public_name_resolves(name):
    value = getattr(sktransfer, name)
    assert value is not None
    assert name in dir(sktransfer)


def test_star_import_and_unknown_name():
    namespace: dict = {}
    exec("from sktransfer import *", namespace)
    assert set(sktransfer.__all__) <= set(namespace)
    with pytest.raises(AttributeError, match="has no attribute 'DeepFeatureExtracter'"):
        sktransfer.DeepFeatureExtracter  # noqa: B018


def test_lazy_table_matches_all():
    assert set(sktransfer.__all__) == set(sktransfer._LAZY) | set(sktransfer._SUBMODULES)


def test_onnx_runtime_is_a_dependency_and_the_extra_stays():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {d.split(">")[0].split("=")[0].split("<")[0] for d in project["dependencies"]}
    assert {"onnxruntime", "onnx"} <= names  # engine="auto" is fast without an extra
    assert "onnx" in project["optional-dependencies"]  # `pip install sktransfer[onnx]` works
