"""Start-up cost: ``import sktransfer`` against ``import torch, torchvision`` (#16).

Each statement runs in a fresh ``python -c`` process (interpreter start-up included), the
statements interleaved in turn so that a change of load on a shared machine hits all of them
alike; after one untimed warm-up round (the operating system's file cache), ``--repeats``
rounds are timed and the medians compared. Goal: ``import sktransfer`` <= 1.15x
``import torch, torchvision``. Also shown: an empty interpreter (the floor) and the first
real use, ``from sktransfer import DeepFeatureExtractor``, against its floor: torch,
torchvision and ``sklearn.base`` (which imports scipy and, when installed, pandas), what any
scikit-learn estimator built on torchvision must import.

    PYTHONPATH=. python benchmarks/import_time.py [--repeats 7] [--out FILE.md] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from benchmarks._common import RESULTS, ROOT, add_smoke_flag, header, markdown_table, smoke_folder

BASELINE = "import torch, torchvision"
TARGET = "import sktransfer"
FLOOR = "import torch, torchvision, sklearn.base"
FIRST_USE = "from sktransfer import DeepFeatureExtractor"
STATEMENTS = ("pass", BASELINE, TARGET, FLOOR, FIRST_USE)
GOAL = 1.15


def run_once(statement: str) -> float:
    """Wall seconds of a fresh interpreter running ``statement`` (from the repository root,
    so that this checkout's sktransfer is the one imported)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], cwd=ROOT, check=True)
    return time.perf_counter() - start


def measure(repeats: int, warm_up: bool = True) -> dict[str, list[float]]:
    for statement in STATEMENTS if warm_up else ():  # warm-up round, not timed
        run_once(statement)
    times: dict[str, list[float]] = {s: [] for s in STATEMENTS}
    for _ in range(repeats):
        for statement in STATEMENTS:
            times[statement].append(run_once(statement))
    return times


def imported_from() -> str:
    code = "import sktransfer; print(sktransfer.__file__)"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()


def report(times: dict[str, list[float]], command: str, load_before: float) -> str:
    baseline = statistics.median(times[BASELINE])
    rows = [
        {
            "statement": f"`python -c {s!r}`",
            "median (s)": f"{statistics.median(t):.2f}",
            "min-max (s)": f"{min(t):.2f}-{max(t):.2f}",
            f"/ `{BASELINE}`": f"{statistics.median(t) / baseline:.2f}",
        }
        for s, t in times.items()
    ]
    ratio = statistics.median(times[TARGET]) / baseline
    first_use = statistics.median(times[FIRST_USE]) / statistics.median(times[FLOOR])
    verdict = "meets" if ratio <= GOAL else "misses"
    load = os.getloadavg()
    return (
        header("Import time: `import sktransfer` against `import torch, torchvision`", command)
        + f"- Load average (1, 5, 15 min): {load_before:.2f} before, "
        f"{load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} after; the machine is shared with "
        "other jobs, so absolute times are noisy: the ratios compare statements measured "
        "interleaved in the same run.\n"
        f"- sktransfer imported from `{os.path.relpath(imported_from(), ROOT)}`.\n\n"
        f"Each statement in a fresh process, interleaved, {len(times[TARGET])} timed rounds "
        "after one warm-up round; wall time including interpreter start-up.\n\n"
        + markdown_table(rows)
        + f"\n`import sktransfer` / `{BASELINE}` = **{ratio:.2f}x** ({verdict} the goal of "
        f"<= {GOAL}x). `import sktransfer` imports none of its modules; each public name is "
        "imported on first use. The first real use, `from sktransfer import "
        f"DeepFeatureExtractor`, is **{first_use:.2f}x** its floor `{FLOOR}` (what any "
        "scikit-learn estimator on torchvision imports; `sklearn.base` brings scipy and "
        "pandas): the training estimators (skorch), the analysis tools and the plots "
        "(matplotlib) are imported only when used.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(RESULTS / "import_time.md"))
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:  # one timed round, no warm-up round
        args.repeats, args.out = 1, str(smoke_folder("import_time") / "import_time.md")
    load_before = os.getloadavg()[0]
    times = measure(args.repeats, warm_up=not args.smoke)
    command = "PYTHONPATH=. python benchmarks/import_time.py " + " ".join(sys.argv[1:])
    text = report(times, command.strip(), load_before)
    with open(args.out, "w") as handle:
        handle.write(text)
    print(text)


if __name__ == "__main__":
    main()
