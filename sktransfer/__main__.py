"""Command line: ``sktransfer report``, ``sktransfer extract`` and ``sktransfer demo`` (also
``python -m sktransfer``)."""

from __future__ import annotations

import argparse
import sys
import time

#: Each command's line in ``sktransfer --help`` and the description of its own ``--help``.
COMMANDS = {
    "report": (
        "from labelled images to a transfer-learning recommendation (HTML, Markdown, JSON)",
        "Rank a pretrained network's layers for your images, compare feature extraction with "
        "light fine-tuning within a time budget, and write a report with the recommended "
        "pipeline as runnable Python.",
    ),
    "extract": (
        "features of many images to Parquet, resumable, on one machine or a Dask cluster",
        "Write a pretrained network's features of every image to Parquet files (path, label, "
        "one column per feature) in chunks. Run the same command again to resume an "
        "interrupted job.",
    ),
}


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

    def run() -> None:
        check_report_paths(args.data, args.out, args.cache, force=args.force)
        from .report import build_report

        build_report(
            args.data,
            backbone=args.backbone,
            weights=_weights(args),
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

    return _guarded("report", run, args, (ReportError, FileNotFoundError))


def _guarded(command: str, run, args, user_errors: tuple, *, resume: str = "") -> int:
    """Run a command: 0 when it ends, 130 on Ctrl-C, 2 with one line for ``user_errors``
    (bad input or folders), 1 with one line for anything else; ``--traceback`` raises instead.

    ``resume`` ends the lines of a command that a rerun resumes."""
    try:
        run()
    except KeyboardInterrupt:
        print(f"sktransfer {command}: interrupted{resume}.", file=sys.stderr)
        return 130
    except user_errors as exc:
        if args.traceback:
            raise
        print(f"sktransfer {command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a user command prints a message, not a traceback
        if args.traceback:
            raise
        print(
            f"sktransfer {command}: error: {type(exc).__name__}: {exc}\n"
            f"(run again with --traceback for the details{resume})",
            file=sys.stderr,
        )
        return 1
    return 0


def _weights(args):
    """--weights as the library takes it: 'none' is None (random weights, for testing)."""
    return None if args.weights.lower() == "none" else args.weights


def _add_network_options(parser) -> None:
    parser.add_argument("--backbone", default="mobilenet_v2", help="default: mobilenet_v2")
    parser.add_argument(
        "--weights", default="DEFAULT", help="pretrained weights; 'none' for random (testing)"
    )


def _add_cache_option(parser, what: str) -> None:
    parser.add_argument(
        "--cache",
        default=None,
        help=f"{what} folder (default: $SKTRANSFER_CACHE_DIR/activations, "
        "~/.cache/sktransfer/activations)",
    )


def _add_command(commands, name: str):
    help_line, description = COMMANDS[name]
    return commands.add_parser(name, help=help_line, description=description)


def _add_output_options(parser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--traceback", action="store_true", help="show tracebacks of errors")


def _add_report_parser(commands) -> None:
    parser = _add_command(commands, "report")
    parser.add_argument(
        "data",
        nargs="?",
        default=None,
        help="a folder with one sub-folder of images per class (or train/ and val/ such "
        "folders), or an .npz of images and labels; default: scikit-learn's digits",
    )
    _add_network_options(parser)
    parser.add_argument(
        "--budget", type=float, default=5.0, help="time budget in minutes (default: 5)"
    )
    parser.add_argument(
        "--out", default="sktransfer-report", help="output folder (default: ./sktransfer-report)"
    )
    _add_cache_option(parser, "activation cache")
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
    _add_output_options(parser)


def extract(args) -> int:
    """Run :func:`sktransfer.extract_features`; a folder or data problem exits 2 with one line."""
    from .extract_job import ExtractJobError, extract_features

    summaries = []

    def run() -> None:
        summaries.append(
            extract_features(
                args.data,
                args.out,
                backbone=args.backbone,
                weights=_weights(args),
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
        )

    errors = (ExtractJobError, FileNotFoundError, ValueError)
    resume = "; run the same command again to resume"
    code = _guarded("extract", run, args, errors, resume=resume)
    if code == 0 and not args.quiet:
        summary = summaries[0]
        print(
            f"{summary.n_images - summary.n_unreadable} images' features in {summary.out} "
            f"({summary.chunks_run} chunks run, {summary.chunks_resumed} already done, "
            f"{summary.n_unreadable} unreadable images listed in _unreadable.csv)."
        )
    return code


def _add_extract_parser(commands) -> None:
    parser = _add_command(commands, "extract")
    parser.add_argument("data", help="a folder with one sub-folder of images per class")
    parser.add_argument("--out", required=True, help="output folder (new, empty, or resumed)")
    _add_network_options(parser)
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
    _add_cache_option(parser, "activation store")
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
    _add_output_options(parser)


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
