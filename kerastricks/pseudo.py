"""Pseudo-label rounds: confident predictions on unlabelled data join the next round's
training folds (never validation), without leaking validation labels.

Round 0 is a plain CV run on the labelled records. After round r, models predict
`data.unlabeled`; the confident samples (top probability >= threshold, or the k most confident
per class, which keeps classes balanced) are written as extra training records with their
pseudo-label (hard, or the soft distribution) and a sample weight. Round r+1 is a CV run with
those records in each fold's `data.extra_records`, which the pipeline mixes into the training
folds only; every validation fold and the CV score stay on the same real labelled samples.

Which models label the data decides whether the CV score can be trusted. In the default
`per_fold` mode, fold k of round r+1 trains on pseudo-labels from round r's fold-k model
only: the one model that never saw fold k's labels. The `pooled` mode gives every fold the
whole ensemble's pseudo-labels; the other folds' models trained on fold k's labels and pass
them on through the pseudo-labels, so fold k's CV score is optimistic. Each pseudo set's
manifest records its provenance: the round, the models behind it and the ids they trained on.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from kerastricks._fs import read_json, write_json_atomic, write_text_atomic
from kerastricks.config import Config, ConfigError, load_config, save_config
from kerastricks.train.records import prepare_run_dir
from kerastricks.train.resume import check_run_kind, resume_config, write_run_kind


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
        "class_names": list(class_names),
        "num_classes": int(targets.shape[1]),
        "num_records": written,
        "num_folds": 0,
        "shards": [{"file": os.path.basename(final), "fold": -1, "count": written}],
        "counts": {"per_fold": {"-1": written}},
        "skipped": [],
        "provenance": provenance or {},
    }
    write_json_atomic(os.path.join(out, "manifest.json"), manifest)
    return manifest


def pseudo_label_rounds(
    config: Config, *, resume: str | None = None, overwrite: bool = False
) -> dict[str, Any]:
    """`kerastricks pseudo-label`: round 0 on labelled data, then `pseudo.rounds` rounds each
    trained with the previous round's confident pseudo-labels; writes `rounds.csv`.

    Args:
        config: the run config (`data.unlabeled` and `pseudo` set).
        resume: a pseudo-label run folder to continue; the changes of `config` that a resume
            may apply are applied (more rounds; selection settings until a pseudo set is
            written; training settings until a fold has finished), any other is refused.
        overwrite: replace an existing `<output>/<name>-pseudo` folder.
    """
    from kerastricks.data import resolve_records
    from kerastricks.eval.cv import cross_validate
    from kerastricks.train.preflight import check_records, prepare_records
    from kerastricks.train.strategy import detect_hardware

    if resume is not None:
        config = _resumed_config(config, resume)
    _check_pseudo_config(config)
    run_dir = resume or os.path.join(config.output, f"{config.name}-pseudo")
    hardware = detect_hardware(config.train.strategy)
    prepare_records(config)
    labeled = resolve_records(
        config.data.records, keys=config.data.keys, num_classes=config.data.num_classes
    )
    unlabeled = resolve_records(
        config.data.unlabeled, keys=config.data.keys, num_classes=labeled.num_classes
    )
    check_records(unlabeled, "data.unlabeled")
    if resume is None:
        prepare_run_dir(run_dir, overwrite)
        write_run_kind(run_dir, "pseudo-label")
    save_config(config, os.path.join(run_dir, "config.yaml"))
    rows = []
    pseudo_sets: dict[int, str] | None = None
    for round_index in range(config.pseudo.rounds + 1):
        round_config = dataclasses.replace(config, name=f"round{round_index}", output=run_dir)
        round_dir = os.path.join(run_dir, f"round{round_index}")
        resumable = tf.io.gfile.exists(os.path.join(round_dir, "config.yaml"))
        print(f"\n======== pseudo-label round {round_index}")
        summary = cross_validate(
            round_config,
            resume=round_dir if resumable else None,
            overwrite=not resumable,
            hardware=hardware,
            extra_records_by_fold=pseudo_sets,
            run_dir=round_dir,
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
        pseudo_sets = write_pseudo_sets(
            config,
            round_dir,
            os.path.join(run_dir, f"pseudo{round_index + 1}"),
            unlabeled,
            labeled,
            summary["folds"],
            hardware=hardware,
        )
    table = pd.DataFrame(rows)
    write_text_atomic(os.path.join(run_dir, "rounds.csv"), table.to_csv(index=False))
    print("\n" + table.to_string(index=False))
    return {"rounds": rows, "run_dir": run_dir}


def _resumed_config(config: Config, run_dir: str) -> Config:
    """The saved pseudo-label run's config with the changes a resume may apply."""
    check_run_kind(run_dir, "pseudo-label")
    saved = load_config(os.path.join(run_dir, "config.yaml"))
    trained = tf.io.gfile.glob(os.path.join(run_dir, "round*", "fold*", "summary.json"))
    labelled = tf.io.gfile.glob(os.path.join(run_dir, "pseudo*", "*", "manifest.json"))
    merged, changes = resume_config(
        saved,
        config,
        training_locked=bool(trained),
        pseudo_locked=bool(labelled),
        where=run_dir,
    )
    for change in changes:
        print(f"kerastricks: resume applies {change}")
    return merged


