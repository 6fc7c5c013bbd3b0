"""`kerastricks` command line: parse, load the config, call one function per verb."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `kerastricks` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return EXIT_USAGE
    import kerastricks  # noqa: F401  (selects the Keras 2 API before TensorFlow loads)
    from kerastricks.config import ConfigError

    try:
        result = args.handler(args)
    except (ConfigError, FileExistsError, FileNotFoundError, ValueError) as error:
        print(f"kerastricks {args.verb}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return 0 if result is None else int(result)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kerastricks",
        description="The Kaggle image-classification trick stack for TensorFlow/Keras.",
    )
    verbs = parser.add_subparsers(dest="verb")
    _verb(verbs, "train", "train a model through the config's stages", _train)
    _add_resume(verbs.choices["train"])
    show = _verb(verbs, "show-batch", "write a PNG grid of one augmented batch", _show_batch)
    show.add_argument("--out", default="batch.png", help="PNG path")
    show.add_argument("--stage", type=int, default=-1, help="stage whose image size to use")
    finder = _verb(verbs, "lr-find", "LR range test (fastai lr_find)", _lr_find)
    finder.add_argument("--out", default=None, help="PNG path (default: <run>/plots/lr_find.png)")
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
    explain.add_argument("--out", default="gradcam.png", help="PNG path")
    explain.add_argument("--images", type=int, default=16, help="images in the grid")
    profile = verbs.add_parser("profile", help="images/s of candidate backbones on this machine")
    profile.add_argument("--backbones", required=True, help="comma-separated tfimm names")
    profile.add_argument("--image-size", type=int, default=64)
    profile.add_argument("--batch-size", type=int, default=16)
    profile.add_argument("--steps", type=int, default=5)
    profile.set_defaults(handler=_profile, verb="profile")
    return parser


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
    parser.set_defaults(handler=handler, verb=name)
    return parser


def _add_resume(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a crashed run")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing run folder of this name"
    )


def _load(args: argparse.Namespace):
    from kerastricks.config import load_config

    return load_config(args.config, args.overrides)


def _train(args: argparse.Namespace) -> int:
    from kerastricks.train import train

    config = _load(args)
    result = train(config, resume=args.resume, overwrite=args.overwrite)
    summary, run_dir = result.summary, result.run_dir
    best = summary.get("best")
    shown = f"{best:.4f}" if best is not None else "n/a"
    print(f"\n{summary['monitor']}: {shown} (best, stage '{summary['best_stage']}')")
    print(f"run folder: {run_dir}")
    return 0


def _cv(args: argparse.Namespace) -> int:
    from kerastricks.eval import cross_validate

    cross_validate(_load(args), resume=args.resume, overwrite=args.overwrite)
    return 0


def _pseudo(args: argparse.Namespace) -> int:
    from kerastricks.pseudo import pseudo_label_rounds

    pseudo_label_rounds(_load(args), resume=args.resume, overwrite=args.overwrite)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from kerastricks.eval import predict

    config = _load(args)
    records = args.records or config.data.test
    if records is None:
        raise ValueError("predict: give --records TEST or set data.test in the config")
    result = predict(config, args.run, records, out_dir=args.out)
    print(
        f"{result['rows']} rows from {result['models']} model(s): "
        f"{result['predictions']}, {result['submission']}"
    )
    return 0


def _explain(args: argparse.Namespace) -> int:
    from kerastricks.eval.explain_run import explain_run

    path = explain_run(_load(args), args.run, args.out, max_images=args.images)
    print(f"wrote {path}")
    return 0


def _show_batch(args: argparse.Namespace) -> int:
    from kerastricks.train.tools import show_batch_for_config

    path = show_batch_for_config(_load(args), args.out, stage=args.stage)
    print(f"wrote {path}")
    return 0


def _lr_find(args: argparse.Namespace) -> int:
    from kerastricks.train.tools import lr_find_for_config

    finder, path = lr_find_for_config(_load(args), args.out, steps=args.steps, stage=args.stage)
    for name, value in finder.suggestions.items():
        print(f"suggested lr ({name}): {value:.3g}")
    print(f"plot: {path}")
    return 0


def _profile(args: argparse.Namespace) -> int:
    from kerastricks.models import profile_backbones

    names = [n.strip() for n in args.backbones.split(",") if n.strip()]
    table = profile_backbones(
        names, image_size=args.image_size, batch_size=args.batch_size, steps=args.steps
    )
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
