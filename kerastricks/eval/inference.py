"""Predictions from trained run folders: one fold model or the average of all, with TTA."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from kerastricks._fs import read_json, write_text_atomic
from kerastricks.config import Config, ConfigError, TTAConfig, load_config
from kerastricks.eval.distributed import global_batch_size, prediction_strategy
from kerastricks.eval.tta import predict_tta
from kerastricks.train.strategy import Hardware, resolve_jit_compile

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
    rounds = sorted(n.rstrip("/") for n in tf.io.gfile.listdir(run_dir) if n.startswith("round"))
    if rounds:
        raise FileNotFoundError(
            f"{run_dir} is a pseudo-label run: predict with one of its rounds, e.g. --run "
            f"{os.path.join(run_dir, rounds[-1])}"
        )
    raise FileNotFoundError(
        f"{run_dir} holds no finished training run (no summary.json, no fold*/summary.json). "
        "Train it first with `kerastricks train` or `kerastricks cv`."
    )


def load_trained_model(
    model_dir: str, weights: str = "best", *, hardware: Hardware | None = None
) -> tuple[tf.keras.Model, Config]:
    """Rebuilds a run's classifier from its run folder alone (config, summary, weights), under
    the strategy that will predict with it (`hardware`; None: the current strategy)."""
    from kerastricks.train.build import build_model

    if weights not in WEIGHT_FILES:
        raise ValueError(f"predict.weights: expected one of {list(WEIGHT_FILES)}, got {weights!r}")
    config = load_config(os.path.join(model_dir, "config.yaml"))
    path = os.path.join(model_dir, "checkpoints", WEIGHT_FILES[weights])
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path} is missing: the run in {model_dir} did not finish")
    labels = run_labels(model_dir)
    # The checkpoint replaces every weight: no pretrained download or weight file is needed.
    build_config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, weights=None)
    )
    # Variables created in the scope live on every replica (TPU cores), so the forward pass
    # runs there instead of on the host CPU.
    with prediction_strategy(hardware).scope():
        model = build_model(build_config, labels["num_classes"], final_image_size(config))
        model.load_weights(path)
    return model, config


def run_labels(model_dir: str) -> dict[str, Any]:
    """The task, class count and class names a run was trained with, from its run folder
    (`summary.json`); runs written before these were saved read their training records."""
    from kerastricks.data import resolve_records

    summary = read_json(os.path.join(model_dir, "summary.json"))
    if "num_classes" in summary:
        return {k: summary[k] for k in ("task", "num_classes", "class_names")}
    config = load_config(os.path.join(model_dir, "config.yaml"))
    source = resolve_records(
        config.data.records, keys=config.data.keys, num_classes=config.data.num_classes
    )
    return {
        "task": summary["task"],
        "num_classes": source.num_classes,
        "class_names": list(source.class_names),
    }


def final_image_size(config: Config) -> int:
    """The image size of a run's last stage: what its model was trained at last."""
    return config.train.stages[-1].image_size


def final_batch_size(config: Config) -> int:
    """The per-replica batch of a run's last stage (its image size fits memory at it)."""
    return config.train.stages[-1].batch_size or config.train.batch_size


