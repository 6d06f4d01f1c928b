"""Importing sktransfer changes no warning filter of the process (#15).

A library that calls ``warnings.filterwarnings`` at import hides warnings from its users'
code too, for the rest of the process. Filters belong inside ``warnings.catch_warnings()``
where the warning arises.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sktransfer"

#: Imports the dependencies a module list names first (some of them, numpy, scipy, torch,
#: add filters of their own when imported), then the modules; prints the filters the modules
#: added or removed.
SCRIPT = """
import importlib, json, sys, warnings
dependencies, modules = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for name in dependencies:
    try:
        importlib.import_module(name)
    except ImportError:
        pass  # an optional dependency that is not installed, or a name that is no module
before = [repr(f) for f in warnings.filters]
for name in modules:
    importlib.import_module(name)
after = [repr(f) for f in warnings.filters]
print(json.dumps({"added": [f for f in after if f not in before],
                  "removed": [f for f in before if f not in after]}))
"""


def module_names(package: Path) -> list[str]:
    names = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] != "__main__":  # the command line runs when imported
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def third_party_imports(package: Path) -> list[str]:
    """Every absolute import of another package inside ``package``, at any depth, with the
    names a ``from`` import takes (a name may be a submodule)."""
    found = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return sorted(name for name in found if name.split(".")[0] != package.name)


def filter_changes(package: Path) -> dict:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            json.dumps(third_party_imports(package)),
            json.dumps(module_names(package)),
        ],
        cwd=package.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.splitlines()[-1])


def test_importing_every_module_changes_no_warning_filter():
    assert filter_changes(PACKAGE) == {"added": [], "removed": []}, (
        "importing sktransfer changed the process's warning filters: put the filter inside "
        "`with warnings.catch_warnings():` around the code that warns."
    )


def test_the_check_sees_a_module_level_filter(tmp_path):
    package = tmp_path / "noisy"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "quiet.py").write_text(
        "import warnings\n\ndef f():\n    with warnings.catch_warnings():\n"
        "        warnings.simplefilter('ignore')\n"
    )
    (package / "loud.py").write_text("import warnings\nwarnings.filterwarnings('ignore', 'x')\n")
    changes = filter_changes(package)
    assert len(changes["added"]) == 1 and "'x'" in changes["added"][0]
    (package / "loud.py").unlink()
    assert filter_changes(package) == {"added": [], "removed": []}
