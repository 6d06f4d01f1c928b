"""The report's files: every number as ``report.json``, and the same report as Markdown and as
self-contained HTML (PNG plots inlined), both rendered from one list of blocks."""

from __future__ import annotations

import base64
import html
import json
import os
import platform
import re
import time
from pathlib import Path

import numpy as np

from .codegen import backbone_name
from .context import ReportContext
from .tradeoff import trade_off, trade_off_blocks

__all__ = ["results_of", "write"]


def results_of(run: ReportContext, recommendation: dict, predictions) -> dict:
    """Every number of the report, as ``report.json`` holds it (``stage_seconds`` is filled
    once the report stage has ended)."""
    dataset, activations, extraction = run.dataset, run.activations, run.extraction
    return {
        "sktransfer_report": 1,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": _machine(),
        "data": {**dataset.describe(), "notes": dataset.notes},
        "backbone": backbone_name(run.settings.backbone),
        "weights": activations.cost.get("weights"),
        "budget_seconds": run.budget.seconds,
        "budget_notes": run.budget.notes,
        "cache_dir": str(run.cache_dir),
        "activations": {k: v for k, v in activations.cost.items() if k != "weights"},
        "layers": _records(run.scores.table, run.held_out),
        "feature_extraction": _strip(extraction),
        "fine_tuning": _strip(run.fine_tuning) if run.fine_tuning else None,
        "trade_off": trade_off(activations.cost, extraction, run.fine_tuning),
        "recommendation": recommendation,
        "confusion_matrix": _confusion(dataset.y_test, predictions, dataset.classes),
        "tsne_layers": run.tsne["layers"] if run.tsne else None,
        "stage_seconds": {},
    }


def _machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {gpu}, torch {torch.__version__}"


def _strip(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "predictions"}


def _records(table, layer_tests) -> list[dict]:
    records = []
    for row in table.sort_values("depth").to_dict("records"):
        row = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        row["test_accuracy"] = layer_tests[row["layer"]]["accuracy"]
        records.append(row)
    return records


def _confusion(y_true, y_pred, classes) -> dict:
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(y_true, y_pred, labels=classes)
    return {"labels": [str(c) for c in classes], "matrix": matrix.tolist()}


