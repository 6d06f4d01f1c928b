"""The README's Python examples run as written and give the outputs the README shows.

Blocks marked '# not run' need the user's files. A line of a runnable block that shows an
output (a trailing comment on a ``print(...)`` or a bare expression, or on a line listed in
SHOWN) is checked against what that line gives when the block runs statement by statement.
"""

import ast
import re
from pathlib import Path

import numpy as np
import pytest
from torchvision.transforms._presets import ImageClassification

README = Path(__file__).parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)

# Each README line that shows an output, and the check of the value its statement gives: the
# arguments of a print, the value of an expression, the target of an assignment.
SHOWN = {
    "features = extractor.fit_transform(images)      # float32, shape (8, 2 * (256 + 512))": (
        lambda features: features.dtype == np.float32 and features.shape == (8, 2 * (256 + 512))
    ),
    "extractor.layer_slices_                         "
    "# {'layer3': slice(0, 512), 'layer4': slice(512, 1536)}": (
        lambda slices: slices == {"layer3": slice(0, 512), "layer4": slice(512, 1536)}
    ),
    "extractor.get_feature_names_out()[:2]           # ['layer3__avg0', 'layer3__avg1']": (
        lambda names: list(names) == ["layer3__avg0", "layer3__avg1"]
    ),
    "print(bb.weights)                        # MobileNet_V2_Weights.IMAGENET1K_V1": (
        lambda printed: str(printed[0]) == "MobileNet_V2_Weights.IMAGENET1K_V1"
    ),
    "print(bb.transform)                      # torchvision's ImageClassification preprocessing": (
        lambda printed: isinstance(printed[0], ImageClassification)
    ),
    "print(linear_cka(shallow, shallow), linear_cka(shallow, deep))   # 1.0, about 0.13": (
        lambda printed: printed == pytest.approx((1.0, 0.13), abs=0.01)
    ),
    "print(logme_score(shallow, labels) < logme_score(deep, labels))  # True": (
        lambda printed: printed == (True,)
    ),
    "print(student.score(X_test, y_test))  # about 0.84": (
        lambda printed: printed[0] == pytest.approx(0.84, abs=0.03)
    ),
}


def _shows_an_output(statement: ast.stmt, line: str) -> bool:
    return isinstance(statement, ast.Expr) and "  # " in line


def _value(statement: ast.stmt, namespace: dict):
    """Run one statement of a block in ``namespace``; give the value its line shows."""
    expression = statement.value if isinstance(statement, ast.Expr) else None
    if isinstance(expression, ast.Call) and getattr(expression.func, "id", None) == "print":
        printed = tuple(_evaluate(argument, namespace) for argument in expression.args)
        print(*printed)
        return printed
    if expression is not None:
        return _evaluate(expression, namespace)
    exec(compile(ast.Module([statement], type_ignores=[]), str(README), "exec"), namespace)
    if isinstance(statement, ast.Assign) and isinstance(statement.targets[0], ast.Name):
        return namespace[statement.targets[0].id]
    return None


def _evaluate(expression: ast.expr, namespace: dict):
    return eval(compile(ast.Expression(expression), str(README), "eval"), namespace)


def _marks(code: str):
    if "# not run" in code:
        return [pytest.mark.skip(reason="needs the user's own files: " + code.splitlines()[0])]
    return [pytest.mark.real_weights] if '"mobilenet_v2"' in code else []


@pytest.mark.parametrize(
    "code", [pytest.param(code, marks=_marks(code), id=str(i)) for i, code in enumerate(BLOCKS)]
)
def test_readme_example_runs_and_shows_what_it_gives(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines, namespace, checked = code.splitlines(), {"__name__": "readme"}, set()
    for statement in ast.parse(code).body:
        line = lines[statement.end_lineno - 1]
        value = _value(statement, namespace)
        if line in SHOWN:
            assert SHOWN[line](value), f"README shows {line!r}, but it gave {value!r}"
            checked.add(line)
        else:
            assert not _shows_an_output(statement, line), f"add {line!r} to SHOWN"
    assert checked == {line for line in SHOWN if line in lines}


def test_every_shown_output_is_in_a_runnable_block():
    runnable = {line for code in BLOCKS if "# not run" not in code for line in code.splitlines()}
    assert set(SHOWN) <= runnable, "a README line changed: update SHOWN"
