"""Pseudo-label rounds: confident predictions on unlabelled data join the next round's
training folds (never validation).

Round 0 is a plain CV run on the labelled records. After round r, the fold ensemble predicts
`data.unlabeled`; the confident samples (top probability >= threshold, or the k most confident
per class, which keeps classes balanced) are written as extra training records with their
pseudo-label (hard, or the soft distribution) and a sample weight. Round r+1 is a CV run with
those records in `data.extra_records`, which the pipeline mixes into the training folds only;
every validation fold and the CV score stay on the same real labelled samples.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from kerastricks._fs import write_json_atomic, write_text_atomic
from kerastricks.config import Config, load_config, save_config
from kerastricks.train.records import prepare_run_dir


def select_confident(
    probabilities: np.ndarray, threshold: float | None = None, top_k: int | None = None
) -> np.ndarray:
    """Indices of the samples to pseudo-label: top probability >= threshold, or the `top_k`
    most confident samples of each predicted class (sorted by index)."""
    probabilities = np.asarray(probabilities)
    if (threshold is None) == (top_k is None):
        raise ValueError("pseudo: give exactly one of threshold and top_k")
    confidence = probabilities.max(axis=1)
    if threshold is not None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"pseudo.threshold: expected a value in (0, 1], got {threshold}")
        return np.flatnonzero(confidence >= threshold)
    if top_k < 1:
        raise ValueError(f"pseudo.top_k: expected >= 1, got {top_k}")
    predicted = probabilities.argmax(axis=1)
    chosen = []
    for cls in np.unique(predicted):
        members = np.flatnonzero(predicted == cls)
        order = members[np.argsort(-confidence[members], kind="stable")]
        chosen.append(order[:top_k])
    return np.sort(np.concatenate(chosen)) if chosen else np.array([], dtype=np.int64)


def pseudo_targets(probabilities: np.ndarray, soft: bool) -> np.ndarray:
    """The training targets of pseudo-labelled samples: one-hot argmax, or the distribution."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if soft:
        return probabilities / probabilities.sum(axis=1, keepdims=True)
    return np.eye(probabilities.shape[1], dtype=np.float32)[probabilities.argmax(axis=1)]


def write_pseudo_records(
    source: Any, ids: np.ndarray, targets: np.ndarray, weight: float, out: str, task: str
) -> dict[str, Any]:
    """Copies the chosen unlabelled images into `out/pseudo.tfrec` with `label` (argmax),
    `soft_label`, `weight` and fold -1, plus a manifest; returns the manifest."""
    from tfrecords_tools.schema import make_example

    wanted = {str(i): n for n, i in enumerate(ids)}
    image_key, id_key = source.keys["image"], source.keys["id"]
    spec = {
        image_key: tf.io.FixedLenFeature([], tf.string),
        id_key: tf.io.FixedLenFeature([], tf.string),
    }
    tf.io.gfile.makedirs(out)
    final = os.path.join(out, "pseudo-f-1-00000.tfrec")
    tmp = final + ".tmp"
    written = 0
    with tf.io.TFRecordWriter(tmp) as writer:
        for record in tf.data.TFRecordDataset(source.files):
            parsed = tf.io.parse_single_example(record, spec)
            sample_id = parsed[id_key].numpy().decode()
            if sample_id not in wanted:
                continue
            target = targets[wanted[sample_id]]
            example = tf.train.Example.FromString(
                make_example(parsed[image_key].numpy(), [int(target.argmax())], sample_id, -1, task)
            )
            features = example.features.feature
            features["soft_label"].float_list.value.extend(target.tolist())
            features["weight"].float_list.value.append(float(weight))
            writer.write(example.SerializeToString())
            written += 1
    tf.io.gfile.rename(tmp, final, overwrite=True)
    manifest = {
        "format_version": 1,
        "task": task,
        "features": {
            "image": "bytes",
            "label": "int64_list",
            "id": "bytes",
            "fold": "int64",
            "soft_label": "float_list",
            "weight": "float",
        },
        "class_names": list(source.class_names),
        "num_classes": int(targets.shape[1]),
        "num_records": written,
        "num_folds": 0,
        "shards": [{"file": os.path.basename(final), "fold": -1, "count": written}],
        "counts": {"per_fold": {"-1": written}},
        "skipped": [],
    }
    write_json_atomic(os.path.join(out, "manifest.json"), manifest)
    return manifest


