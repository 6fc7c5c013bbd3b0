"""`kerastricks` command line: parse, load the config, call one function per verb.

TensorFlow is imported only after the arguments are parsed, the config is loaded and the
output paths are checked, so `--help` and usage mistakes answer before TensorFlow's start-up
time. TensorFlow's native start-up lines (oneDNN notice, CUDA probing) are held back
unless `-v/--verbose` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any

EXIT_USAGE = 2
_VERBOSE_HELP = "show TensorFlow's start-up and INFO log lines"

# Lines TensorFlow's C++ side writes straight to file descriptor 2 while it loads: absl and
# tsl INFO/WARNING records (oneDNN notice, "Could not find cuda drivers", CPU features) and
# the GPU plugins' duplicate-registration errors. TF_CPP_MIN_LOG_LEVEL does not reach the
# absl ones, which are written before absl::InitializeLog runs.
_STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} [\d:.]+\s+\d+ \S+:\d+\] "
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IW] "
    r"|To enable the following instructions: "
    r"|E\d{4} [\d:.]+\s+\d+ \S+:\d+\] .*(already been registered|Unable to register))"
)
# Verbs whose config names a run folder under `output`.
_RUN_VERBS = ("train", "cv", "pseudo-label")
# Verbs that build a model from `model.weights`.
_MODEL_VERBS = ("train", "cv", "pseudo-label", "lr-find")


class UsageError(Exception):
    """A mistake on the command line the user can fix (a path, an index); shown as one line."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `kerastricks` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return EXIT_USAGE
    # Once TensorFlow is loaded (a notebook, the tests) there is nothing left to hold back.
    hold_back = not args.verbose and "tensorflow" not in sys.modules
    if hold_back:
        # The user's own setting wins. 3 also hides C++ ERROR records, such as "failed call
        # to cuInit" on every CPU-only machine; real failures still raise Python errors, and
        # -v shows everything.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _startup_logs(hold_back):
        import kerastricks  # noqa: F401  (selects the Keras 2 API before TensorFlow loads)
        from kerastricks.config import ConfigError
        from tfrecords_tools.schema import TFRecordsError

    try:
        _check_out_path(args)
        with _startup_logs(hold_back):
            config = _load(args) if hasattr(args, "config") else None
            if config is not None:
                _check_config_paths(args, config)
            import tensorflow  # noqa: F401  (here, so that its start-up lines are held back)
        if config is not None and args.verb in _MODEL_VERBS:
            from kerastricks.train.preflight import check_pretrained_weights

            check_pretrained_weights(config)
        result = args.handler(args, config)
    # The user's mistakes (config, records, paths) are one line; any other exception is a bug
    # in kerastricks and keeps its traceback.
    except (ConfigError, TFRecordsError, UsageError, FileExistsError, FileNotFoundError) as error:
        print(f"kerastricks {args.verb}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return 0 if result is None else int(result)


@contextlib.contextmanager
def _startup_logs(hold_back: bool) -> Iterator[None]:
    """Holds back TensorFlow's native start-up lines written while the block runs (when
    `hold_back`; else the block runs as it is).

    They are written to file descriptor 2 by C++ code, out of reach of Python's logging, so
    the descriptor is pointed at a temporary file for the block; afterwards every captured
    line that is not start-up noise (a Python warning, a C++ error) is written to stderr.
    """
    if not hold_back:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines(True) if not _STARTUP_NOISE.match(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kerastricks",
        description="The Kaggle image-classification trick stack for TensorFlow/Keras.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help=_VERBOSE_HELP)
    verbs = parser.add_subparsers(dest="verb")
    _verb(verbs, "train", "train a model through the config's stages", _train)
    _add_resume(verbs.choices["train"])
    show = _verb(verbs, "show-batch", "write a PNG grid of one augmented batch", _show_batch)
    show.add_argument("--out", default="batch.png", help="PNG path (its folder must exist)")
    show.add_argument("--stage", type=int, default=-1, help="stage whose image size to use")
    finder = _verb(verbs, "lr-find", "LR range test (fastai lr_find)", _lr_find)
    finder.add_argument(
        "--out", default=None, help="PNG path, its folder must exist (default: <run>/plots/)"
    )
    finder.add_argument("--steps", type=int, default=100, help="sweep length (fastai num_it)")
    finder.add_argument("--stage", type=int, default=0, help="stage whose size/freezing to use")
    cv = _verb(verbs, "cv", "k-fold CV: one model per fold, OOF predictions, CV score", _cv)
    _add_resume(cv)
    pseudo = _verb(verbs, "pseudo-label", "CV rounds with confident pseudo-labels", _pseudo)
    _add_resume(pseudo)
    predict = _verb(
        verbs, "predict", "fold ensemble + TTA: predictions.csv, submission.csv", _predict
    )
    predict.add_argument("--run", required=True, metavar="RUN_DIR", help="a train or cv run")
    predict.add_argument("--records", default=None, help="records to predict (default data.test)")
    predict.add_argument("--out", default=None, help="folder for the CSV files (default RUN_DIR)")
    explain = _verb(verbs, "explain", "Grad-CAM grid of validation images", _explain)
    explain.add_argument("--run", required=True, metavar="RUN_DIR", help="a train run folder")
    explain.add_argument("--out", default="gradcam.png", help="PNG path (its folder must exist)")
    explain.add_argument("--images", type=int, default=16, help="images in the grid")
    profile = verbs.add_parser("profile", help="images/s of candidate backbones on this machine")
    profile.add_argument("--backbones", required=True, help="comma-separated tfimm names")
    profile.add_argument("--image-size", type=int, default=64)
    profile.add_argument("--batch-size", type=int, default=16)
    profile.add_argument("--steps", type=int, default=5)
    _add_verbose(profile)
    profile.set_defaults(handler=_profile, verb="profile")
    return parser


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: a verb without -v keeps the value `kerastricks -v VERB` set before it.
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=_VERBOSE_HELP
    )


def _verb(
    verbs: argparse._SubParsersAction, name: str, help_text: str, handler: Callable
) -> argparse.ArgumentParser:
    parser = verbs.add_parser(name, help=help_text)
    parser.add_argument("config", help="YAML config file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a config value (repeatable), e.g. --set train.batch_size=32",
    )
    _add_verbose(parser)
    parser.set_defaults(handler=handler, verb=name)
    return parser


def _add_resume(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a crashed run")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing run folder of this name"
    )


def _load(args: argparse.Namespace) -> Any:
    from kerastricks.config import load_config

    return load_config(args.config, args.overrides)


def _is_remote(path: str) -> bool:
    # gs://, s3://, ram://: tf.io.gfile's business; only local paths are checked up front.
    return "://" in path


def _check_out_path(args: argparse.Namespace) -> None:
    """A PNG `--out` must name a file in an existing, writable folder (checked before work)."""
    out = getattr(args, "out", None)
    if out is None or args.verb == "predict" or _is_remote(out):
        return
    if os.path.isdir(out):
        raise UsageError(
            f"--out {out} is a folder; give a file path such as {os.path.join(out, 'plot.png')}"
        )
    folder = os.path.dirname(os.path.abspath(out))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UsageError(f"--out {out}: {folder} is a file, not a folder; choose another path")
    if not os.path.isdir(folder):
        raise UsageError(
            f"--out {out}: folder {folder} does not exist; create it (mkdir -p {folder}) "
            "or choose another path"
        )
    if not os.access(folder, os.W_OK):
        raise UsageError(f"--out {out}: folder {folder} is not writable; choose another path")


def _check_config_paths(args: argparse.Namespace, config: Any) -> None:
    """The run folder's parent and the `--stage` index, checked before TensorFlow loads."""
    writes_run = args.verb in _RUN_VERBS or (args.verb == "lr-find" and args.out is None)
    if writes_run:
        _check_output_folder(config.output, os.path.join(config.output, config.name))
    if hasattr(args, "stage"):
        _check_stage_index(config, args.stage)


def _check_output_folder(output: str, run_dir: str) -> None:
    """The run folder can be made: its nearest existing ancestor is a writable folder."""
    if _is_remote(run_dir):
        return
    existing = os.path.abspath(run_dir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(
            f"output: {output} cannot hold the run folder {run_dir}: {existing} is a file, not "
            "a folder. Point output at a folder, e.g. --set output=runs"
        )
    if not os.access(existing, os.W_OK):
        raise UsageError(
            f"output: cannot create {run_dir}: {existing} is not writable. Point output at a "
            "writable folder, e.g. --set output=runs"
        )


def _check_stage_index(config: Any, index: int) -> None:
    from kerastricks.train.stages import pick_stage, resolve_stages

    pick_stage(resolve_stages(config.train), index)


def _train(args: argparse.Namespace, config: Any) -> int:
    from kerastricks.train import train

    result = train(config, resume=args.resume, overwrite=args.overwrite)
    summary, run_dir = result.summary, result.run_dir
    best = summary.get("best")
    shown = f"{best:.4f}" if best is not None else "n/a"
    print(f"\n{summary['monitor']}: {shown} (best, stage '{summary['best_stage']}')")
    print(f"run folder: {run_dir}")
    return 0


def _cv(args: argparse.Namespace, config: Any) -> int:
    from kerastricks.eval import cross_validate

    cross_validate(config, resume=args.resume, overwrite=args.overwrite)
    return 0


def _pseudo(args: argparse.Namespace, config: Any) -> int:
    from kerastricks.pseudo import pseudo_label_rounds

    pseudo_label_rounds(config, resume=args.resume, overwrite=args.overwrite)
    return 0


def _predict(args: argparse.Namespace, config: Any) -> int:
    from kerastricks.eval import predict
    from kerastricks.train.strategy import detect_hardware

    records = args.records or config.data.test
    if records is None:
        raise UsageError("predict: give --records TEST or set data.test in the config")
    hardware = detect_hardware(config.train.strategy)
    result = predict(config, args.run, records, out_dir=args.out, hardware=hardware)
    print(
        f"{result['rows']} rows from {result['models']} model(s), in {result['order']}: "
        f"{result['predictions']}, {result['submission']}"
    )
    return 0


def _explain(args: argparse.Namespace, config: Any) -> int:
    from kerastricks.eval.grad_cam_grid import explain_run
    from kerastricks.train.strategy import detect_hardware

    hardware = detect_hardware(config.train.strategy)
    path = explain_run(config, args.run, args.out, max_images=args.images, hardware=hardware)
    print(f"wrote {path}")
    return 0


def _show_batch(args: argparse.Namespace, config: Any) -> int:
    from kerastricks.train import show_batch_for_config

    path = show_batch_for_config(config, args.out, stage=args.stage)
    print(f"wrote {path}")
    return 0


def _lr_find(args: argparse.Namespace, config: Any) -> int:
    from kerastricks.train import lr_find_for_config

    finder, path = lr_find_for_config(config, args.out, steps=args.steps, stage=args.stage)
    for name, value in finder.suggestions.items():
        print(f"suggested lr ({name}): {value:.3g}")
    print(f"plot: {path}")
    return 0


def _profile(args: argparse.Namespace, config: None) -> int:
    from kerastricks.models import profile_backbones

    names = [n.strip() for n in args.backbones.split(",") if n.strip()]
    # profile_backbones prints a line per backbone while it works, then the table.
    profile_backbones(
        names, image_size=args.image_size, batch_size=args.batch_size, steps=args.steps
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
