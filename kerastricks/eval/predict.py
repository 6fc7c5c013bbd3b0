"""Predictions from trained run folders: one fold model or the average of all, with TTA."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from kerastricks._fs import write_text_atomic
from kerastricks.config import Config, load_config
from kerastricks.eval.tta import predict_tta

WEIGHT_FILES = {"best": "best.weights.h5", "last": "last.weights.h5"}


def fold_run_dirs(run_dir: str) -> list[str]:
    """The trained model folders of a run: its `fold*/` folders (a CV run), or itself."""
    folds = sorted(
        os.path.join(run_dir, name)
        for name in tf.io.gfile.listdir(run_dir)
        if name.rstrip("/").startswith("fold")
        and tf.io.gfile.exists(os.path.join(run_dir, name.rstrip("/"), "summary.json"))
    )
    if folds:
        return [f.rstrip("/") for f in folds]
    if tf.io.gfile.exists(os.path.join(run_dir, "summary.json")):
        return [run_dir]
    raise FileNotFoundError(
        f"{run_dir} holds no finished training run (no summary.json, no fold*/summary.json). "
        "Train it first with `kerastricks train` or `kerastricks cv`."
    )


def load_trained_model(model_dir: str, weights: str = "best") -> tuple[tf.keras.Model, Config]:
    """Rebuilds a run's classifier from its saved config and loads its weights."""
    from kerastricks.data import resolve_records
    from kerastricks.train.build import build_model

    if weights not in WEIGHT_FILES:
        raise ValueError(f"predict.weights: expected one of {list(WEIGHT_FILES)}, got {weights!r}")
    config = load_config(os.path.join(model_dir, "config.yaml"))
    path = os.path.join(model_dir, "checkpoints", WEIGHT_FILES[weights])
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path} is missing: the run in {model_dir} did not finish")
    source = resolve_records(
        config.data.records, keys=config.data.keys, num_classes=config.data.num_classes
    )
    model = build_model(config, source.num_classes, final_image_size(config))
    model.load_weights(path)
    return model, config


def final_image_size(config: Config) -> int:
    """The image size of a run's last stage: what its model was trained at last."""
    return config.train.stages[-1].image_size


def predict_records(
    model: tf.keras.Model,
    config: Config,
    records: Any,
    task: str,
    *,
    folds: list[int] | None = None,
    batch_size: int | None = None,
) -> dict[str, np.ndarray]:
    """Plain and TTA probabilities, targets and ids of `records` (all, or some folds)."""
    from kerastricks.data import build_dataset

    dataset = build_dataset(
        records,
        image_size=final_image_size(config),
        batch_size=batch_size or config.train.batch_size,
        training=False,
        folds=folds,
        keys=config.data.keys,
        num_classes=model.output_shape[-1],
        with_ids=True,
    )
    return predict_tta(model, dataset, config.tta.transforms, task, config.tta.beta)


def ensemble_predict(
    run_dir: str, records: Any, weights: str = "best", batch_size: int | None = None
) -> dict[str, Any]:
    """Averages the probabilities of every fold model of a run over `records` (a resolved
    record source), with each model's TTA."""
    plain, tta = [], []
    result: dict[str, Any] = {}
    for model_dir in fold_run_dirs(run_dir):
        model, config = load_trained_model(model_dir, weights)
        result = predict_records(model, config, records, _task_of(model_dir), batch_size=batch_size)
        plain.append(result["plain"])
        tta.append(result["tta"])
        result["config"] = config
        tf.keras.backend.clear_session()
    result["plain"] = np.mean(plain, axis=0)
    result["tta"] = np.mean(tta, axis=0)
    result["models"] = len(plain)
    return result


def _task_of(model_dir: str) -> str:
    import json

    with tf.io.gfile.GFile(os.path.join(model_dir, "summary.json")) as f:
        return json.load(f)["task"]


def probability_columns(class_names: list[str], num_outputs: int) -> list[str]:
    """Column names of the per-class probabilities: `p_<class name>`."""
    names = class_names if len(class_names) == num_outputs else [str(i) for i in range(num_outputs)]
    return [f"p_{name}" for name in names]


def write_prediction_files(
    out_dir: str,
    ids: np.ndarray,
    probabilities: np.ndarray,
    class_names: list[str],
    config: Config,
    task: str,
) -> tuple[str, str]:
    """Writes `predictions.csv` (id + one column per class) and a Kaggle `submission.csv`."""
    columns = probability_columns(class_names, probabilities.shape[1])
    predictions = pd.DataFrame(probabilities, columns=columns)
    predictions.insert(0, "id", ids)
    submission = pd.DataFrame({config.predict.id_column: ids})
    target = config.predict.target
    if task == "regression" or target == "probabilities":
        for i, column in enumerate(columns):
            submission[column.removeprefix("p_")] = probabilities[:, i]
    elif target == "index":
        submission[config.predict.target_column] = probabilities.argmax(axis=1)
    elif target == "class_name":
        names = np.array(class_names or [str(i) for i in range(probabilities.shape[1])])
        if task == "multi_label":
            chosen = [" ".join(names[row >= 0.5]) for row in probabilities]
            submission[config.predict.target_column] = chosen
        else:
            submission[config.predict.target_column] = names[probabilities.argmax(axis=1)]
    else:
        raise ValueError(
            f"predict.target: expected class_name, index or probabilities, got {target!r}"
        )
    predictions_path = os.path.join(out_dir, "predictions.csv")
    submission_path = os.path.join(out_dir, "submission.csv")
    write_text_atomic(predictions_path, predictions.to_csv(index=False))
    write_text_atomic(submission_path, submission.to_csv(index=False))
    return predictions_path, submission_path


def predict(config: Config, run_dir: str, records: str, out_dir: str | None = None) -> dict:
    """`kerastricks predict`: fold ensemble + TTA over `records`; writes the two CSV files."""
    from kerastricks.data import resolve_records

    source = resolve_records(records, keys=config.data.keys, num_classes=config.data.num_classes)
    result = ensemble_predict(run_dir, source, config.predict.weights)
    task = _task_of(fold_run_dirs(run_dir)[0])
    train_source = resolve_records(
        result["config"].data.records,
        keys=result["config"].data.keys,
        num_classes=result["config"].data.num_classes,
    )
    paths = write_prediction_files(
        out_dir or run_dir,
        result["ids"],
        result["tta"],
        list(train_source.class_names),
        config,
        task,
    )
    return {
        "predictions": paths[0],
        "submission": paths[1],
        "models": result["models"],
        "rows": len(result["ids"]),
    }
