"""Pseudo-label sets: confident predictions on unlabelled records, written as extra training
records with their provenance.

`write_pseudo_sets` labels the unlabelled records for the round after a CV round. In the
default `per_fold` mode, fold k's set comes from that round's fold-k model only: the one model
that never saw fold k's labels. In the `pooled` mode one set comes from every fold model and
is shared by all folds; those models trained on fold k's labels and hand them on through the
pseudo-labels, so fold k's CV score is optimistic. Each set's manifest records the round, the
models behind it and the labelled ids they trained on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from kerastricks._fs import read_json, write_json_atomic, write_text_atomic
from kerastricks.config import Config, load_config
from tfrecords_tools.schema import (
    MANIFEST_NAME,
    PSEUDO_FEATURES,
    PSEUDO_PREFIX,
    make_example,
    shard_name,
    shards_manifest,
)

DEFAULT_THRESHOLD = 0.95


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


def selection_rule(config: Config) -> tuple[float | None, int | None]:
    """`(threshold, top_k)` of a run: one of the two, the threshold 0.95 when neither is set."""
    if config.pseudo.top_k is not None:
        return None, config.pseudo.top_k
    threshold = config.pseudo.threshold
    return (DEFAULT_THRESHOLD if threshold is None else threshold), None


def pseudo_targets(probabilities: np.ndarray, soft: bool) -> np.ndarray:
    """The training targets of pseudo-labelled samples: one-hot argmax, or the distribution."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if soft:
        return probabilities / probabilities.sum(axis=1, keepdims=True)
    return np.eye(probabilities.shape[1], dtype=np.float32)[probabilities.argmax(axis=1)]


