"""The command line: ``sktransfer report``'s start, its folders and its one-line errors (#16)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sktransfer.__main__ import main

ROOT = Path(__file__).parents[1]


def make_tree(root: Path, n: int = 5) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("ants", "bees"):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")
    return root


def run(argv, capsys) -> tuple[int, str]:
    code = main(["report", *argv, "--quiet"])
    return code, capsys.readouterr().err


def check_one_line(code, err, *phrases):
    assert code == 2, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith("sktransfer report: error: ")
    for phrase in phrases:
        assert phrase in err, err


def test_out_holding_a_report_is_refused_without_force(tmp_path, capsys):
    data = make_tree(tmp_path / "data")
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{}")
    (out / "report.md").write_text("mine")
    code, err = run([str(data), "--out", str(out)], capsys)
    check_one_line(code, err, "already holds a report", "report.md, report.json", "--force")
    assert (out / "report.md").read_text() == "mine"  # untouched


def test_out_inside_data_is_refused(tmp_path, capsys):
    data = make_tree(tmp_path / "data")
    code, err = run([str(data), "--out", str(data / "ants" / "report")], capsys)
    check_one_line(code, err, "inside DATA", "next run would train on them")
    assert not (data / "ants" / "report").exists()


@pytest.mark.parametrize("flag", ["--out", "--cache"])
def test_a_file_named_as_folder_is_refused(tmp_path, capsys, flag):
    data = make_tree(tmp_path / "data")
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me")
    argv = [str(data), "--out", str(tmp_path / "out"), flag, str(existing)]
    code, err = run(argv, capsys)
    check_one_line(code, err, flag, "is an existing file, not a folder")
    argv = [str(data), "--out", str(tmp_path / "out"), flag, str(existing / "sub")]
    code, err = run(argv, capsys)
    check_one_line(code, err, flag, "is inside the file")
    assert existing.read_text() == "keep me"


def test_max_images_below_the_minimum_is_refused(tmp_path, capsys):
    data = make_tree(tmp_path / "data")
    code, err = run([str(data), "--out", str(tmp_path / "o"), "--max-images", "1"], capsys)
    check_one_line(code, err, "--max-images 1 is too few", "2 training and 1 test image per class")
    assert "--max-images 6 or more" in err


def test_budget_clock_starts_when_the_command_starts(tmp_path, monkeypatch):
    import sktransfer.report

    calls = []
    monkeypatch.setattr(sktransfer.report, "build_report", lambda *a, **k: calls.append(k))
    before = time.perf_counter()
    assert main(["report", "--out", str(tmp_path / "o"), "--quiet"]) == 0
    assert before <= calls[0]["started"] <= time.perf_counter()
    assert calls[0]["force"] is False


def test_first_line_and_refusals_come_before_torch(tmp_path):
    """The first line prints before the heavy imports (seconds on a busy machine), and bad
    folders are refused before them too."""
    existing = tmp_path / "file"
    existing.write_text("")
    code = (
        "import sys\nfrom sktransfer.__main__ import main\n"
        f"code = main(['report', '--out', {str(existing)!r}])\n"
        "print(code, 'torch' in sys.modules, 'sklearn' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    lines = result.stderr.splitlines()
    assert lines[0].startswith("sktransfer report: the embedded default (digits) -> ")
    assert "budget 5 min from now" in lines[0]
    assert lines[1].startswith("sktransfer report: error: ") and len(lines) == 2
    assert result.stdout.split() == ["2", "False", "False"]
