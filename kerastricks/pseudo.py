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
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from kerastricks._fs import write_text_atomic
from kerastricks.config import Config, ConfigError, save_config
from kerastricks.pseudo_sets import pseudo_targets, select_confident, write_pseudo_sets
from kerastricks.train.reports import prepare_run_dir
from kerastricks.train.resume import resumed_run_config, write_run_kind
from tfrecords_tools.schema import MANIFEST_NAME


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
    from kerastricks.eval.cv import cross_validate, cv_folds
    from kerastricks.train.preflight import check_records, preflight
    from kerastricks.train.strategy import detect_hardware

    if resume is not None:
        config = _resumed_config(config, resume)
    _check_pseudo_config(config)
    run_dir = resume or os.path.join(config.output, f"{config.name}-pseudo")
    hardware = detect_hardware(config.train.strategy)
    # Everything round 0 checks, checked before the run folder exists.
    inputs = preflight(config, holdout=False)
    cv_folds(config, inputs.source)
    labeled = inputs.source
    if labeled.task != "single_label":
        raise ConfigError(
            f"data.records: pseudo-labelling picks one confident class per sample; "
            f"{labeled.path} is a {labeled.task} task. Train with `kerastricks cv` instead."
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
    trained = tf.io.gfile.glob(os.path.join(run_dir, "round*", "fold*", "summary.json"))
    labelled = tf.io.gfile.glob(os.path.join(run_dir, "pseudo*", "*", MANIFEST_NAME))
    return resumed_run_config(
        config,
        run_dir,
        "pseudo-label",
        training_locked=bool(trained),
        pseudo_locked=bool(labelled),
    )


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


__all__ = ["pseudo_label_rounds", "pseudo_targets", "select_confident"]
