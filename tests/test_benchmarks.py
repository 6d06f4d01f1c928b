"""Every benchmark script has a ``--smoke`` mode (CI runs them all: ``make benchmarks-smoke``)
and keeps to the issue #15 limits; the smoke mode's tiny data has the shared data's layout."""

import ast
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
MAX_FUNCTION_LINES = 80


def _scripts():
    """benchmarks/*.py with a top-level ``main`` (the runner itself aside)."""
    found = []
    for path in sorted(BENCHMARKS.glob("*.py")):
        tree = ast.parse(path.read_text())
        if path.name != "smoke.py" and any(
            isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body
        ):
            found.append((path.name, tree))
    return found


def _declares_smoke(tree) -> bool:
    """``add_smoke_flag(parser)`` or ``parser.add_argument("--smoke", ...)`` somewhere."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "attr", getattr(node.func, "id", None))
        if name == "add_smoke_flag":
            return True
        first = node.args[0] if node.args else None
        if name == "add_argument" and isinstance(first, ast.Constant) and first.value == "--smoke":
            return True
    return False


def test_the_scripts_are_found():
    names = [name for name, _ in _scripts()]
    assert "decaf_caltech101.py" in names and "_common.py" not in names, names


@pytest.mark.parametrize("name, tree", _scripts(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_benchmark_has_a_smoke_mode(name, tree):
    assert _declares_smoke(tree), (
        f"benchmarks/{name} has no --smoke flag. Add `add_smoke_flag(parser)` from "
        "benchmarks/_common.py and a smoke mode that runs in seconds on a few images, writing "
        "to smoke_folder(...) (CI runs every script's --smoke through benchmarks/smoke.py)."
    )


def test_no_benchmark_function_is_longer_than_the_limit():
    too_long = []
    for path in sorted(BENCHMARKS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.name}:{node.lineno} {node.name} ({lines} lines)")
    assert not too_long, f"split these into named functions: {too_long}"


def test_tiny_data_has_the_shared_layout(tmp_path):
    from benchmarks._common import tiny_data
    from sktransfer import load_image_folder

    _, labels = load_image_folder(tiny_data("caltech101", tmp_path))
    assert "BACKGROUND_Google" in set(labels) and len(set(labels)) == 5
    train, _ = load_image_folder(tiny_data("hymenoptera", tmp_path) / "train")
    assert len(train) == 16
    with np.load(tiny_data("mnist.npz", tmp_path)) as mnist:
        assert mnist["x_train"].shape[1:] == (28, 28) and mnist["x_train"].dtype == np.uint8
        assert set(mnist["y_test"]) == set(range(10))
    with np.load(tiny_data("breastmnist.npz", tmp_path)) as medmnist:
        assert set(medmnist["train_labels"].ravel()) == {0, 1}
        assert {"val_images", "test_images"} <= set(medmnist)
