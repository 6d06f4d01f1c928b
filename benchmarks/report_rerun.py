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
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--command", default=None, help="the report command, for the record")
    args = parser.parse_args(argv)
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
        RESULTS.read_text()
        if RESULTS.exists()
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
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text.rstrip("\n") + "\n\n" + "\n".join(section))
    print("\n".join(section))


if __name__ == "__main__":
    main()
