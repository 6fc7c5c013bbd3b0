"""Pseudo-labelling on digits with 20% of the labels: CV and held-out test accuracy per round,
over several seeds.

Runs `configs/digits_pseudo.yaml` once per seed (round 0: 5-fold CV on the labelled 20%;
round 1: the same folds plus confident pseudo-labels of the unlabelled 60%, each fold's from
the round-0 model that never saw its labels), then predicts the held-out 20% test split with
each round's fold ensemble (+TTA). The data split is the same for every seed (written with
seed 42); the seed changes the initialisation, the input order and the augmentation, with
`data.deterministic: true`. With `--modes per_fold pooled`, the pooled (leaky) round 1 is
trained from a copy of the same round-0 models, so the two modes differ only in who labels
fold k's pseudo-labels. `--reuse` keeps finished runs and only scores them on the test split.
Prints one row per seed, mode and round, then the mean and range per mode and round; the last
line is one JSON object.

    python benchmarks/pseudo_digits.py [--seeds 42 43 44] [--modes per_fold pooled] [--reuse]
        [--set key.path=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

import pandas as pd

import kerastricks  # noqa: F401  (Keras 2 API before TensorFlow loads)
from kerastricks.config import load_config
from kerastricks.data import build_dataset, resolve_records
from kerastricks.datasets import prepare_digits_semi
from kerastricks.eval import predict
from kerastricks.pseudo import pseudo_label_rounds

CONFIG = "configs/digits_pseudo.yaml"
DATA_SEED = 42


def test_accuracy(config, round_dir: str) -> float:
    """Accuracy of a round's fold ensemble (+TTA) on the labelled test records."""
    out = os.path.join(round_dir, "test")
    result = predict(config, round_dir, config.data.test, out_dir=out)
    predictions = pd.read_csv(result["predictions"])
    source = resolve_records(config.data.test)
    truth = {}
    dataset = build_dataset(source, 8, 256, training=False, with_ids=True)
    for _, labels, ids in dataset:
        for label, sample_id in zip(labels.numpy().argmax(1), ids.numpy(), strict=True):
            truth[sample_id.decode()] = int(label)
    predicted = predictions.filter(like="p_").to_numpy().argmax(axis=1)
    expected = predictions["id"].astype(str).map(truth).to_numpy()
    return float((predicted == expected).mean())


def run_seed(seed: int, modes: list[str], overrides: list[str], reuse: bool) -> list[dict]:
    """Every round of one seed in each mode, with each round's test accuracy; the modes
    after the first start from a copy of the first mode's round 0."""
    rows = []
    first_dir = None
    for mode in modes:
        config = load_config(
            CONFIG,
            [
                f"seed={seed}",
                f"name=digits_pseudo_s{seed}_{mode}",
                "data.deterministic=true",
                f"pseudo.mode={mode}",
                *overrides,
            ],
        )
        run_dir = os.path.join(config.output, f"{config.name}-pseudo")
        if reuse and os.path.exists(os.path.join(run_dir, "rounds.csv")):
            rounds = pd.read_csv(os.path.join(run_dir, "rounds.csv")).to_dict(orient="records")
        elif first_dir is None:
            rounds = pseudo_label_rounds(config, overwrite=True)["rounds"]
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
            shutil.copytree(first_dir, run_dir, ignore=_later_rounds)
            rounds = pseudo_label_rounds(config, resume=run_dir)["rounds"]
        first_dir = first_dir or run_dir
        for row in rounds:
            round_dir = os.path.join(run_dir, f"round{row['round']}")
            accuracy = test_accuracy(config, round_dir)
            rows.append({"seed": seed, "mode": mode, **row, "test_accuracy": accuracy})
    return rows


def _later_rounds(folder: str, names: list[str]) -> list[str]:
    """What a copied run leaves out: everything after round 0."""
    return [n for n in names if n.startswith(("pseudo", "round")) and n != "round0"] + [
        n for n in names if n in ("rounds.csv", "test")
    ]


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, min and max per round of the CV scores, test accuracy and pseudo-label counts."""
    columns = ["cv_score", "cv_score_plain", "test_accuracy", "pseudo_added", "pseudo_accuracy"]
    stats = table.groupby(["mode", "round"])[columns].agg(["mean", "min", "max"])
    stats.columns = [f"{name}_{stat}" for name, stat in stats.columns]
    return stats.reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--modes", nargs="+", default=["per_fold", "pooled"])
    parser.add_argument("--reuse", action="store_true", help="score finished runs again")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    records = load_config(CONFIG).data.records
    prepare_digits_semi(os.path.dirname(os.path.abspath(records)), seed=DATA_SEED)
    rows = [
        row for seed in args.seeds for row in run_seed(seed, args.modes, args.overrides, args.reuse)
    ]
    table = pd.DataFrame(rows)
    stats = summarise(table)
    print(table.to_string(index=False))
    print(stats.T.to_string(header=False))
    print(json.dumps({"rows": rows, "summary": stats.to_dict(orient="records")}))


if __name__ == "__main__":
    main()
