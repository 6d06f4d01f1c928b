"""Command line: ``sktransfer report``, ``sktransfer extract`` and ``sktransfer demo`` (also
``python -m sktransfer``)."""

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


def report(args) -> int:
    """Run :func:`sktransfer.report.build_report`; bad input exits 2 with one message.

    The first line prints before torch is imported (seconds on a busy machine), and the budget
    counts from the command's start."""
    from .report.paths import ReportError, check_report_paths

    if not args.quiet:
        print(
            f"sktransfer report: {args.data or 'the embedded default (digits)'} -> {args.out}, "
            f"budget {args.budget:g} min from now; loading torch and scikit-learn ...",
            file=sys.stderr,
            flush=True,
        )
    try:
        check_report_paths(args.data, args.out, args.cache, force=args.force)
        from .report import build_report

        weights = None if args.weights.lower() == "none" else args.weights
        build_report(
            args.data,
            backbone=args.backbone,
            weights=weights,
            budget_minutes=args.budget,
            out=args.out,
            cache=args.cache,
            max_images=args.max_images,
            finetune=not args.no_finetune,
            n_jobs=args.n_jobs,
            verbose=0 if args.quiet else 1,
            country=args.country,
            carbon_intensity=args.carbon_intensity,
            force=args.force,
            started=args.started,
        )
    except KeyboardInterrupt:
        print("sktransfer report: interrupted.", file=sys.stderr)
        return 130
    except (ReportError, FileNotFoundError) as exc:
        print(f"sktransfer report: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a user command prints a message, not a traceback
        if args.traceback:
            raise
        print(
            f"sktransfer report: error: {type(exc).__name__}: {exc}\n"
            "(run again with --traceback for the details)",
            file=sys.stderr,
        )
        return 1
    return 0


def _add_report_parser(commands) -> None:
    parser = commands.add_parser(
        "report",
        help="from labelled images to a transfer-learning recommendation (HTML, Markdown, JSON)",
        description="Rank a pretrained network's layers for your images, compare feature "
        "extraction with light fine-tuning within a time budget, and write a report with the "
        "recommended pipeline as runnable Python.",
    )
    parser.add_argument(
        "data",
        nargs="?",
        default=None,
        help="a folder with one sub-folder of images per class (or train/ and val/ such "
        "folders), or an .npz of images and labels; default: scikit-learn's digits",
    )
    parser.add_argument("--backbone", default="mobilenet_v2", help="default: mobilenet_v2")
    parser.add_argument(
        "--weights", default="DEFAULT", help="pretrained weights; 'none' for random (testing)"
    )
    parser.add_argument(
        "--budget", type=float, default=5.0, help="time budget in minutes (default: 5)"
    )
    parser.add_argument(
        "--out", default="sktransfer-report", help="output folder (default: ./sktransfer-report)"
    )
    parser.add_argument(
        "--cache",
        default=None,
        help="activation cache folder (default: $SKTRANSFER_CACHE_DIR/activations, "
        "~/.cache/sktransfer/activations)",
    )
    parser.add_argument(
        "--max-images", type=int, default=2000, help="subsample larger data (default: 2000)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an earlier report in --out")
    parser.add_argument("--no-finetune", action="store_true", help="skip the fine-tuning stage")
    parser.add_argument("--n-jobs", type=int, default=None, help="threads (default: all cores)")
    parser.add_argument(
        "--country", default=None, help="ISO alpha-3 code of the grid, for CO2 (e.g. FRA)"
    )
    parser.add_argument(
        "--carbon-intensity",
        type=float,
        default=None,
        help="the grid's g CO2e/kWh, for CO2 (default: the world average)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--traceback", action="store_true", help="show tracebacks of errors")


def extract(args) -> int:
    """Run :func:`sktransfer.extract_features`; a folder or data problem exits 2 with one line."""
    from .extract_job import ExtractJobError, extract_features

    weights = None if args.weights.lower() == "none" else args.weights
    try:
        summary = extract_features(
            args.data,
            args.out,
            backbone=args.backbone,
            weights=weights,
            layers=args.layers,
            pooling=None if args.pooling == "none" else args.pooling,
            engine=args.engine,
            chunk_size=args.chunk_size,
            cache=False if args.no_cache else args.cache,
            n_jobs=args.n_jobs,
            workers=args.workers,
            scheduler=args.scheduler,
            verbose=0 if args.quiet else 1,
        )
    except KeyboardInterrupt:
        print(
            "sktransfer extract: interrupted; run the same command again to resume.",
            file=sys.stderr,
        )
        return 130
    except (ExtractJobError, FileNotFoundError, ValueError) as exc:
        if args.traceback:
            raise
        print(f"sktransfer extract: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a user command prints a message, not a traceback
        if args.traceback:
            raise
        print(
            f"sktransfer extract: error: {type(exc).__name__}: {exc}\n"
            "(run again with --traceback for the details; run the same command to resume)",
            file=sys.stderr,
        )
        return 1
    if not args.quiet:
        print(
            f"{summary.n_images - summary.n_unreadable} images' features in {summary.out} "
            f"({summary.chunks_run} chunks run, {summary.chunks_resumed} already done, "
            f"{summary.n_unreadable} unreadable images listed in _unreadable.csv)."
        )
    return 0


def _add_extract_parser(commands) -> None:
    parser = commands.add_parser(
        "extract",
        help="features of many images to Parquet, resumable, on one machine or a Dask cluster",
        description="Write a pretrained network's features of every image to Parquet files "
        "(path, label, one column per feature) in chunks. Run the same command again to "
        "resume an interrupted job.",
    )
    parser.add_argument("data", help="a folder with one sub-folder of images per class")
    parser.add_argument("--out", required=True, help="output folder (new, empty, or resumed)")
    parser.add_argument("--backbone", default="mobilenet_v2", help="default: mobilenet_v2")
    parser.add_argument(
        "--weights", default="DEFAULT", help="pretrained weights; 'none' for random (testing)"
    )
    parser.add_argument(
        "--layers", nargs="+", default=None, help="layers to tap (default: penultimate)"
    )
    parser.add_argument(
        "--pooling", default="avg", choices=["avg", "max", "avgmax", "none"], help="default: avg"
    )
    parser.add_argument(
        "--engine", default="auto", choices=["auto", "torch", "onnxruntime"], help="default: auto"
    )
    parser.add_argument(
        "--chunk-size", type=int, default=512, help="images per Parquet file (default: 512)"
    )
    parser.add_argument(
        "--cache",
        default=None,
        help="activation store folder (default: $SKTRANSFER_CACHE_DIR/activations, "
        "~/.cache/sktransfer/activations)",
    )
    parser.add_argument("--no-cache", action="store_true", help="no activation store")
    parser.add_argument(
        "--n-jobs",
        type=int,
        default=None,
        help="threads: the total (split between --workers), or per worker with --scheduler",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--workers", type=int, default=None, help="run on a local Dask cluster of N processes"
    )
    where.add_argument("--scheduler", default=None, help="run on a Dask cluster: scheduler address")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--traceback", action="store_true", help="show tracebacks of errors")


def main(argv=None) -> int:
    # The report's budget counts from here: the heavy imports (torch, scikit-learn) come after,
    # since `import sktransfer` itself imports none of its modules.
    started = time.perf_counter()
    parser = argparse.ArgumentParser(
        prog="sktransfer", description="Transfer learning as scikit-learn estimators."
    )
    commands = parser.add_subparsers(dest="command")
    demo_parser = commands.add_parser("demo", help="fit a feature-extraction pipeline on digits")
    demo_parser.add_argument("--backbone", default="mobilenet_v2")
    demo_parser.add_argument("--layer", default="features.14")
    demo_parser.add_argument("--n-images", type=int, default=600)
    _add_report_parser(commands)
    _add_extract_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "report":
        args.started = started
        return report(args)
    if args.command == "extract":
        return extract(args)
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
