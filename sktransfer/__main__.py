"""Command line: ``sktransfer demo`` (also ``python -m sktransfer``)."""

from __future__ import annotations

import argparse
import sys
import time


def demo(args) -> int:
    """Fit a DeCAF pipeline on scikit-learn's bundled digits (no download) and report it."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from sktransfer import DeepFeatureExtractor

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)  # (N, 8, 8) grayscale in [0, 1]
    rng = np.random.default_rng(0)
    keep = rng.permutation(len(images))[: args.n_images]
    X_train, X_test, y_train, y_test = train_test_split(
        images[keep],
        digits.target[keep],
        test_size=0.5,
        stratify=digits.target[keep],
        random_state=0,
    )
    print(
        f"Embedded default: scikit-learn's digits, {len(X_train)} training and {len(X_test)} "
        f"test images of 8x8 px, 10 classes.",
        flush=True,
    )
    extractor = DeepFeatureExtractor(args.backbone, layers=args.layer, verbose=1)
    clf = make_pipeline(extractor, StandardScaler(), LogisticRegression(max_iter=2000))
    start = time.perf_counter()
    clf.fit(X_train, y_train)
    fitted = time.perf_counter() - start
    accuracy = clf.score(X_test, y_test)
    print(
        f"Backbone {args.backbone} ({extractor.weights_}), layer {extractor.layers_[0]}, "
        f"{extractor.n_features_out_} features on {extractor.device_}."
    )
    print(f"Fitted in {fitted:.1f} s; test accuracy {accuracy:.3f} ({len(X_test)} images).")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="sktransfer", description="Transfer learning as scikit-learn estimators."
    )
    commands = parser.add_subparsers(dest="command")
    demo_parser = commands.add_parser("demo", help="fit a feature-extraction pipeline on digits")
    demo_parser.add_argument("--backbone", default="mobilenet_v2")
    demo_parser.add_argument("--layer", default="features.14")
    demo_parser.add_argument("--n-images", type=int, default=600)
    args = parser.parse_args(argv)
    if args.command in (None, "demo"):
        if args.command is None:
            args = demo_parser.parse_args([])
        try:
            return demo(args)
        except ValueError as exc:
            print(f"sktransfer: error: {exc}", file=sys.stderr)
            return 2
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
