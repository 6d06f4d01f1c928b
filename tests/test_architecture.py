"""The module map of docs/architecture.md holds: data flows one way through the package.

Every import inside sktransfer, at the top of a module or inside a function, names a module
earlier in :data:`FLOW` (a package's ``__init__`` may gather its own modules). A function-level
import may delay an earlier module (startup time) but never dodge a cycle.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sktransfer"

#: The flow, first to last: image input -> backbone -> frozen pass -> post-processing ->
#: classifier; then the training estimators, the analysis tools and the report. Keep
#: docs/architecture.md in step.
FLOW = [
    "sktransfer._version",
    "sktransfer._compat",  # private names of scikit-learn and torchvision, in one place
    "sktransfer.devices",
    "sktransfer.progress",
    "sktransfer.footprint",
    "sktransfer.constraints",
    "sktransfer.decoding",
    "sktransfer.images",
    "sktransfer.backbones",
    "sktransfer.frozen.pooling",
    "sktransfer.frozen.registry",
    "sktransfer.frozen.files",
    "sktransfer.frozen.secret",
    "sktransfer.frozen.engines",
    "sktransfer.frozen.network",
    "sktransfer.frozen.store",
    "sktransfer.frozen.passes",
    "sktransfer.frozen",
    "sktransfer.transferability._checks",
    "sktransfer.transferability.evidence",
    "sktransfer.transferability.hscore",
    "sktransfer.transferability.leep",
    "sktransfer.transferability.transrate",
    "sktransfer.transferability.separability",
    "sktransfer.transferability.probe",
    "sktransfer.transferability",
    "sktransfer.extraction",
    "sktransfer.extract_folder",
    "sktransfer.extract_job",
    "sktransfer.parallel_predict",
    "sktransfer.postprocessing",
    "sktransfer.analysis.cka",
    "sktransfer.analysis.features",
    "sktransfer.analysis.ranking",
    "sktransfer.analysis.plots",
    "sktransfer.analysis",
    "sktransfer.training.data",
    "sktransfer.training.callbacks",
    "sktransfer.training.net",
    "sktransfer.training.context",
    "sktransfer.training.base",
    "sktransfer.training",
    "sktransfer.mixup",
    "sktransfer.hyperrule",
    "sktransfer.finetune_frozen",
    "sktransfer.finetune_layers",
    "sktransfer.finetune",
    "sktransfer.layer_transfer",
    "sktransfer.distillation.losses",
    "sktransfer.distillation.students",
    "sktransfer.distillation.teachers",
    "sktransfer.distillation.network",
    "sktransfer.distillation.classifier",
    "sktransfer.distillation.generations",
    "sktransfer.distillation",
    "sktransfer.pruning.magnitude",
    "sktransfer.pruning.trainers",
    "sktransfer.pruning.plots",
    "sktransfer.pruning.lottery",
    "sktransfer.pruning",
    "sktransfer.report.paths",
    "sktransfer.report.budget",
    "sktransfer.report.data",
    "sktransfer.report.codegen",
    "sktransfer.report.tradeoff",
    "sktransfer.report.memo",
    "sktransfer.report.plan",
    "sktransfer.report.context",
    "sktransfer.report.recommend",
    "sktransfer.report.plots",
    "sktransfer.report.render",
    "sktransfer.report.stages",
    "sktransfer.report.build",
    "sktransfer.report",
    "sktransfer",
    "sktransfer.__main__",  # the command line: the package's user
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def internal_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every sktransfer import in ``path``, at any depth."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("sktransfer"):
                continue
            for alias in node.names:  # `from . import pruning` names a module
                candidate = f"{target}.{alias.name}"
                found.append((node.lineno, candidate if candidate in FLOW else target))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("sktransfer")]
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_is_on_the_map():
    missing = [module_name(p) for p in MODULES if module_name(p) not in FLOW]
    assert not missing, (
        f"{missing} are not in tests/test_architecture.py FLOW: add each where it sits in the "
        "flow, and to docs/architecture.md."
    )


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_flow_one_way(path):
    name = module_name(path)
    rank = FLOW.index(name)
    is_package = path.name == "__init__.py"
    wrong = []
    for line, target in internal_imports(path):
        if target not in FLOW:
            wrong.append(f"line {line}: {target} (not on the map)")
        elif is_package and target.startswith(name + "."):
            continue  # a package gathers its own modules
        elif FLOW.index(target) >= rank:
            wrong.append(f"line {line}: {target}")
    assert not wrong, f"{name} imports modules later in the flow (or itself): {wrong}"