def predict_records(
    model: tf.keras.Model,
    config: Config,
    records: Any,
    task: str,
    *,
    folds: list[int] | None = None,
    batch_size: int | None = None,
    hardware: Hardware | None = None,
    verbose: int | None = None,
    tta: TTAConfig | None = None,
) -> dict[str, np.ndarray]:
    """Plain and TTA probabilities, targets and ids of `records` (all, or some folds).

    Args:
        model: the classifier, built under `hardware`'s strategy (`load_trained_model`).
        config: the run's config (image size, keys, TTA, batch).
        records: a record folder, files or a resolved `RecordSource`.
        task: `single_label`, `multi_label` or `regression`.
        folds: only these folds (None: every record).
        batch_size: per-replica batch (None: the last stage's); one step predicts it times
            the replicas in sync.
        hardware: the strategy to predict under (None: the one `model` was built under).
        verbose: 0 silent, 1 a progress bar over batches (None: `config.train.verbose`).
        tta: the TTA to predict with (None: `config.tta`); prediction settings come from the
            command, the model and its preprocessing from the run.
    """
    from kerastricks.data import build_dataset, resolve_records

    # A model knows the strategy it was built under: without `hardware`, predict under it.
    strategy = model.distribute_strategy if hardware is None else prediction_strategy(hardware)
    global_batch = global_batch_size(batch_size or final_batch_size(config), strategy)
    num_classes = model.output_shape[-1]
    source = resolve_records(records, keys=config.data.keys, num_classes=num_classes)
    if source.labeled and source.num_classes > num_classes:
        raise ConfigError(
            f"{source.path}: these records have {source.num_classes} classes, the model was "
            f"trained for {num_classes}. Predict records of the same classes (or records "
            "written without labels)."
        )
    tta = tta or config.tta
    dataset = build_dataset(
        source,
        image_size=final_image_size(config),
        batch_size=global_batch,
        training=False,
        folds=folds,
        keys=config.data.keys,
        num_classes=model.output_shape[-1],
        with_ids=True,
    )
    count = source.count(folds, read=False)  # no extra pass over the files
    kind = hardware.kind if hardware is not None else "cpu"
    return predict_tta(
        model,
        dataset,
        tta.transforms,
        task,
        tta.beta,
        strategy=strategy,
        batch_size=global_batch,
        steps=None if count is None else -(-count // global_batch),
        verbose=config.train.verbose if verbose is None else verbose,
        jit_compile=resolve_jit_compile(config.train.jit_compile, kind),
    )


def ensemble_predict(
    run_dir: str,
    records: Any,
    weights: str = "best",
    batch_size: int | None = None,
    *,
    hardware: Hardware | None = None,
    verbose: int | None = None,
    tta: TTAConfig | None = None,
) -> dict[str, Any]:
    """Averages the probabilities of every fold model of a run over `records` (a resolved
    record source), with `tta` (None: each model's own); each model is built and run under
    `hardware`'s strategy (None: the current one). `batch_size` is per replica, as in
    `predict_records`. A fold folder predicts with its own model only."""
    plain, blended = [], []
    result: dict[str, Any] = {}
    for model_dir in fold_run_dirs(run_dir):
        model, config = load_trained_model(model_dir, weights, hardware=hardware)
        result = predict_records(
            model,
            config,
            records,
            _task_of(model_dir),
            batch_size=batch_size,
            hardware=hardware,
            verbose=verbose,
            tta=tta,
        )
        plain.append(result["plain"])
        blended.append(result["tta"])
        result["config"] = config
        tf.keras.backend.clear_session()
    result["plain"] = np.mean(plain, axis=0)
    result["tta"] = np.mean(blended, axis=0)
    result["models"] = len(plain)
    return result


def _task_of(model_dir: str) -> str:
    return read_json(os.path.join(model_dir, "summary.json"))["task"]


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
        raise ConfigError(
            f"predict.target: expected class_name, index or probabilities, got {target!r}"
        )
    predictions_path = os.path.join(out_dir, "predictions.csv")
    submission_path = os.path.join(out_dir, "submission.csv")
    write_text_atomic(predictions_path, predictions.to_csv(index=False))
    write_text_atomic(submission_path, submission.to_csv(index=False))
    return predictions_path, submission_path


def predict(
    config: Config,
    run_dir: str,
    records: str,
    out_dir: str | None = None,
    *,
    hardware: Hardware | None = None,
) -> dict:
    """`kerastricks predict`: fold ensemble + TTA over `records`; writes the two CSV files.

    The models, their classes and preprocessing come from the run folder alone; TTA,
    weights, keys and the submission's format from `config`. Rows follow
    `predict.sample_submission`, else the CSV the records were written from. Every model
    predicts under `hardware`'s strategy (None: the current one), with a progress bar unless
    `config.train.verbose` is 0.
    """
    from kerastricks.data import resolve_records

    labels = run_labels(fold_run_dirs(run_dir)[0])
    source = resolve_records(records, keys=config.data.keys, num_classes=labels["num_classes"])
    unknown = sorted(set(source.class_names) - set(labels["class_names"]))
    if source.labeled and labels["class_names"] and unknown:
        raise ConfigError(
            f"{records}: these records are labelled with classes {unknown} that the run in "
            f"{run_dir} never trained on (trained on {labels['class_names']}). Predict records "
            "of the run's classes, or records written without labels."
        )
    # The order's file and column are read before the models run: a typo fails in a second.
    wanted, how = wanted_order(source, config.predict.sample_submission, config.predict.id_column)
    result = ensemble_predict(
        run_dir,
        source,
        config.predict.weights,
        hardware=hardware,
        verbose=config.train.verbose,
        tta=config.tta,
    )
    order = submission_order(result["ids"], wanted, how)
    paths = write_prediction_files(
        out_dir or run_dir,
        result["ids"][order],
        result["tta"][order],
        labels["class_names"],
        config,
        labels["task"],
    )
    return {
        "predictions": paths[0],
        "submission": paths[1],
        "models": result["models"],
        "rows": len(result["ids"]),
        "order": how,
    }


def wanted_order(
    source: Any, sample_submission: str | None = None, id_column: str = "id"
) -> tuple[list[str] | None, str]:
    """The ids in the order the prediction files should follow, and what that order is: the
    `sample_submission` CSV's `id_column`, else the `folds.csv` of the records (the order of
    the CSV they were written from), else None (the records' own order)."""
    if sample_submission is not None:
        wanted = _id_column(sample_submission, id_column, "predict.sample_submission")
        return wanted, f"the order of {sample_submission}"
    folds_csv = os.path.join(os.path.dirname(source.files[0]), "folds.csv")
    if source.manifest is None or not tf.io.gfile.exists(folds_csv):
        return None, "the order of the records"
    wanted = _id_column(folds_csv, "id", "folds.csv")
    return wanted, f"the order of the CSV {source.path} was written from"


def submission_order(ids: np.ndarray, wanted: list[str] | None, how: str) -> np.ndarray:
    """Indices into `ids` that put them in the `wanted` order (None: as they are); raises
    naming `how` when the two sets of ids differ."""
    if wanted is None:
        return np.arange(len(ids))
    position = {str(sample_id): i for i, sample_id in enumerate(ids)}
    missing = [i for i in wanted if i not in position]
    extra = sorted(set(position) - set(wanted))
    if missing or extra or len(wanted) != len(position):
        raise ConfigError(
            f"{how.removeprefix('the order of ')}: its ids and the predicted records' differ "
            f"({len(missing)} not predicted, e.g. {missing[:3]}; {len(extra)} predicted but "
            f"not listed, e.g. {extra[:3]}; {len(wanted)} rows for {len(position)} records)."
        )
    return np.array([position[i] for i in wanted], dtype=np.int64)


def _id_column(path: str, column: str, what: str) -> list[str]:
    """A CSV's id column as strings, in file order; errors name the file and the column."""
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{what}: {path} not found")
    with tf.io.gfile.GFile(path) as f:
        frame = pd.read_csv(f, dtype=str, keep_default_na=False)
    if column not in frame.columns:
        raise ConfigError(
            f"{what}: {path} has no column {column!r} (columns: {list(frame.columns)}); set "
            "predict.id_column to its id column"
        )
    if frame.empty:
        raise ConfigError(f"{what}: {path} has no rows")
    return frame[column].tolist()