def _check_pseudo_config(config: Config) -> None:
    # Before the run folder exists: these would otherwise fail after round 0 has trained.
    if config.data.unlabeled is None:
        raise ConfigError("data.unlabeled: pseudo-labelling needs the records to pseudo-label")
    if config.data.extra_records is not None and config.pseudo.rounds > 0:
        raise ConfigError(
            f"data.extra_records ({config.data.extra_records}): pseudo-label rounds put their "
            "pseudo-labels in each fold's extra records, which hold one record set; write "
            "your extra records into data.records instead (fold -1 never validates)."
        )


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
        if not tf.io.gfile.exists(os.path.join(set_dir, "manifest.json")):
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
    from kerastricks.eval.predict import ensemble_predict

    # A fold folder predicts with its own model only; a round folder with every fold's.
    result = ensemble_predict(
        predictor, unlabeled, config.predict.weights, hardware=hardware, tta=config.tta
    )
    chosen = select_confident(
        result["tta"],
        threshold=None if config.pseudo.top_k else config.pseudo.threshold,
        top_k=config.pseudo.top_k,
    )
    targets = pseudo_targets(result["tta"][chosen], config.pseudo.soft)
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
    _write_pseudo_report(out, result, chosen, labeled=_has_labels(unlabeled, result))


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


def _has_labels(source: Any, result: dict[str, Any]) -> bool:
    # The unlabelled records may carry their true labels (the demo hides them from
    # training); only then is the pseudo-labels' accuracy reported.
    if not source.labeled:
        return False
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


def _pseudo_stats(run_dir: str, round_index: int) -> dict[str, Any]:
    """Pseudo-labels a round trained on: per fold model (mean over sets) and their accuracy
    where the unlabelled records carry true labels."""
    paths = tf.io.gfile.glob(os.path.join(run_dir, f"pseudo{round_index}", "*", "pseudo.csv"))
    if round_index == 0 or not paths:
        return {"pseudo_added": 0, "pseudo_accuracy": None}
    frames = [pd.read_csv(tf.io.gfile.GFile(path)) for path in sorted(paths)]
    combined = pd.concat(frames, ignore_index=True)
    accuracy = None
    if "true_label" in combined and len(combined):
        accuracy = float((combined["true_label"] == combined["pseudo_label"]).mean())
    added = float(np.mean([len(frame) for frame in frames]))
    return {"pseudo_added": added, "pseudo_accuracy": accuracy}


def pseudo_provenance(set_dir: str) -> dict[str, Any]:
    """The provenance saved in a pseudo set's manifest (round, mode, models, their ids)."""
    return read_json(os.path.join(set_dir, "manifest.json"))["provenance"]
