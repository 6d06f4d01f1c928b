"""The report's recommended pipeline as a runnable script that reproduces its number.

The script reads the report's images, split and subsample through
:func:`sktransfer.report.data.load_report_data` (same ``max_images``, same ``random_state``),
fits the recommended model with the report's seed, and prints its held-out accuracy next to the
report's. It holds no path of the writing machine's cache.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from .data import ReportData

__all__ = ["backbone_name", "pipeline_code"]


def pipeline_code(
    dataset: ReportData,
    backbone,
    weights,
    recommendation: dict,
    cache=None,
    random_state: int = 0,
) -> str:
    """The recommended pipeline as a runnable Python script that reproduces the report's
    number: the same images, split and subsample (through :func:`load_report_data` with the
    report's ``max_images`` and ``random_state``), the same model and seed.

    ``cache`` is the report's ``cache`` argument: None (the default folder) is written as
    ``default_cache_dir()``, computed where the script runs, so the script reads the report's
    activations back; another folder is not written into the script (it is a path of the
    machine that wrote the report), only named in a comment as an option.
    """
    name = backbone_name(backbone)
    lines = [
        '"""The pipeline recommended by `sktransfer report`: it reproduces the report\'s '
        'held-out accuracy.\n\nRun: python recommended_pipeline.py [DATA]\n"""',
        "",
        "import sys",
        "",
        "from sktransfer.report.data import load_report_data",
        "",
        *_data_lines(dataset, random_state),
        "",
    ]
    lines += _model_lines(name, weights, recommendation, cache, random_state)
    lines += [
        "model.fit(X_train, y_train)",
        "accuracy = model.score(X_test, y_test)",
        f'print(f"test accuracy: {{accuracy:.3f}} (the report: {recommendation["accuracy"]:.3f})")',
        "",
    ]
    if not isinstance(backbone, str):
        lines.insert(2, f"# The backbone was a custom {name} module: replace {name!r} by it.")
    return _imports_first(lines)


def _model_lines(name: str, weights, recommendation: dict, cache, random_state: int) -> list[str]:
    """The imports and the ``model = ...`` of the recommended approach."""
    weights_arg = "" if weights == "DEFAULT" else f", weights={weights!r}"
    if recommendation["approach"] == "fine-tuning":
        params = ", ".join(f"{k}={v!r}" for k, v in recommendation["params"].items())
        return [
            "import torch",
            "",
            "from sktransfer import FineTuneClassifier",
            "",
            f"torch.set_num_threads({recommendation['torch_threads']})  # as in the report: "
            "the same arithmetic, the same number",
            f"model = FineTuneClassifier({name!r}{weights_arg}, {params}, random_state=0)",
        ]
    seed_arg = f", random_state={random_state!r}" if weights is None else ""
    if cache is None:
        cache_lines = [
            "from sktransfer.frozen import default_cache_dir",
            "",
            "# cache: where the report stored the activations, so the fit reads them back",
            "cache = default_cache_dir() / 'activations'",
        ]
        cache_arg = ", cache=cache"
    else:
        cache_lines = [
            "# Pass cache=<the report's --cache folder> to DeepFeatureExtractor to read the",
            "# report's activations back instead of computing them.",
        ]
        cache_arg = ""
    return [
        "from sklearn.linear_model import LogisticRegression",
        "from sklearn.pipeline import make_pipeline",
        "from sklearn.preprocessing import StandardScaler",
        "",
        "from sktransfer import DeepFeatureExtractor",
        "",
        *cache_lines,
        "model = make_pipeline(",
        f"    DeepFeatureExtractor({name!r}{weights_arg}, "
        f"layers={recommendation['layer']!r}{seed_arg}{cache_arg}),",
        "    StandardScaler(),",
        "    LogisticRegression(C=0.1, max_iter=2000),",
        ")",
    ]


def _data_lines(dataset: ReportData, random_state: int) -> list[str]:
    """The report's images and split, read as the report read them."""
    location = None if dataset.location is None else str(Path(dataset.location).resolve())
    what = "None: scikit-learn's bundled digits" if location is None else dataset.source
    return [
        f"# The report's data ({what}); for another: python recommended_pipeline.py PATH",
        f"DATA = {location!r}",
        "# The report's images, test split and subsample (max_images=None keeps every image).",
        "data = load_report_data(",
        "    sys.argv[1] if len(sys.argv) > 1 else DATA,",
        f"    max_images={dataset.max_images!r},",
        f"    random_state={random_state!r},",
        ")",
        "X_train, y_train, X_test, y_test = data.X_train, data.y_train, data.X_test, data.y_test",
    ]


def _imports_first(lines: list[str]) -> str:
    """The docstring, the imports (standard, third party, sktransfer), then the code."""
    imports = [line for line in lines[1:] if line.startswith(("import ", "from "))]
    body = [line for line in lines[1:] if line not in imports]

    def group(line: str) -> int:
        module = line.split()[1].split(".")[0]
        return 0 if module in sys.stdlib_module_names else 2 if module == "sktransfer" else 1

    ordered = sorted(set(imports), key=lambda line: (group(line), line.split()[1]))
    groups = [[i for i in ordered if group(i) == g] for g in range(3)]
    code = re.sub(r"\n{3,}", "\n\n", "\n".join(body).strip())
    text = "\n\n".join([lines[0], *("\n".join(g) for g in groups if g), code])
    return text + "\n"


def backbone_name(backbone) -> str:
    """A named backbone's name, or a module's class name."""
    return backbone if isinstance(backbone, str) else type(backbone).__name__
