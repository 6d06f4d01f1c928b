"""The output policy (sktransfer/progress.py): plain lines in logs, labelled skorch tables,
the teacher query's progress. The notebook widget is tested in test_notebooks.py (it needs a
kernel)."""

import io
import sys

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from tiny_networks import small_mlp

from sktransfer import DistilledClassifier, FineTuneClassifier
from sktransfer.distillation.teachers import teacher_outputs
from sktransfer.images import check_images
from sktransfer.progress import PlainPrintLog, progress_bar, training_header

pytestmark = pytest.mark.usefixtures("one_thread")


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_log_bar_writes_short_lines_without_carriage_returns(capsys):
    with progress_bar(total=1000, desc="mobilenet_v2 features", unit="img") as bar:
        for _ in range(1000):
            bar.update(1)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err and "\x1b" not in err
    assert err.endswith("\n")
    # the first state and the final one: updates faster than LINE_INTERVAL are not printed
    assert 1 <= len(lines) <= 3, lines
    assert lines[-1].startswith("mobilenet_v2 features: 100% 1000/1000")
    assert all(len(line) < 100 for line in lines)


def test_log_bar_not_left_still_ends_with_its_final_line(capsys):
    bar = progress_bar(total=2, desc="epoch 1", unit="batch")
    bar.leave = False  # skorch's per-epoch bars: erased on a terminal, kept in a log
    bar.update(2)
    bar.close()
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.endswith("\n") and err.splitlines()[-1].startswith("epoch 1: 100% 2/2")


def test_disabled_bar_prints_nothing(capsys):
    with progress_bar(total=5, desc="x", disable=True) as bar:
        bar.update(5)
    assert capsys.readouterr().err == ""


def test_terminal_gets_tqdm_redrawn_bar(monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with progress_bar(total=3, desc="x") as bar:
        bar.update(3)
    assert "\r" in terminal.getvalue()


@pytest.mark.parametrize("terminal", [False, True])
def test_epoch_table_colours_only_on_a_terminal(monkeypatch, terminal):
    if terminal:
        monkeypatch.setattr(sys, "stdout", _Terminal())
    log = PlainPrintLog().initialize()
    row = {"epoch": 1, "train_loss": 0.5, "train_loss_best": True, "dur": 0.1}
    table = log.table(row)
    assert ("\x1b[" in table) is terminal
    assert "0.5000" in table


def _vectors():
    X, y = make_classification(n_samples=60, n_features=6, random_state=0)
    return X.astype(np.float32), y


def test_grid_search_labels_each_candidates_table(capsys):
    X, y = _vectors()
    clf = FineTuneClassifier(small_mlp(), train_layers="all", max_epochs=1, verbose=1)
    GridSearchCV(clf, {"lr": [0.01, 0.02]}, cv=2, refit=False).fit(X, y)
    out = capsys.readouterr().out
    headers = [line for line in out.splitlines() if ": training on" in line]
    assert len(headers) == 4  # 2 candidates x 2 folds, each above its own table
    assert sum("lr=0.02" in line for line in headers) == 2
    assert all("training on 30 samples" in line for line in headers)
    assert "\x1b[" not in out  # captured stdout is not a terminal


def test_training_header_names_changed_parameters_on_one_short_line():
    clf = FineTuneClassifier("mobilenet_v2", lora_rank=4, train_layers=3, max_epochs=2)
    header = training_header(clf, 100, None)
    assert header == (
        "FineTuneClassifier(lora_rank=4, max_epochs=2, train_layers=3): training on 100 samples"
    )


def test_training_header_names_objects_by_type():
    teacher = LogisticRegression().fit(*_vectors())
    clf = DistilledClassifier(teacher, callbacks=[object(), object()], image_size=80)
    header = training_header(clf, 10, 2)
    assert header == (
        "DistilledClassifier(callbacks=<2 list items>, image_size=80, "
        "teacher=<LogisticRegression>): training on 10 samples, validating on 2"
    )


def test_distilled_verbose_shows_the_teacher_querys_progress(capsys):
    X, y = _vectors()
    teacher = LogisticRegression().fit(X, y)
    student = DistilledClassifier(
        teacher, student="mlp-8", max_epochs=1, batch_size=2, verbose=1, random_state=0
    )
    student.fit(X[:10], y[:10], X_unlabeled=X[10:])
    err = capsys.readouterr().err
    assert "teacher answers: 100% 60/60" in err
    assert "\r" not in err


def test_chunked_teacher_answers_equal_one_query():
    X, y = _vectors()
    teacher = LogisticRegression().fit(X, y)
    inputs = check_images(X, allow_vectors=True)
    whole = teacher_outputs(teacher, X, inputs, batch_size=2, verbose=0)
    chunked = teacher_outputs(teacher, list(X), inputs, batch_size=2, verbose=1)
    np.testing.assert_allclose(chunked.logits, whole.logits, rtol=1e-6)


def test_verbose_2_batch_bars_are_plain_lines_in_a_log(capsys):
    X, y = _vectors()
    FineTuneClassifier(small_mlp(), train_layers="all", max_epochs=2, batch_size=20, verbose=2).fit(
        X, y
    )
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    assert [line.split(":")[0] for line in err.splitlines() if "100%" in line] == [
        "epoch 1",
        "epoch 2",
    ]
    assert "epoch 2: 100% 3/3" in err
