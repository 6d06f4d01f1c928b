"""Small functions and modules (#15): none longer than the limits below, in the package and
the benchmarks. Split by concept, not by line count: each piece named after what it does."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 80  # docstring included
MAX_MODULE_LINES = 600
FILES = sorted(
    [*ROOT.joinpath("sktransfer").rglob("*.py"), *ROOT.joinpath("benchmarks").glob("*.py")]
)


def functions(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_functions_and_module_are_short(path):
    source = path.read_text()
    too_long = [
        f"{node.name} (line {node.lineno}): {node.end_lineno - node.lineno + 1} lines"
        for node in functions(ast.parse(source))
        if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines: {too_long}; split them."
    lines = source.count("\n")
    assert lines <= MAX_MODULE_LINES, (
        f"{lines} lines, over {MAX_MODULE_LINES}: split the module by concept."
    )


def test_the_scan_sees_the_code():
    # A glob that found nothing would make the test above pass vacuously.
    assert len(FILES) > 60 and any(p.name == "build.py" for p in FILES)
