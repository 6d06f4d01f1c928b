"""The report's "feature extraction against light fine-tuning" section: the lecture's table.

The lectures weigh the two approaches with one table (file 001 of the seeds, "FT vs FE /
Trade-offs"): validation and test accuracy (V_ACC, T_ACC), footprint (average power P_AVG,
emissions E_CO2, time T) and human cost (n_EXP, the number of fits each approach took).
:func:`trade_off` builds its rows from the stages of :func:`sktransfer.report.build_report`
(for ``report.json``); :func:`trade_off_blocks` renders them (for Markdown and HTML).
"""

from __future__ import annotations

from ..footprint import FootprintRecord

#: The table's columns; the footprint ones come from FootprintRecord.cells().
COLUMNS = [
    "approach",
    "V_ACC",
    "T_ACC",
    "P_AVG (W)",
    "energy (kWh)",
    "E_CO2 (kg)",
    "T (s)",
    "n_EXP",
]


def extraction_trade_off(table, layer, n_folds, pass_footprint, fits_footprint) -> dict:
    """The extraction row's V_ACC (the chosen layer's cross-validated probe), n_EXP (the
    probes of every scored layer, then one held-out fit per layer) and footprints."""
    probe = (
        table.loc[table["layer"] == layer, "probe_accuracy"] if "probe_accuracy" in table else []
    )
    n_layers = len(table)
    return {
        "v_acc": float(probe.iloc[0]) if len(probe) else None,
        "v_acc_how": f"{n_folds}-fold cross-validated linear probe on the training images",
        "n_exp": (n_folds + 1) * n_layers if len(probe) else n_layers,
        "forward_pass_footprint": pass_footprint.to_dict(),
        "classifier_footprint": fits_footprint.to_dict(),
        "footprint": (pass_footprint + fits_footprint).to_dict(),
    }


def trade_off(activations: dict, extraction: dict, finetune: dict | None) -> dict:
    """The table's rows as plain numbers (None: not measured), for ``report.json``."""
    reread = " (read back from the cache in this run)" if activations.get("from_cache") else ""
    rows = [
        _row(
            f"feature extraction ({extraction['layer']}) + logistic regression",
            extraction["v_acc"],
            extraction["accuracy"],
            extraction["footprint"],
            extraction["n_exp"],
            v_acc_how=extraction["v_acc_how"],
        ),
        _row(
            f"of which: the forward pass, {activations['n_images']} training and test "
            f"images{reread} (cached: every later extraction fit reuses it)",
            None,
            None,
            extraction["forward_pass_footprint"],
            None,
        ),
    ]
    if finetune:
        detail = (
            f"top 3 blocks, {finetune['epochs']} epoch(s)"
            if finetune["params"]["train_layers"] == 3
            else "all layers"
        )
        size = finetune["params"]["image_size"] or "native"
        rows.append(
            _row(
                f"fine-tuning ({detail}, {size} px; trains {finetune['trainable_params']:,} "
                f"of {finetune['total_params']:,} parameters)",
                None,
                finetune["accuracy"],
                finetune["footprint"],
                finetune["n_exp"],
                v_acc_how="not measured: fine-tuning trains on every training image",
            )
        )
    first = FootprintRecord.from_dict(extraction["footprint"])
    return {"grid": first.grid, "carbon_intensity": first.carbon_intensity, "rows": rows}


def _row(approach, v_acc, t_acc, footprint: dict, n_exp, v_acc_how=None) -> dict:
    record = FootprintRecord.from_dict(footprint)
    return {
        "approach": approach,
        "v_acc": v_acc,
        "v_acc_how": v_acc_how,
        "t_acc": t_acc,
        "power_w": record.power_w,
        "energy_kwh": record.energy_kwh,
        "co2_kg": record.co2_kg,
        "seconds": record.seconds,
        "n_exp": n_exp,
        "how": record.how,
        "sources": record.sources,
        "note": record.note,
    }


def trade_off_blocks(trade: dict) -> list[tuple]:
    """The table and the paragraph saying how each figure was obtained."""
    rows = []
    for row in trade["rows"]:
        cells = FootprintRecord(
            seconds=row["seconds"],
            energy_kwh=row["energy_kwh"],
            carbon_intensity=trade["carbon_intensity"],
            sources=row["sources"],
        ).cells()
        rows.append(
            [
                row["approach"],
                "-" if row["v_acc"] is None else f"{row['v_acc']:.3f}",
                "-" if row["t_acc"] is None else f"{row['t_acc']:.3f}",
                *(cells[k] for k in ("P_AVG", "energy", "E_CO2", "T")),
                "-" if row["n_exp"] is None else str(row["n_exp"]),
            ]
        )
    return [("table", COLUMNS, rows), ("p", _how(trade))]


def _how(trade: dict) -> str:
    first = trade["rows"][0]
    v_acc = "; ".join(
        f"{row['approach'].split(' (')[0]}: {row['v_acc_how']}"
        for row in trade["rows"]
        if row["v_acc_how"]
    )
    common = (
        f"V_ACC: {v_acc}. T_ACC: held-out test images. n_EXP: fits the approach took "
        "(the probes' cross-validation folds over every scored layer included). T: wall time "
        "in this run; P_AVG = energy / T. "
    )
    if first["energy_kwh"] is None:
        return common + f"Energy, P_AVG and E_CO2 not measured: {first['note']}."
    sources = "; ".join(f"{part}: {how}" for part, how in sorted(first["sources"].items()))
    return common + (
        f"Energy from {first['note']} ({sources}); (meas.) marks a measured counter, "
        f"(est.) an estimate. E_CO2 for {trade['grid']}, "
        f"{trade['carbon_intensity']:.0f} g CO2e/kWh (set --country or --carbon-intensity)."
    )