def pseudo_label_rounds(
    config: Config, *, resume: str | None = None, overwrite: bool = False
) -> dict[str, Any]:
    """`kerastricks pseudo-label`: round 0 on labelled data, then `pseudo.rounds` rounds each
    trained with the previous ensemble's confident pseudo-labels; writes `rounds.csv`."""
    from kerastricks.data import resolve_records
    from kerastricks.eval.cv import cross_validate
    from kerastricks.eval.predict import ensemble_predict

    if resume is not None:
        config = load_config(os.path.join(resume, "config.yaml"))
    run_dir = resume or os.path.join(config.output, config.name)
    if config.data.unlabeled is None:
        raise ValueError("data.unlabeled: pseudo-labelling needs the records to pseudo-label")
    from kerastricks.train.preflight import prepare_records
    from kerastricks.train.strategy import detect_hardware

    hardware = detect_hardware(config.train.strategy)
    if resume is None:
        prepare_run_dir(run_dir, overwrite)
    save_config(config, os.path.join(run_dir, "config.yaml"))
    prepare_records(config)
    unlabeled = resolve_records(
        config.data.unlabeled, keys=config.data.keys, num_classes=config.data.num_classes
    )
    rows = []
    extra = config.data.extra_records
    for round_index in range(config.pseudo.rounds + 1):
        round_config = dataclasses.replace(
            config,
            name=f"round{round_index}",
            output=run_dir,
            data=dataclasses.replace(config.data, extra_records=extra),
        )
        round_dir = os.path.join(run_dir, f"round{round_index}")
        resumable = tf.io.gfile.exists(os.path.join(round_dir, "config.yaml"))
        print(f"\n======== pseudo-label round {round_index}")
        summary = cross_validate(
            round_config,
            resume=round_dir if resumable else None,
            overwrite=not resumable,
            hardware=hardware,
        )
        row = {
            "round": round_index,
            "cv_score": summary["cv_score"],
            "cv_score_plain": summary["cv_score_plain"],
            "num_oof": summary["num_oof"],
        }
        row.update(_pseudo_stats(run_dir, round_index))
        rows.append(row)
        if round_index == config.pseudo.rounds:
            break
        result = ensemble_predict(round_dir, unlabeled, config.predict.weights)
        chosen = select_confident(
            result["tta"],
            threshold=None if config.pseudo.top_k else config.pseudo.threshold,
            top_k=config.pseudo.top_k,
        )
        targets = pseudo_targets(result["tta"][chosen], config.pseudo.soft)
        extra = os.path.join(run_dir, f"pseudo{round_index + 1}")
        write_pseudo_records(
            unlabeled, result["ids"][chosen], targets, config.pseudo.weight, extra, unlabeled.task
        )
        _write_pseudo_report(extra, result, chosen)
    table = pd.DataFrame(rows)
    write_text_atomic(os.path.join(run_dir, "rounds.csv"), table.to_csv(index=False))
    print("\n" + table.to_string(index=False))
    return {"rounds": rows, "run_dir": run_dir}


def _write_pseudo_report(out: str, result: dict[str, Any], chosen: np.ndarray) -> None:
    # The unlabelled records may carry their true labels (the demo hides them from training);
    # when they do, report the accuracy of the pseudo-labels that were kept.
    predicted = result["tta"].argmax(axis=1)
    frame = pd.DataFrame(
        {
            "id": result["ids"][chosen],
            "pseudo_label": predicted[chosen],
            "confidence": result["tta"].max(axis=1)[chosen],
        }
    )
    targets = result["targets"]
    if targets.size and np.allclose(targets.sum(axis=1), 1.0):
        frame["true_label"] = targets.argmax(axis=1)[chosen]
    write_text_atomic(os.path.join(out, "pseudo.csv"), frame.to_csv(index=False))


def _pseudo_stats(run_dir: str, round_index: int) -> dict[str, Any]:
    path = os.path.join(run_dir, f"pseudo{round_index}", "pseudo.csv")
    if round_index == 0 or not tf.io.gfile.exists(path):
        return {"pseudo_added": 0, "pseudo_accuracy": None}
    frame = pd.read_csv(tf.io.gfile.GFile(path))
    accuracy = None
    if "true_label" in frame and len(frame):
        accuracy = float((frame["true_label"] == frame["pseudo_label"]).mean())
    return {"pseudo_added": len(frame), "pseudo_accuracy": accuracy}
