"""Pseudo-labelling on digits with 20% of the labels: CV and held-out test accuracy per round.

Runs `configs/digits_pseudo.yaml` (round 0: 5-fold CV on the labelled 20%; round 1: the same
folds plus confident pseudo-labels of the unlabelled 60%), then predicts the held-out 20% test
split with each round's fold ensemble (+TTA). Prints a table; the last line is one JSON object.

    python benchmarks/pseudo_digits.py [--set key.path=value ...]
"""

from __future__ import annotations

import argparse
import json
import os

import pandas as pd

import kerastricks  # noqa: F401  (Keras 2 API before TensorFlow loads)
from kerastricks.config import load_config
from kerastricks.data import build_dataset, resolve_records
from kerastricks.eval import predict
from kerastricks.pseudo import pseudo_label_rounds


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    config = load_config("configs/digits_pseudo.yaml", args.overrides)
    report = pseudo_label_rounds(config, overwrite=True)
    rows = []
    for row in report["rounds"]:
        round_dir = os.path.join(report["run_dir"], f"round{row['round']}")
        rows.append({**row, "test_accuracy": test_accuracy(config, round_dir)})
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    print(json.dumps({"rounds": rows}))


if __name__ == "__main__":
    main()
