"""K-fold cross-validation with out-of-fold predictions ("trust your CV").

One model per fold, each validated on its held-out fold only. Every fold is a complete
training run folder (`<run>/fold<k>/`), so a crashed CV run resumes inside the fold where it
stopped and skips the folds already finished.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from kerastricks._fs import read_json, write_json_atomic, write_text_atomic
from kerastricks.config import Config, ConfigError, load_config, save_config
from kerastricks.eval.inference import load_trained_model, predict_records, probability_columns
from kerastricks.losses import monitor_for, score_predictions
from kerastricks.train.preflight import preflight
from kerastricks.train.reports import library_versions, prepare_run_dir
from kerastricks.train.resume import resumed_run_config, write_run_kind


def cross_validate(
    config: Config,
    *,
    resume: str | None = None,
    overwrite: bool = False,
    hardware: Any = None,
    extra_records_by_fold: Mapping[int, str] | None = None,
    run_dir: str | None = None,
) -> dict[str, Any]:
    """`kerastricks cv`: trains the listed folds (default all), writes `oof.csv` and the
    CV score (plain and with TTA) into `<output>/<name>-cv/summary.json`.

    Returns the summary: the scores, `run_dir` (the CV run folder, what `resume`, `predict`
    and `explain_run` take) and per fold its score and `run_dir` (the fold's training run:
    `history.csv`, `plots/`, `checkpoints/`).

    Args:
        config: the run config; `cv.folds` lists the folds to train (null: all).
        resume: a CV run folder to continue (finished folds are kept as they are); the
            changes of `config` that a resume may apply are applied (TTA and prediction
            settings re-score every fold), any other difference is refused.
        overwrite: replace an existing run folder of the same name.
        hardware: a strategy from `detect_hardware`, shared by every fold (a TPU is
            initialised once).
        extra_records_by_fold: records that join one fold's training only (each fold's
            pseudo-labels); folds not listed use `data.extra_records`.
        run_dir: the folder of a new CV run (default `<output>/<name>-cv`).
    """
    from kerastricks.train.strategy import detect_hardware

    if resume is not None:
        config = resumed_cv_config(config, resume)
    run_dir = resume or run_dir or cv_run_dir(config)
    # Before anything reads records: multi-worker collectives must be configured first.
    hardware = hardware or detect_hardware(config.train.strategy)
    inputs = preflight(config, holdout=False)
    folds = cv_folds(config, inputs.source)
    if resume is None:
        prepare_run_dir(run_dir, overwrite)
        write_run_kind(run_dir, "cv")
    save_config(config, os.path.join(run_dir, "config.yaml"))
    fold_results = []
    for fold in folds:
        extra = (extra_records_by_fold or {}).get(fold, config.data.extra_records)
        fold_results.append(_run_fold(config, run_dir, fold, hardware, extra))
    oof = pd.concat([r["oof"] for r in fold_results], ignore_index=True)
    write_text_atomic(os.path.join(run_dir, "oof.csv"), oof.to_csv(index=False))
    summary = _summarise(config, inputs.source, oof, fold_results, folds)
    summary["run_dir"] = run_dir
    write_json_atomic(os.path.join(run_dir, "summary.json"), summary)
    _print(summary, run_dir)
    return summary


def cv_run_dir(config: Config) -> str:
    """The folder of a new CV run: `<output>/<name>-cv` (a train run of the same config
    keeps `<output>/<name>`)."""
    return os.path.join(config.output, f"{config.name}-cv")


def resumed_cv_config(config: Config, run_dir: str) -> Config:
    """The saved CV run's config with the changes of `config` that a resume may apply.

    Training settings may change only while no fold has finished (the folds of one CV run
    train alike); a change of TTA or prediction settings removes the folds' OOF files, so
    every fold is scored again with the new settings.
    """
    finished = tf.io.gfile.glob(os.path.join(run_dir, "fold*", "summary.json"))
    merged = resumed_run_config(config, run_dir, "cv", training_locked=bool(finished))
    saved = load_config(os.path.join(run_dir, "config.yaml"))
    if (merged.tta, merged.predict.weights) != (saved.tta, saved.predict.weights):
        for path in tf.io.gfile.glob(os.path.join(run_dir, "fold*", "oof.csv")):
            tf.io.gfile.remove(path)
    return merged


def cv_folds(config: Config, source: Any) -> list[int]:
    """The folds a CV run trains: `cv.folds`, or every fold of the records."""
    available = sorted(f for f in source.fold_counts() if f >= 0)
    if not available:
        raise ConfigError(
            f"data.records: {config.data.records} has no folds; write it with "
            "`tfrecords-tools write ... --folds K`"
        )
    folds = config.cv.folds if config.cv.folds is not None else available
    missing = [f for f in folds if f not in available]
    if missing:
        raise ConfigError(f"cv.folds: folds {missing} are not in the records (have {available})")
    return list(folds)


def _run_fold(
    config: Config, run_dir: str, fold: int, hardware: Any, extra_records: str | None
) -> dict[str, Any]:
    from kerastricks.train import train

    fold_dir = os.path.join(run_dir, f"fold{fold}")
    oof_path = os.path.join(fold_dir, "oof.csv")
    summary_path = os.path.join(fold_dir, "summary.json")
    if not tf.io.gfile.exists(summary_path):
        fold_config = dataclasses.replace(
            config,
            name=f"fold{fold}",
            output=run_dir,
            data=dataclasses.replace(config.data, val_fold=fold, extra_records=extra_records),
        )
        state = os.path.join(fold_dir, "checkpoints", "state.json")
        if tf.io.gfile.exists(state):
            print(f"\n==== fold {fold}: resuming {fold_dir}")
            train(fold_config, resume=fold_dir, hardware=hardware)
        else:
            print(f"\n==== fold {fold}: training, validated on fold {fold} only")
            train(fold_config, overwrite=True, hardware=hardware)
    if not tf.io.gfile.exists(oof_path):
        _write_fold_oof(fold_dir, fold, config, hardware)
    frame = pd.read_csv(tf.io.gfile.GFile(oof_path))
    fold_summary = read_json(summary_path)
    return {"fold": fold, "oof": frame, "summary": fold_summary, "run_dir": fold_dir}


def _write_fold_oof(fold_dir: str, fold: int, config: Config, hardware: Any) -> None:
    """Predicts the fold's held-out records on the run's device, with the CV run's TTA
    (which a resume may have changed after the fold trained)."""
    from kerastricks.data import resolve_records

    model, fold_config = load_trained_model(fold_dir, config.predict.weights, hardware=hardware)
    task = read_json(os.path.join(fold_dir, "summary.json"))["task"]
    source = resolve_records(
        fold_config.data.records,
        keys=fold_config.data.keys,
        num_classes=fold_config.data.num_classes,
    )
    result = predict_records(
        model, fold_config, source, task, folds=[fold], hardware=hardware, tta=config.tta
    )
    frame = oof_frame(result, fold, task, list(source.class_names))
    write_text_atomic(os.path.join(fold_dir, "oof.csv"), frame.to_csv(index=False))
    tf.keras.backend.clear_session()


def oof_frame(
    result: dict[str, np.ndarray], fold: int, task: str, class_names: list[str]
) -> pd.DataFrame:
    """OOF rows of one fold: id, fold, target (class index for single-label), probabilities
    (`p_*`, TTA-blended) and the plain probabilities (`plain_p_*`)."""
    targets = result["targets"]
    frame = pd.DataFrame({"id": result["ids"], "fold": fold})
    if task == "single_label":
        frame["target"] = targets.argmax(axis=1)
    else:
        for i in range(targets.shape[1]):
            frame[f"target_{i}"] = targets[:, i]
    columns = probability_columns(class_names, result["tta"].shape[1])
    for i, column in enumerate(columns):
        frame[column] = result["tta"][:, i]
    for i, column in enumerate(columns):
        frame[f"plain_{column}"] = result["plain"][:, i]
    return frame


def score_oof(oof: pd.DataFrame, task: str, plain: bool = False) -> float:
    """The CV score recomputed from an `oof.csv` frame (TTA columns, or the plain ones)."""
    prob_columns = [c for c in oof.columns if c.startswith("p_")]
    if plain:
        prob_columns = [f"plain_{c}" for c in prob_columns]
    probabilities = oof[prob_columns].to_numpy()
    if task == "single_label":
        targets = oof["target"].to_numpy()
    else:
        targets = oof[[c for c in oof.columns if c.startswith("target_")]].to_numpy()
    _, score = score_predictions(task, targets, probabilities)
    return float(score)


def _summarise(
    config: Config, source: Any, oof: pd.DataFrame, fold_results: list[dict], folds: list[int]
) -> dict[str, Any]:
    task = source.task
    per_fold = {}
    for result in fold_results:
        frame = result["oof"]
        per_fold[str(result["fold"])] = {
            "score": score_oof(frame, task),
            "score_plain": score_oof(frame, task, plain=True),
            "n": len(frame),
            "wall_s": result["summary"].get("wall_s"),
            "run_dir": result["run_dir"],
        }
    metric = monitor_for(task)[0].removeprefix("val_")
    summary = {
        "name": config.name,
        "task": task,
        "metric": metric,
        "cv_score": score_oof(oof, task),
        "cv_score_plain": score_oof(oof, task, plain=True),
        "tta": {"transforms": config.tta.transforms, "beta": config.tta.beta},
        "folds": folds,
        "per_fold": per_fold,
        "num_oof": len(oof),
        "versions": library_versions(),
    }
    return summary


def _print(summary: dict[str, Any], run_dir: str) -> None:
    print(f"\n{'fold':>4} {'n':>6} {summary['metric']:>12} {'(no TTA)':>10}")
    for fold, values in summary["per_fold"].items():
        print(f"{fold:>4} {values['n']:>6} {values['score']:>12.4f} {values['score_plain']:>10.4f}")
    print(
        f"CV {summary['metric']}: {summary['cv_score']:.4f} with TTA "
        f"{summary['tta']['transforms']}, {summary['cv_score_plain']:.4f} without "
        f"({summary['num_oof']} OOF predictions)"
    )
    print(f"run folder: {run_dir}")
