"""The notebook gallery (notebooks/): committed with clean outputs, and executable.

The checks of the committed files are fast and always run. Executing the notebooks takes
minutes (each one at most 3 on a laptop CPU), so those tests run only with
SKTRANSFER_RUN_NOTEBOOKS=1, as `make notebooks` sets it; CI runs that target. They read
$SKTRANSFER_DATA (default ../shared/data), or the embedded digits when it is absent.
"""

import importlib.util
import json
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MAX_BYTES = 1_500_000
RUN = os.environ.get("SKTRANSFER_RUN_NOTEBOOKS") == "1"
run_notebooks = pytest.mark.skipif(
    not RUN, reason="runs notebooks for minutes: set SKTRANSFER_RUN_NOTEBOOKS=1 (make notebooks)"
)


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _outputs(notebook: dict):
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            yield from cell.get("outputs", [])


def _text(output: dict) -> str:
    if output["output_type"] == "stream":
        text = output["text"]
    else:
        text = output.get("data", {}).get("text/plain", "")
    return "".join(text) if isinstance(text, list) else text


def test_the_six_notebooks_of_the_gallery():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_is_executed_small_and_clean(path):
    assert path.stat().st_size < MAX_BYTES
    notebook = _load(path)
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert all(c["execution_count"] is not None for c in code), "run it: make notebooks"
    outputs = list(_outputs(notebook))
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "a plot, saved as PNG"
    assert "text/html" in code[-1]["outputs"][-1]["data"], "ends with a table"
    for output in outputs:
        text = _text(output)
        assert "\x1b[" not in text  # no colour codes in saved outputs
        assert "\r" not in text
        assert all(len(line) < 300 for line in text.splitlines())
        if "application/vnd.jupyter.widget-view+json" in output.get("data", {}):
            assert not re.search(r"\b0/\d", text), f"a progress bar saved at its start: {text}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_first_code_cell_names_the_data_folder(path):
    first = next(c for c in _load(path)["cells"] if c["cell_type"] == "code")
    assert "DATA_DIR =" in "".join(first["source"])


def test_readme_links_every_notebook():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for path in NOTEBOOKS:
        assert f"(notebooks/{path.name})" in readme


def _executor():
    pytest.importorskip("nbclient", reason="pip install -e '.[test]'")
    pytest.importorskip("ipykernel", reason="pip install -e '.[test]'")
    spec = importlib.util.spec_from_file_location("execute", ROOT / "notebooks" / "execute.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@run_notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path):
    notebook = _executor().execute(path)  # raises CellExecutionError naming the cell
    assert not [o for o in _outputs(notebook) if o["output_type"] == "error"]


@run_notebooks
def test_progress_widget_saves_its_final_state():
    """tqdm's widget stores the text it was displayed with ("0/5"); sktransfer's bar
    re-displays itself on close, so the saved text is the final state."""
    pytest.importorskip("ipywidgets", reason="pip install -e '.[test]'")
    import nbformat

    source = (
        "from sktransfer.progress import progress_bar\n"
        "with progress_bar(total=5, desc='images', unit='img') as bar:\n"
        "    bar.update(5)"
    )
    erased = (
        "bar = progress_bar(total=3, desc='epoch 1')\nbar.leave = False\nbar.update(3)\nbar.close()"
    )
    cells = [nbformat.v4.new_code_cell(source), nbformat.v4.new_code_cell(erased)]
    scratch = ROOT / "notebooks" / ".progress-check.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=cells), scratch)
    try:
        notebook = _executor().execute(scratch, timeout=120)
    finally:
        scratch.unlink()
    outputs = notebook.cells[0].outputs
    widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o["data"]]
    assert len(widgets) == 1, outputs  # a widget, not a text fallback
    assert "5/5" in _text(widgets[0]) and "100%" in _text(widgets[0])
    assert not [o for o in outputs if o.get("name") == "stderr"]
    # a bar that is not left (skorch's per-epoch bars) leaves neither widget nor text
    assert [_text(o) for o in notebook.cells[1].outputs] == [""]
