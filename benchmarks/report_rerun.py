"""A second `sktransfer report` over the same data: stage times against the first run's.

The stages that only need activations (activations, scores, feature extraction, t-SNE) should
take under 10 % of their first-run time: the forward pass is read from the activation cache,
the rest from the memoised stage results. Fine-tuning trains again and is shown for scale.

Run the report twice with one cache folder, starting empty, then compare the JSONs::

    rm -rf /tmp/skt-cache
    sktransfer report DATA --cache /tmp/skt-cache --out /tmp/first
    sktransfer report DATA --cache /tmp/skt-cache --out /tmp/second
    PYTHONPATH=. python benchmarks/report_rerun.py /tmp/first/report.json \
        /tmp/second/report.json --name hymenoptera

``--smoke`` compares two small report JSONs of the same shape that it writes itself, and
writes its section to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks._common import add_smoke_flag, smoke_folder

RESULTS = Path(__file__).resolve().parent / "results" / "report_rerun.md"
ACTIVATION_STAGES = ("activations", "scores", "feature extraction", "t-SNE")


def table(first: dict, second: dict) -> str:
    lines = [
        "| stage | first run (s) | second run (s) | second / first | only needs activations |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for stage, seconds in first["stage_seconds"].items():
        again = second["stage_seconds"].get(stage, float("nan"))
        ratio = again / seconds if seconds > 0 else float("nan")
        lines.append(
            f"| {stage} | {seconds:.1f} | {again:.1f} | {100 * ratio:.1f} % | "
            f"{'yes' if stage in ACTIVATION_STAGES else 'no'} |"
        )
    only = [s for s in ACTIVATION_STAGES if s in first["stage_seconds"]]
    total_first = sum(first["stage_seconds"][s] for s in only)
    total_second = sum(second["stage_seconds"][s] for s in only)
    lines.append(
        f"| **activation-only stages** | {total_first:.1f} | {total_second:.1f} | "
        f"**{100 * total_second / total_first:.1f} %** | |"
    )
    return "\n".join(lines)


def smoke_reports(folder: Path) -> tuple[Path, Path]:
    """Two report JSONs with the keys this script reads (a first and a cached second run)."""
    paths = []
    for run, scale in (("first", 1.0), ("second", 0.01)):
        stages = {s: 10.0 * scale for s in (*ACTIVATION_STAGES, "data")}
        stages["fine-tuning"] = 20.0
        report = {
            "stage_seconds": stages,
            "data": {"name": "tiny", "n_train": 16, "n_test": 8},
            "machine": "smoke",
            "date": "smoke",
            "budget_seconds": 60.0,
            "recommendation": {"approach": "feature extraction", "accuracy": 0.9},
            "feature_extraction": {"accuracy": 0.9},
        }
        paths.append(folder / f"{run}.json")
        paths[-1].write_text(json.dumps(report))
    return paths[0], paths[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, nargs="?")
    parser.add_argument("second", type=Path, nargs="?")
    parser.add_argument("--name", default=None, help="the data set's section (required)")
    parser.add_argument("--command", default=None, help="the report command, for the record")
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    results = RESULTS
    if args.smoke:
        folder = smoke_folder("report_rerun")
        args.first, args.second = smoke_reports(folder)
        args.name, results = "tiny", folder / RESULTS.name
    elif args.first is None or args.second is None or args.name is None:
        parser.error("FIRST, SECOND and --name are required (or --smoke)")
    write(args, results)


def write(args, results: Path) -> None:
    """Add (or replace) the data set's section in ``results``."""
    first, second = (json.loads(p.read_text()) for p in (args.first, args.second))
    section = [
        f"## {args.name}",
        "",
        f"Command: `{args.command or 'sktransfer report ' + first['data']['name']}` twice, "
        f"one `--cache` folder that started empty. Machine: {first['machine']}, 2 cores "
        "shared with other jobs (load average about 10). Dates: "
        f"{first['date']} and {second['date']}. Data: {first['data']['n_train']} training and "
        f"{first['data']['n_test']} test images; budget {first['budget_seconds']:.0f} s.",
        "",
        table(first, second),
        "",
        f"Same results: recommendation {first['recommendation']['approach']} "
        f"({first['recommendation']['accuracy']:.3f}) then "
        f"{second['recommendation']['approach']} ({second['recommendation']['accuracy']:.3f}); "
        f"feature extraction {first['feature_extraction']['accuracy']:.3f} and "
        f"{second['feature_extraction']['accuracy']:.3f}.",
        "",
    ]
    text = (
        results.read_text()
        if results.exists()
        else (
            "# `sktransfer report`: a second run over the same data\n\n"
            "Produced by `benchmarks/report_rerun.py` (see its docstring for the commands).\n\n"
        )
    )
    marker = f"## {args.name}\n"
    if marker in text:  # replace this dataset's section
        start = text.index(marker)
        end = text.find("\n## ", start + 1)
        text = text[:start] + (text[end + 1 :] if end != -1 else "")
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(text.rstrip("\n") + "\n\n" + "\n".join(section))
    print("\n".join(section))


if __name__ == "__main__":
    main()