def write_pseudo_records(
    source: Any,
    ids: np.ndarray,
    targets: np.ndarray,
    weight: float,
    out: str,
    task: str,
    class_names: Sequence[str] = (),
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Copies the chosen unlabelled images into `out/pseudo.tfrec` with `label` (argmax),
    `soft_label`, `weight` and fold -1, plus a manifest (with `provenance`); returns it.

    Args:
        source: the resolved unlabelled records the images come from.
        ids: ids of the chosen samples.
        targets: their training targets, one row per id (`pseudo_targets`).
        weight: sample weight of every pseudo-labelled record.
        out: the folder to write.
        task: the labelled records' task.
        class_names: the labelled records' class names (the unlabelled ones have none).
        provenance: where the pseudo-labels come from (saved in the manifest).
    """
    wanted = {str(i): n for n, i in enumerate(ids)}
    image_key, id_key = source.keys["image"], source.keys["id"]
    spec = {
        image_key: tf.io.FixedLenFeature([], tf.string),
        id_key: tf.io.FixedLenFeature([], tf.string),
    }
    tf.io.gfile.makedirs(out)
    final = os.path.join(out, shard_name(PSEUDO_PREFIX, -1, 0))
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
    shard = {
        "file": os.path.basename(final),
        "fold": -1,
        "count": written,
        "bytes": tf.io.gfile.stat(final).length,
    }
    manifest = shards_manifest(
        task,
        class_names,
        int(targets.shape[1]),
        [shard],
        extra_features=PSEUDO_FEATURES,
        skipped=[],
        provenance=provenance or {},
    )
    write_json_atomic(os.path.join(out, MANIFEST_NAME), manifest)
    return manifest


def write_pseudo_sets(
    config: Config,
    round_dir: str,
    out: str,
    unlabeled: Any,
    labeled: Any,
    folds: Sequence[int],
    *,
    hardware: Any = None,
) -> dict[int, str]:
    """Writes the pseudo-label sets of the round after `round_dir`; returns each fold's set.

    `per_fold`: `out/fold<k>/` is labelled by `round_dir/fold<k>` alone. `pooled`:
    `out/pooled/` is labelled by every fold model of the round and shared by all folds.
    A set whose manifest exists is kept (a resumed run does not label again).
    """
    round_index = int(os.path.basename(round_dir.rstrip("/")).removeprefix("round")) + 1
    fold_dirs = {fold: os.path.join(round_dir, f"fold{fold}") for fold in folds}
    # (name, folds that train on the set, the folder whose models label it, those models)
    if config.pseudo.mode == "pooled":
        groups = [("pooled", list(folds), round_dir, list(fold_dirs.values()))]
    else:
        groups = [(f"fold{f}", [f], fold_dirs[f], [fold_dirs[f]]) for f in folds]
    sets = {}
    for name, for_folds, predictor, model_dirs in groups:
        set_dir = os.path.join(out, name)
        if not tf.io.gfile.exists(os.path.join(set_dir, MANIFEST_NAME)):
            provenance = {
                "round": round_index,
                "mode": config.pseudo.mode,
                "for_folds": for_folds,
                "models": [_model_provenance(d) for d in model_dirs],
            }
            _write_pseudo_set(config, predictor, unlabeled, labeled, set_dir, provenance, hardware)
        sets.update({fold: set_dir for fold in for_folds})
    return sets


def _write_pseudo_set(
    config: Config,
    predictor: str,
    unlabeled: Any,
    labeled: Any,
    out: str,
    provenance: dict[str, Any],
    hardware: Any,
) -> None:
    from kerastricks.eval.inference import ensemble_predict

    # A fold folder predicts with its own model only; a round folder with every fold's.
    result = ensemble_predict(
        predictor, unlabeled, config.predict.weights, hardware=hardware, tta=config.tta
    )
    chosen = select_confident(result["tta"], *selection_rule(config))
    targets = pseudo_targets(result["tta"][chosen], config.pseudo.soft)
    # The report first, the manifest (written last by write_pseudo_records) marks a whole set.
    tf.io.gfile.makedirs(out)
    _write_pseudo_report(out, result, chosen, labeled=_has_labels(unlabeled, labeled, result))
    write_pseudo_records(
        unlabeled,
        result["ids"][chosen],
        targets,
        config.pseudo.weight,
        out,
        labeled.task,
        class_names=list(labeled.class_names),
        provenance=provenance,
    )


def _model_provenance(model_dir: str) -> dict[str, Any]:
    """A model folder, the fold it held out and the labelled ids it trained on."""
    from kerastricks.data import resolve_records

    config = load_config(os.path.join(model_dir, "config.yaml"))
    source = resolve_records(
        config.data.records, keys=config.data.keys, num_classes=config.data.num_classes
    )
    return {
        "run_dir": model_dir,
        "val_fold": config.data.val_fold,
        "records": config.data.records,
        "trained_on_ids": record_ids(source, exclude_folds=[config.data.val_fold]),
    }


def record_ids(
    source: Any, folds: Sequence[int] | None = None, exclude_folds: Sequence[int] | None = None
) -> list[str]:
    """The ids of a record source's records in the selected folds, in file order."""
    from kerastricks.data.reader import fold_predicate

    id_key, fold_key = source.keys["id"], source.keys["fold"]
    spec = {id_key: tf.io.FixedLenFeature([], tf.string)}
    if fold_key is not None:
        spec[fold_key] = tf.io.FixedLenFeature([], tf.int64, default_value=-1)
    dataset = tf.data.TFRecordDataset(source.files_for(folds, exclude_folds))
    dataset = dataset.map(lambda record: tf.io.parse_single_example(record, spec))
    if source.needs_record_filter(folds, exclude_folds):
        selection = source.check_folds(folds, exclude_folds)
        dataset = dataset.filter(lambda parsed: fold_predicate(parsed[fold_key], *selection))
    return [parsed[id_key].decode() for parsed in dataset.as_numpy_iterator()]


def _has_labels(source: Any, labeled: Any, result: dict[str, Any]) -> bool:
    # The unlabelled records may carry their true labels (the demo hides them from
    # training); only then is the pseudo-labels' accuracy reported.
    if not source.labeled or list(source.class_names) != list(labeled.class_names):
        return False  # no true labels, or class indices that mean other classes
    targets = result["targets"]
    return bool(targets.size) and bool(np.allclose(targets.sum(axis=1), 1.0))


def _write_pseudo_report(
    out: str, result: dict[str, Any], chosen: np.ndarray, labeled: bool
) -> None:
    predicted = result["tta"].argmax(axis=1)
    frame = pd.DataFrame(
        {
            "id": result["ids"][chosen],
            "pseudo_label": predicted[chosen],
            "confidence": result["tta"].max(axis=1)[chosen],
        }
    )
    if labeled:
        frame["true_label"] = result["targets"].argmax(axis=1)[chosen]
    write_text_atomic(os.path.join(out, "pseudo.csv"), frame.to_csv(index=False))


def pseudo_provenance(set_dir: str) -> dict[str, Any]:
    """The provenance saved in a pseudo set's manifest (round, mode, models, their ids)."""
    return read_json(os.path.join(set_dir, MANIFEST_NAME))["provenance"]
