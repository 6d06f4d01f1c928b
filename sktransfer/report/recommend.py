"""The report's recommendation: feature extraction or fine-tuning, in one sentence that says
what was compared and why the winner won."""

from __future__ import annotations

from .plan import FINETUNE_MARGIN

__all__ = ["finetune_description", "recommend"]


def recommend(extraction: dict, finetune: dict | None) -> dict:
    """The more accurate approach; feature extraction when fine-tuning is less than
    ``FINETUNE_MARGIN`` more accurate, since it costs one forward pass and no training.
    ``reason`` is one sentence: what was compared, and why the winner won."""
    choice = {
        "approach": "feature extraction",
        "layer": extraction["layer"],
        "accuracy": extraction["accuracy"],
        "fit_seconds": extraction["fit_seconds"],
    }
    fe = f"logistic regression on layer {extraction['layer']}"
    if finetune is None:
        choice["reason"] = (
            f"Only feature extraction ({fe}) ran, so it is the recommendation: fine-tuning "
            "was skipped (see the notes)."
        )
        return choice
    gain = finetune["accuracy"] - extraction["accuracy"]
    cost = finetune["fit_seconds"] / max(extraction["fit_seconds"], 1e-9)
    compared = (
        f"F{finetune_description(finetune)[1:]} reached {finetune['accuracy']:.3f} "
        f"held-out accuracy against {extraction['accuracy']:.3f} for {fe}"
    )
    margin = f"{100 * FINETUNE_MARGIN:.0f}-point margin"
    if gain > FINETUNE_MARGIN:
        return {
            "approach": "fine-tuning",
            "params": finetune["params"],
            "torch_threads": finetune["torch_threads"],
            "accuracy": finetune["accuracy"],
            "fit_seconds": finetune["fit_seconds"],
            "reason": f"{compared}: {100 * gain:.1f} points more, above the {margin} that "
            f"pays for its {cost:.1f}x fit time.",
        }
    if gain > 0:
        why = (
            f"{100 * gain:.1f} points more, within the {margin} that would pay for its "
            f"{cost:.1f}x fit time, so feature extraction (no training) is preferred"
        )
    elif gain < 0:
        why = f"{100 * -gain:.1f} points less, at {cost:.1f}x the fit time"
    else:
        why = f"as accurate, at {cost:.1f}x the fit time"
    choice["reason"] = f"{compared}: {why}."
    return choice


def finetune_description(finetune: dict) -> str:
    """``"fine-tuning the top 3 blocks (3 epochs at 224 px)"``."""
    params = finetune["params"]
    what = (
        "all layers"
        if params["train_layers"] == "all"
        else f"the top {params['train_layers']} blocks"
    )
    size = f"{params['image_size']} px" if params["image_size"] else "native size"
    epochs = finetune["epochs"]
    return f"fine-tuning {what} ({epochs} epoch{'s' if epochs != 1 else ''} at {size})"
