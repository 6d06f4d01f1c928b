"""Execute the notebooks top to bottom, in order, and report each one's wall time.

    python notebooks/execute.py                 # run all, outputs written back (make notebooks)
    python notebooks/execute.py --check 03_*    # run, keep the committed files unchanged

Each notebook runs in a fresh kernel started in notebooks/, with this checkout first on
PYTHONPATH (so an unreleased sktransfer is the one imported). A cell that raises stops the
run with the notebook's name and exit code 1. Notebooks read their data folder from
$SKTRANSFER_DATA (default ../shared/data from the repository root) and cache activations in
$SKTRANSFER_CACHE_DIR.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAX_BYTES = 1_500_000  # a committed notebook, outputs included


def notebook_paths(patterns=()) -> list[Path]:
    """The gallery's notebooks in order, or those matching the glob patterns."""
    paths = sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
    if patterns:
        paths = [p for p in paths if any(p.match(pattern) for pattern in patterns)]
    return paths


def execute(path: Path, *, timeout: int = 600):
    """Run one notebook in a fresh kernel; returns the executed notebook (not written)."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HERE.parent), os.environ.get("PYTHONPATH")) if p
    )
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": HERE}}
    )
    client.execute()
    return notebook


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patterns", nargs="*", help="glob patterns of notebook names")
    parser.add_argument("--check", action="store_true", help="do not write outputs back")
    args = parser.parse_args(argv)
    import nbformat
    from nbclient.exceptions import CellExecutionError

    total = 0.0
    for path in notebook_paths(args.patterns):
        start = time.perf_counter()
        try:
            notebook = execute(path)
        except CellExecutionError as error:
            print(f"{path.name}: a cell raised\n{error}", file=sys.stderr)
            return 1
        seconds = time.perf_counter() - start
        total += seconds
        if not args.check:
            nbformat.write(notebook, path)
            size = path.stat().st_size
            if size > MAX_BYTES:
                print(f"{path.name}: {size:,} bytes, over {MAX_BYTES:,}", file=sys.stderr)
                return 1
        print(f"{path.name}: {seconds:.0f} s", flush=True)
    print(f"total: {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
