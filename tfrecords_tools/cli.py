"""`tfrecords-tools write | inspect | verify`: parse the arguments, call one function per verb."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from tfrecords_tools.schema import TASKS, TFRecordsError


def _write_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("write", help="write sharded TFRecords from a CSV or folder tree")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--csv", metavar="FILE", help="CSV with image paths (relative to its folder) and labels"
    )
    source.add_argument(
        "--from-folder",
        metavar="DIR",
        help="folder tree with one sub-folder per class (ids: paths without extension)",
    )
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (local or gs://)"
    )
    parser.add_argument(
        "--image-col", default="path", metavar="COL", help="CSV column of image paths"
    )
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument(
        "--label-col",
        nargs="+",
        dest="label_cols",
        metavar="COL",
        help="label column(s): one class column, several 0/1 columns, or float targets; class "
        "names are stripped of surrounding spaces (default: 'label' if the CSV has it, else "
        "the records are written without labels)",
    )
    labels.add_argument(
        "--no-labels",
        action="store_true",
        help="write records without labels (a test set), even if the CSV has a label column",
    )
    parser.add_argument(
        "--label-sep", metavar="SEP", help="separator of several labels in one column"
    )
    parser.add_argument("--task", choices=TASKS, help="target type; inferred when omitted")
    parser.add_argument(
        "--id-col", metavar="COL", help="CSV column of unique ids (default: file stem)"
    )
    parser.add_argument(
        "--group-col", metavar="COL", help="CSV column of groups kept within one fold"
    )
    parser.add_argument(
        "--folds", type=int, metavar="K", help="number of stratified folds, >= 2 (default: none)"
    )
    parser.add_argument("--seed", type=int, default=42, metavar="S", help="fold and order seed")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes")
    parser.add_argument(
        "--shard-mb", type=float, default=100.0, metavar="MB", help="target shard size (MB)"
    )
    parser.add_argument(
        "--resize",
        type=int,
        metavar="PX",
        help="scale the longer side to PX (aspect kept, no crop) and re-encode as JPEG; "
        "default: store the original bytes",
    )
    parser.add_argument(
        "--quality",
        type=int,
        default=95,
        metavar="Q",
        help="JPEG quality with --resize and of the --sizes copies",
    )
    parser.add_argument(
        "--sizes",
        type=_size_list,
        metavar="PX,PX",
        help="also store JPEG copies whose shorter side is each size (e.g. 128,256; never "
        "upscaled): build_dataset decodes the smallest that covers its output",
    )
    parser.add_argument("--prefix", default="train", help="shard file name prefix")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing dataset (it stays readable until the new one is complete)",
    )
    parser.add_argument(
        "--max-bad",
        type=float,
        default=0.01,
        metavar="FRACTION",
        help="tolerated fraction of bad images (default 0.01)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def _size_list(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected sizes in pixels such as 128,256: {text!r}"
        ) from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes such as 128,256: {text!r}")
    return sizes


def _write(args: argparse.Namespace) -> int:
    from tfrecords_tools.write import write_records

    write_records(
        args.out,
        csv=args.csv,
        from_folder=args.from_folder,
        image_col=args.image_col,
        label_cols=None if args.no_labels else args.label_cols or ["label"],
        optional_labels=args.label_cols is None,
        id_col=args.id_col,
        group_col=args.group_col,
        task=args.task,
        label_sep=args.label_sep,
        folds=args.folds,
        seed=args.seed,
        workers=args.workers,
        shard_mb=args.shard_mb,
        resize=args.resize,
        quality=args.quality,
        sizes=args.sizes,
        overwrite=args.overwrite,
        max_bad=args.max_bad,
        prefix=args.prefix,
        progress=not args.quiet,
    )
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from tfrecords_tools.inspect import format_inspection, inspect_records

    report = inspect_records(args.path, num_records=args.num_records)
    print(json.dumps(report, indent=2) if args.json else format_inspection(report))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from tfrecords_tools.inspect import format_verification, verify_records

    report = verify_records(args.path, image_key=args.image_key, progress=not args.quiet)
    print(json.dumps(report, indent=2) if args.json else format_verification(report))
    return 0 if report["ok"] else 1


def build_parser() -> argparse.ArgumentParser:
    """Returns the argument parser of `tfrecords-tools`."""
    parser = argparse.ArgumentParser(
        prog="tfrecords-tools", description="Write, inspect and verify image TFRecords."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _write_parser(commands)
    inspect = commands.add_parser("inspect", help="feature keys, types, counts of TFRecords")
    inspect.add_argument("path", help="a folder, a .tfrec file or a glob")
    inspect.add_argument("--num-records", type=int, default=16, help="records parsed per file")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    verify = commands.add_parser("verify", help="read every record and decode every image")
    verify.add_argument("path", help="a folder, a .tfrec file or a glob")
    verify.add_argument("--image-key", help="feature holding the encoded image (default: found)")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument("--quiet", action="store_true", help="no progress output on stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; a user error prints its message and exits 2, a corrupt file in verify 1."""
    args = build_parser().parse_args(argv)
    handlers = {"write": _write, "inspect": _inspect, "verify": _verify}
    try:
        return handlers[args.command](args)
    except TFRecordsError as error:
        print(f"tfrecords-tools {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
