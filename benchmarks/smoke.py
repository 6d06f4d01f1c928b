"""Run every benchmark's ``--smoke`` mode (what CI runs): each script in its own process.

Discovers the scripts of benchmarks/ that define ``main`` (this runner and ``_common`` aside),
runs ``python benchmarks/<name>.py --smoke`` with a timeout, results under one temporary
folder (removed at the end unless ``--keep``), and prints a table of name / seconds / ok.
Exits non-zero if any script fails or times out; the failures' output tails are printed.

    PYTHONPATH=. python benchmarks/smoke.py [--timeout 120] [--only NAME ...] [--synthetic]
                                            [--jobs 2]

``--synthetic`` points ``SKTRANSFER_DATA`` at an empty folder, so that every script runs on the
tiny synthetic stand-ins, as on a machine without the shared data.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
ROOT = BENCHMARKS.parent


def scripts() -> list[Path]:
    """The benchmark scripts: every benchmarks/*.py with a top-level ``main`` function."""
    found = []
    for path in sorted(BENCHMARKS.glob("*.py")):
        if path.name.startswith("_") or path.name == Path(__file__).name:
            continue
        tree = ast.parse(path.read_text())
        if any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body):
            found.append(path)
    return found


def run(script: Path, timeout: float, env: dict) -> tuple[float, str, str]:
    """Seconds, status ("ok", "FAILED (exit N)" or "TIMEOUT") and the output's tail."""
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, str(script), "--smoke"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout or ""  # bytes even with text=True (a CPython quirk)
        if isinstance(output, bytes):
            output = output.decode(errors="replace")
        return time.perf_counter() - start, "TIMEOUT", output[-3000:]
    seconds = time.perf_counter() - start
    status = "ok" if done.returncode == 0 else f"FAILED (exit {done.returncode})"
    return seconds, status, (done.stdout + done.stderr)[-3000:]


def environment(folder: Path, synthetic: bool) -> dict:
    env = dict(os.environ, SKTRANSFER_SMOKE_DIR=str(folder), MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if synthetic:
        empty = folder / "no-shared-data"
        empty.mkdir()
        env["SKTRANSFER_DATA"] = str(empty)
    return env


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=180, help="seconds per script")
    parser.add_argument("--only", nargs="+", default=None, help="these scripts only (names)")
    parser.add_argument("--synthetic", action="store_true", help="ignore the shared data")
    parser.add_argument("--keep", action="store_true", help="keep the results folder")
    parser.add_argument(
        "--jobs", type=int, default=1, help="scripts run side by side (each on one thread)"
    )
    args = parser.parse_args(argv)
    chosen = [s for s in scripts() if args.only is None or s.stem in args.only]
    folder = Path(tempfile.mkdtemp(prefix="sktransfer-smoke-"))
    env = environment(folder, args.synthetic)
    if args.jobs > 1:  # side by side, one thread each: most of a smoke run is imports and setup
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    rows, failures, start = [], [], time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            runs = {pool.submit(run, script, args.timeout, env): script for script in chosen}
            for done in as_completed(runs):
                name, (seconds, status, tail) = runs[done].stem, done.result()
                rows.append((name, seconds, status))
                print(f"{name:<24} {seconds:7.1f} s  {status}", flush=True)
                if status != "ok":
                    failures.append((name, tail))
        rows.sort()
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    total = time.perf_counter() - start
    print("\n| benchmark | seconds | ok |\n| --- | ---: | --- |")
    print("\n".join(f"| {name} | {seconds:.1f} | {status} |" for name, seconds, status in rows))
    print(f"| **all {len(rows)}** | **{total:.1f}** | {len(rows) - len(failures)} ok |")
    if args.keep:
        print(f"Results kept in {folder}")
    for name, tail in failures:
        print(f"\n---- {name} (last lines) ----\n{tail}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
