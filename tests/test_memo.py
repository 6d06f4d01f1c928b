"""The report's memo: every stage's result comes back equal, nothing in its folder is ever
unpickled or executed, and a file that fails authentication is recomputed."""

import os
import pickle

import numpy as np
import pandas as pd
import pytest

from sktransfer.frozen.files import StoreWarning
from sktransfer.frozen.secret import seal
from sktransfer.report import memo as memo_module
from sktransfer.report.memo import Memo

#: What the report memoises, one value per stage (see sktransfer/report/stages.py).
STAGE_RESULTS = {
    "layer_plan": (["features.3", "features.18"], "classifier.1"),
    "stacked_features": (
        np.arange(12, dtype=np.float32).reshape(3, 4),
        {"features.3": slice(0, 2), "features.18": slice(2, 4)},
        "DEFAULT",
    ),
    "score_table": pd.DataFrame(
        {"layer": ["a", "b"], "logme": [0.5, float("nan")], "n_features": [3, 4]}
    ),
    "held_out": {
        "a": {"accuracy": 0.75, "fit_seconds": 0.01, "predictions": np.array(["cat", "dog"])},
        "b": {"accuracy": 1.0, "fit_seconds": 0.02, "predictions": np.array([0, 1])},
    },
    "tsne_png": b"\x89PNG\r\n\x1a\n...",
}


def check_equal(got, want):
    if isinstance(want, pd.DataFrame):
        pd.testing.assert_frame_equal(got, want)
    elif isinstance(want, np.ndarray):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype
    elif isinstance(want, dict | list | tuple):
        assert type(got) is type(want) and len(got) == len(want)
        pairs = zip(got.items(), want.items()) if isinstance(want, dict) else zip(got, want)
        for a, b in pairs:
            check_equal(a, b)
    else:
        assert got == want and type(got) is type(want)


class Counted:
    """A stage that counts its calls."""

    def __init__(self, result, name="stage"):
        self.result, self.calls = result, 0
        self.__qualname__ = self.__name__ = name  # the memo's stage name

    def __call__(self, x, label="stage"):
        self.calls += 1
        return self.result


@pytest.mark.parametrize("name", STAGE_RESULTS)
def test_every_stage_result_comes_back_equal(tmp_path, name):
    stage = Counted(STAGE_RESULTS[name], name)
    memo = Memo(tmp_path)
    first = memo.cache(stage)(np.arange(3))
    second = Memo(tmp_path).cache(stage)(np.arange(3))  # another process: read from disk
    assert stage.calls == 1
    check_equal(second, STAGE_RESULTS[name])
    check_equal(first, STAGE_RESULTS[name])


def test_calls_are_keyed_by_exact_arguments(tmp_path):
    stage = Counted(1)
    memo = Memo(tmp_path).cache(stage, ignore=["label"])
    memo(np.arange(3), label="a")
    memo(np.arange(3), label="b")  # ignored argument
    assert stage.calls == 1 and memo.check_call_in_cache(np.arange(3))
    memo(np.arange(3, dtype=np.int32))  # another dtype: another call
    memo(np.arange(3)[::-1])
    assert stage.calls == 3
    assert not memo.check_call_in_cache(np.arange(4))


class Payload:
    """What an attacker plants: unpickling it creates a file."""

    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def test_planted_pickles_are_never_executed_and_results_recomputed(tmp_path):
    sentinel = tmp_path / "attacker-ran"
    stage = Counted({"accuracy": 0.5})
    memo = Memo(tmp_path / "memo").cache(stage)
    memo(np.arange(3))
    files = list((tmp_path / "memo").rglob("*.memo"))
    assert len(files) == 1
    bomb = pickle.dumps(Payload(str(sentinel)))
    files[0].write_bytes(bomb)  # the joblib attack: output.pkl replaced
    (files[0].parent / "output.pkl").write_bytes(bomb)
    buffer = files[0].parent / "object.npz"  # an npz with an object array
    np.savez(buffer, skeleton=np.array([Payload(str(sentinel))], dtype=object))
    files[0].write_bytes(buffer.read_bytes())

    assert Memo(tmp_path / "memo").cache(stage)(np.arange(3)) == {"accuracy": 0.5}
    assert stage.calls == 2 and not sentinel.exists()

    # Even sealed with the user's key, an archive holding pickled objects is not loaded.
    name = f"{memo.stage}\n{files[0].stem}"
    files[0].write_bytes(seal(memo_module._MAGIC, name, buffer.read_bytes()))
    assert Memo(tmp_path / "memo").cache(stage)(np.arange(3)) == {"accuracy": 0.5}
    assert stage.calls == 3 and not sentinel.exists()


def test_memo_written_without_the_key_or_for_another_call_is_recomputed(tmp_path, monkeypatch):
    stage = Counted("honest")
    memo = Memo(tmp_path).cache(stage)
    memo(1)
    memo(2)
    file_of_1, file_of_2 = sorted(tmp_path.rglob("*.memo"), key=os.path.getmtime)
    file_of_1.write_bytes(file_of_2.read_bytes())  # another call's valid result, moved
    with monkeypatch.context() as attacker:
        attacker.setenv("SKTRANSFER_KEY_FILE", str(tmp_path / "attacker.key"))
        Memo(tmp_path).cache(Counted("forged"))(2)  # sealed with another key
    assert memo(1) == "honest" and memo(2) == "honest"
    assert stage.calls == 4


def test_unwritable_memo_computes_with_one_warning(tmp_path):
    (tmp_path / "a-file").write_text("")
    stage = Counted([1, 2])
    memo = Memo(tmp_path / "a-file" / "memo").cache(stage)
    with pytest.warns(StoreWarning, match="cannot be written") as caught:
        assert memo(1) == [1, 2] and memo(2) == [1, 2]
    assert len(caught) == 1 and stage.calls == 2


def test_json_documents_are_authenticated(tmp_path, monkeypatch):
    memo = Memo(tmp_path)
    memo.write_json("costs", {"net": 0.25})
    assert Memo(tmp_path).read_json("costs") == {"net": 0.25}
    monkeypatch.setenv("SKTRANSFER_KEY_FILE", str(tmp_path / "attacker.key"))
    assert Memo(tmp_path).read_json("costs") is None
