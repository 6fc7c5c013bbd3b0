"""K-fold CV, OOF completeness and score, prediction files, resume, and pseudo-label rounds."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import kerastricks  # noqa: F401
from kerastricks.eval import cross_validate, predict, score_oof
from kerastricks.pseudo import pseudo_label_rounds
from kerastricks.train.preflight import preflight
from kerastricks.train.runner import stage_datasets
from kerastricks.train.stages import plan_stages
from kerastricks.train.strategy import detect_hardware

FAST_TRAIN = {
    "batch_size": 16,
    "steps_per_epoch": 3,
    "validation_steps": None,
    "verbose": 0,
    "stages": [{"epochs": 1, "image_size": 16, "lr": 2e-3}],
}


@pytest.fixture(scope="module")
def semi_records(tmp_path_factory):
    """Labelled digits with 2 folds, unlabelled digits (true labels stored), disjoint ids."""
    from sklearn.datasets import load_digits

    from kerastricks.datasets import export_digits
    from tfrecords_tools import write_records

    root = tmp_path_factory.mktemp("semi")
    targets = load_digits().target
    labeled = np.concatenate([np.flatnonzero(targets == c)[:12] for c in range(10)])
    unlabeled = np.concatenate([np.flatnonzero(targets == c)[12:18] for c in range(10)])
    paths = {}
    for name, indices, folds in (("labeled", labeled, 2), ("unlabeled", unlabeled, None)):
        csv_path = export_digits(str(root / "source" / name), np.sort(indices))
        out = str(root / name)
        write_records(out, csv=csv_path, id_col="id", folds=folds, seed=0, progress=False)
        paths[name] = out
    return paths


def record_ids(folder, fold=None):
    frame = pd.read_csv(os.path.join(folder, "folds.csv"))
    if fold is not None:
        frame = frame[frame["fold"] == fold]
    return frame["id"].astype(str).tolist()


def make_cv_config(tmp_path, semi_records, **extra):
    from kerastricks.config import from_dict

    raw = {
        "name": "cv",
        "seed": 3,
        "output": str(tmp_path / "runs"),
        "data": {"records": semi_records["labeled"], "unlabeled": semi_records["unlabeled"]},
        "model": {"backbone": "resnet18", "head": {"dropout": 0.0}},
        "train": FAST_TRAIN,
        "tta": {"transforms": ["identity", "hflip"], "beta": 0.25},
    }
    raw.update(extra)
    return from_dict(raw)


@pytest.mark.slow
def test_cv_writes_complete_oof_and_a_score_that_recomputes(tmp_path, semi_records):
    config = make_cv_config(tmp_path, semi_records)
    summary = cross_validate(config)
    run_dir = summary["run_dir"]
    assert run_dir == os.path.join(config.output, f"{config.name}-cv"), "not the train folder"
    oof = pd.read_csv(os.path.join(run_dir, "oof.csv"))
    assert sorted(oof["id"].astype(str)) == sorted(record_ids(semi_records["labeled"]))
    assert oof["id"].is_unique
    for fold in (0, 1):
        ids = oof.loc[oof["fold"] == fold, "id"].astype(str)
        assert sorted(ids) == sorted(record_ids(semi_records["labeled"], fold))
    assert {"id", "fold", "target"} <= set(oof.columns)
    assert len([c for c in oof.columns if c.startswith("p_")]) == 10
    saved = json.load(open(os.path.join(run_dir, "summary.json")))
    recomputed = float(
        (oof[[f"p_{i}" for i in range(10)]].to_numpy().argmax(1) == oof["target"]).mean()
    )
    assert saved["cv_score"] == pytest.approx(recomputed, abs=1e-12)
    assert saved["cv_score"] == pytest.approx(score_oof(oof, "single_label"))
    assert saved["cv_score_plain"] == pytest.approx(score_oof(oof, "single_label", plain=True))
    assert summary["per_fold"].keys() == {"0", "1"}
    assert summary["per_fold"]["0"]["run_dir"] == os.path.join(run_dir, "fold0")

    # A crash inside fold 1: fold 0 is kept as it is, fold 1 resumes from its checkpoint.
    fold0_weights = os.path.join(
        summary["per_fold"]["0"]["run_dir"], "checkpoints", "best.weights.h5"
    )
    stamp = os.path.getmtime(fold0_weights)
    for name in ("fold1/summary.json", "fold1/oof.csv", "summary.json", "oof.csv"):
        os.remove(os.path.join(run_dir, name))
    again = cross_validate(config, resume=run_dir)
    assert os.path.getmtime(fold0_weights) == stamp
    assert again["cv_score"] == pytest.approx(saved["cv_score"])
    assert os.path.exists(os.path.join(run_dir, "oof.csv"))

    # Prediction: fold ensemble + TTA, one row per record, in the order of the written CSV.
    result = predict(config, run_dir, semi_records["unlabeled"], out_dir=str(tmp_path / "pred"))
    assert result["models"] == 2
    predictions = pd.read_csv(result["predictions"])
    submission = pd.read_csv(result["submission"])
    assert predictions["id"].astype(str).tolist() == record_ids(semi_records["unlabeled"])
    assert sorted(record_ids(semi_records["unlabeled"])) == sorted(
        read_ids_in_file_order(semi_records["unlabeled"])
    )
    assert predictions.shape == (60, 11)
    np.testing.assert_allclose(predictions.filter(like="p_").sum(axis=1), 1.0, rtol=1e-5)
    assert submission.columns.tolist() == ["id", "label"]
    assert set(submission["label"].astype(str)) <= {str(i) for i in range(10)}


def read_ids_in_file_order(folder):
    files = sorted(tf.io.gfile.glob(os.path.join(folder, "*.tfrec")))
    spec = {"id": tf.io.FixedLenFeature([], tf.string)}
    return [
        tf.io.parse_single_example(r, spec)["id"].numpy().decode()
        for r in tf.data.TFRecordDataset(files)
    ]


@pytest.mark.slow
def test_pseudo_labels_join_training_only_and_cv_stays_on_real_samples(tmp_path, semi_records):
    config = make_cv_config(
        tmp_path,
        semi_records,
        name="pseudo",
        pseudo={"rounds": 1, "top_k": 3, "weight": 0.5},
    )
    report = pseudo_label_rounds(config)
    run_dir = report["run_dir"]
    rounds = pd.read_csv(os.path.join(run_dir, "rounds.csv"))
    assert rounds["round"].tolist() == [0, 1]
    assert rounds["pseudo_added"].tolist()[0] == 0 and rounds["pseudo_added"].tolist()[1] > 0
    assert 0.0 <= rounds["pseudo_accuracy"].tolist()[1] <= 1.0
    oof0 = pd.read_csv(os.path.join(run_dir, "round0", "oof.csv"))
    oof1 = pd.read_csv(os.path.join(run_dir, "round1", "oof.csv"))
    assert sorted(oof0["id"]) == sorted(oof1["id"]) == sorted(record_ids(semi_records["labeled"]))
    pseudo = pd.concat(
        [pd.read_csv(os.path.join(run_dir, "pseudo1", f"fold{k}", "pseudo.csv")) for k in (0, 1)]
    )
    assert set(pseudo["id"]) <= set(read_ids_in_file_order(semi_records["unlabeled"]))
    assert not set(pseudo["id"]) & set(oof1["id"])

    # The round-1 datasets: pseudo-labels in training (with their weight), never in validation.
    from kerastricks.config import load_config

    fold_config = load_config(os.path.join(run_dir, "round1", "fold0", "config.yaml"))
    assert fold_config.data.extra_records == os.path.join(run_dir, "pseudo1", "fold0")
    inputs = preflight(fold_config)
    plan = plan_stages(inputs.stages, inputs.num_train, 16, 1)[0]
    train_ds, val_ds = stage_datasets(fold_config, inputs, plan, detect_hardware("default"))
    assert len(train_ds.element_spec) == 3, "training yields sample weights"
    weights = np.concatenate([w.numpy() for _, _, w in train_ds.take(20)])
    assert set(np.round(weights, 3)) <= {0.5, 1.0} and 0.5 in set(np.round(weights, 3))
    val_count = sum(int(x.shape[0]) for x, _ in val_ds)
    assert val_count == len(record_ids(semi_records["labeled"], 0))
