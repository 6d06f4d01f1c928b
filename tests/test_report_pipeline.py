"""The report's recommended_pipeline.py reproduces the report's number (#16)."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
from PIL import Image
from tiny_networks import tiny_network

from sktransfer.report import build_report
from sktransfer.report.codegen import pipeline_code
from sktransfer.report.data import load_report_data


def make_tree(root, n=8, size=16):
    rng = np.random.default_rng(0)
    for shift, cls in enumerate(("ants", "bees")):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 200, (size, size, 3), dtype=np.uint8) + 40 * shift
            Image.fromarray(pixels.astype(np.uint8)).save(root / cls / f"{i}.png")
    return root


def test_script_reproduces_the_report_on_a_sixteen_image_folder(tmp_path, monkeypatch, capsys):
    """16 images (the pilot of the activation pass once crashed on them). The report's cache
    is not named in the script, so the script computes the features again: the same number
    from the same images, split and seed."""
    root = make_tree(tmp_path / "data")
    cache = tmp_path / "cache"
    results = build_report(
        root,
        backbone=tiny_network(),
        weights=None,
        out=tmp_path / "o",
        cache=cache,
        finetune=False,
        verbose=0,
    )
    code = (tmp_path / "o" / "recommended_pipeline.py").read_text()
    assert str(cache) not in code and str(root.resolve()) in code
    assert "# The backbone was a custom Sequential module: replace 'Sequential' by it." in code
    # as a user does: the module in place of its name (weights=None, random_state=0 inside)
    monkeypatch.setattr(sys, "argv", ["recommended_pipeline.py"])
    exec(code.replace("'Sequential'", "network"), {"network": tiny_network()})
    accuracy, reported = re.findall(r"\d\.\d{3}", capsys.readouterr().out)
    assert accuracy == reported == f"{results['recommendation']['accuracy']:.3f}"
    assert results["data"]["n_train"] + results["data"]["n_test"] == 16


def test_script_reads_the_default_cache_where_it_runs():
    data = load_report_data(None, max_images=50)
    code = pipeline_code(data, "mobilenet_v2", "DEFAULT", recommendation(), None)
    assert "cache = default_cache_dir() / 'activations'" in code and "cache=cache" in code


def recommendation(approach="feature extraction"):
    if approach == "fine-tuning":
        params = {"train_layers": 3, "max_epochs": 2, "image_size": 160}
        return {"approach": approach, "params": params, "torch_threads": 1, "accuracy": 0.9}
    return {"approach": approach, "layer": "features.18", "accuracy": 0.954}


def test_script_names_no_cache_folder_and_the_same_subsample(tmp_path):
    data = load_report_data(None, max_images=50, random_state=3)
    cache = tmp_path / "my-cache"
    code = pipeline_code(data, "mobilenet_v2", "DEFAULT", recommendation(), cache, 3)
    assert str(cache) not in code and "my-cache" not in code
    assert "max_images=50," in code and "random_state=3," in code and "DATA = None" in code
    compile(code, "recommended_pipeline.py", "exec")


@pytest.mark.parametrize("approach", ["feature extraction", "fine-tuning"])
def test_script_imports_are_grouped_and_it_compiles(tmp_path, approach):
    data = load_report_data(None, max_images=50)
    code = pipeline_code(data, "mobilenet_v2", "DEFAULT", recommendation(approach))
    imports = [line for line in code.splitlines() if line.startswith(("import", "from"))]
    assert imports[0] == "import sys" and imports[-1].startswith("from sktransfer")
    if approach == "fine-tuning":
        assert "torch.set_num_threads(1)" in code and "FineTuneClassifier('mobilenet_v2'" in code
    compile(code, "recommended_pipeline.py", "exec")