def write(out: Path, results: dict, plots: dict, code: str) -> None:
    for name, data in plots.items():
        (out / f"{name}.png").write_bytes(data)
    (out / "recommended_pipeline.py").write_text(code)
    (out / "report.json").write_text(json.dumps(results, indent=1, default=_json_default))
    blocks = _blocks(results, code)
    (out / "report.md").write_text(_markdown(blocks))
    (out / "report.html").write_text(_html(blocks, plots))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _blocks(r: dict, code: str) -> list[tuple]:
    """The report as (kind, content) blocks, rendered to both Markdown and HTML."""
    data, rec = r["data"], r["recommendation"]
    blocks = [("h1", f"Transfer-learning report: {data['name']}")]
    what = (
        f"{rec['approach']} with {r['backbone']}"
        + (f", layer `{rec['layer']}`" if rec.get("layer") else "")
        + f" (held-out accuracy **{rec['accuracy']:.3f}**). {rec['reason']}"
    )
    blocks += [
        ("p", f"**Recommendation**: {what}"),
        (
            "p",
            f"Data: {data['n_train']} training and {data['n_test']} test images "
            f"({'its own test split' if data['split'] == 'given' else 'a stratified 30% hold-out'}"
            f"), {len(data['classes'])} classes ({', '.join(data['classes'][:12])}"
            f"{' ...' if len(data['classes']) > 12 else ''}). Backbone {r['backbone']} "
            f"({r['weights']}). {r['date']}, {r['machine']}.",
        ),
    ]
    for note in data["notes"] + [n for n in r["budget_notes"] if n not in data["notes"]]:
        blocks.append(("p", f"Note: {note}"))
    blocks.append(("h2", "Layers: transfer scores and linear-probe accuracy"))
    columns = ["layer", "n_features", "logme", "h_score", "leep", "probe_accuracy", "test_accuracy"]
    columns = [c for c in columns if c in r["layers"][0]]
    blocks.append(("table", columns, [[row[c] for c in columns] for row in r["layers"]]))
    blocks.append(
        (
            "p",
            "LogME and H-score rate each layer's features for these labels without training; "
            "LEEP rates the source model as a whole (one value). The probe is a 3-fold "
            "cross-validated logistic regression on the training images (the ground truth "
            "the scores estimate); test accuracy is held out and was not used for choosing.",
        )
    )
    blocks.append(("img", "scores", "Scores and probe accuracy by layer"))
    if r["tsne_layers"]:
        blocks.append(("h2", "t-SNE of a shallow and a deep layer"))
        blocks.append(("img", "tsne", f"t-SNE of {r['tsne_layers'][0]} and {r['tsne_layers'][1]}"))
    blocks.append(("h2", "Feature extraction against light fine-tuning"))
    blocks += trade_off_blocks(r["trade_off"])
    blocks.append(("img", "comparison", "Accuracy and fit time"))
    blocks.append(("h2", "Confusion matrix of the recommended model (test images)"))
    blocks.append(("img", "confusion", "Confusion matrix"))
    blocks.append(("h2", "The recommended pipeline"))
    blocks.append(
        ("p", "Saved as `recommended_pipeline.py`; run it with `python recommended_pipeline.py`.")
    )
    blocks.append(("code", code))
    blocks.append(("h2", "Stage times"))
    times = r["stage_seconds"]
    blocks.append(
        (
            "table",
            ["stage", "seconds"],
            [[k, f"{v:.1f}"] for k, v in times.items()] + [["total", f"{sum(times.values()):.1f}"]],
        )
    )
    blocks.append(
        (
            "p",
            f"Budget {r['budget_seconds']:.0f} s. Activations are cached in `{r['cache_dir']}`; "
            "the stages that only need them (activations, scores, feature extraction, t-SNE) "
            "read them back on a second run. Every number is in `report.json`.",
        )
    )
    return blocks


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def _markdown(blocks) -> str:
    parts = []
    for kind, *content in blocks:
        if kind == "h1":
            parts.append(f"# {content[0]}")
        elif kind == "h2":
            parts.append(f"## {content[0]}")
        elif kind == "p":
            parts.append(content[0])
        elif kind == "table":
            columns, rows = content
            lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
            lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
            parts.append("\n".join(lines))
        elif kind == "img":
            parts.append(f"![{content[1]}]({content[0]}.png)")
        elif kind == "code":
            parts.append(f"```python\n{content[0]}```")
    return "\n\n".join(parts) + "\n"


def _inline_markdown(text: str) -> str:
    """**bold** and `code` of a paragraph, escaped for HTML."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _html(blocks, plots: dict) -> str:
    body = []
    for kind, *content in blocks:
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{html.escape(content[0])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline_markdown(content[0])}</p>")
        elif kind == "table":
            columns, rows = content
            head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
            cells = "".join(
                "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
                for row in rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
        elif kind == "img" and content[0] in plots:
            data = base64.b64encode(plots[content[0]]).decode("ascii")
            body.append(
                f'<figure><img alt="{html.escape(content[1])}" '
                f'src="data:image/png;base64,{data}"></figure>'
            )
        elif kind == "code":
            body.append(f"<pre><code>{html.escape(content[0])}</code></pre>")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;"
        "line-height:1.45}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid "
        "#ccc;padding:.25em .6em;text-align:right}th{background:#f3f3f3}td:first-child{"
        "text-align:left}td:not(:first-child){white-space:nowrap}img{max-width:100%}pre{background:#f6f8fa;padding:1em;overflow:auto}"
    )
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>sktransfer report</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
