"""Pseudo-labels: selection (threshold, top-k per class, hard and soft targets) and rounds
that keep validation labels out of the training folds."""

import os

import numpy as np
import pytest

import kerastricks  # noqa: F401
from kerastricks.pseudo import pseudo_targets, select_confident

PROBS = np.array(
    [
        [0.97, 0.02, 0.01],
        [0.40, 0.50, 0.10],
        [0.05, 0.94, 0.01],
        [0.91, 0.05, 0.04],
        [0.10, 0.10, 0.80],
        [0.01, 0.99, 0.00],
    ]
)


def test_threshold_keeps_confident_rows():
    assert select_confident(PROBS, threshold=0.9).tolist() == [0, 2, 3, 5]
    assert select_confident(PROBS, threshold=0.95).tolist() == [0, 5]
    # A probability equal to the threshold is kept (>=), as 1.0 is at threshold 1.0.
    assert select_confident(PROBS, threshold=0.94).tolist() == [0, 2, 5]
    assert select_confident(np.eye(3), threshold=1.0).tolist() == [0, 1, 2]


def test_top_k_per_class_keeps_classes_balanced():
    chosen = select_confident(PROBS, top_k=1)
    assert chosen.tolist() == [0, 4, 5]
    assert sorted(PROBS[chosen].argmax(axis=1).tolist()) == [0, 1, 2]
    assert select_confident(PROBS, top_k=2).tolist() == [0, 2, 3, 4, 5]


def test_exactly_one_rule_must_be_given():
    with pytest.raises(ValueError, match="exactly one"):
        select_confident(PROBS)
    with pytest.raises(ValueError, match="pseudo.threshold"):
        select_confident(PROBS, threshold=1.5)


def test_selection_rule_is_one_of_threshold_and_top_k():
    from kerastricks.config import from_dict
    from kerastricks.pseudo_sets import selection_rule

    assert selection_rule(from_dict({})) == (0.95, None)
    assert selection_rule(from_dict({"pseudo": {"threshold": 0.8}})) == (0.8, None)
    assert selection_rule(from_dict({"pseudo": {"top_k": 3}})) == (None, 3)


def test_a_bad_name_stops_pseudo_labelling_before_its_folder_exists(make_config, tmp_path):
    from kerastricks.config import ConfigError
    from kerastricks.pseudo import pseudo_label_rounds

    config = make_config(
        model={"backbone": "resnet1888"},
        data={"unlabeled": make_config().data.records},
        pseudo={"rounds": 1},
    )
    with pytest.raises(ConfigError, match="model.backbone"):
        pseudo_label_rounds(config)
    assert not os.path.exists(os.path.join(config.output, f"{config.name}-pseudo"))


def test_hard_and_soft_targets():
    hard = pseudo_targets(PROBS[:2], soft=False)
    np.testing.assert_array_equal(hard, [[1, 0, 0], [0, 1, 0]])
    soft = pseudo_targets(PROBS[:2], soft=True)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(soft[1], PROBS[1], rtol=1e-6)


# ---- Leak-free rounds: behaviour and provenance ------------------------------------------

LEAK_IMAGES = 32
LEAK_CLASSES = 8
CHANCE = 1.0 / LEAK_CLASSES


@pytest.fixture(scope="module")
def copied_noise_records(tmp_path_factory):
    """Random-noise images with random labels (nothing to learn) in 2 folds, and an
    unlabelled set of exact copies of the same images under other ids."""
    import pandas as pd
    from PIL import Image

    from tfrecords_tools import write_records

    root = tmp_path_factory.mktemp("leak")
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    rows = []
    for i in range(LEAK_IMAGES):
        path = root / "images" / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
        rows.append({"path": str(path), "label": int(rng.integers(LEAK_CLASSES)), "id": f"l{i}"})
    labeled = pd.DataFrame(rows)
    labeled.to_csv(root / "labeled.csv", index=False)
    copies = labeled.drop(columns="label").assign(id=[f"u{i}" for i in range(LEAK_IMAGES)])
    copies.to_csv(root / "copies.csv", index=False)
    paths = {"labeled": str(root / "labeled"), "unlabeled": str(root / "unlabeled")}
    write_records(
        paths["labeled"], csv=str(root / "labeled.csv"), id_col="id", folds=2, progress=False
    )
    write_records(
        paths["unlabeled"],
        csv=str(root / "copies.csv"),
        label_cols=None,
        id_col="id",
        progress=False,
    )
    return paths


def memorising_config(tmp_path, records, mode):
    """A config whose models memorise their training images (no augmentation, no
    smoothing, no decay, 90 steps) and pseudo-label every unlabelled image."""
    from kerastricks.config import from_dict

    return from_dict(
        {
            "name": "leak",
            "seed": 1,
            "output": str(tmp_path / "runs"),
            "data": {
                "records": records["labeled"],
                "unlabeled": records["unlabeled"],
                "deterministic": True,
            },
            "model": {"backbone": "resnet18", "head": {"dropout": 0.0}},
            "train": {
                "batch_size": 8,
                "steps_per_epoch": 30,
                "verbose": 0,
                "label_smoothing": 0.0,
                "optimizer": {"name": "adamw", "weight_decay": 0.0},
                "stages": [{"epochs": 3, "image_size": 16, "lr": 3e-3}],
            },
            "pseudo": {"rounds": 1, "threshold": 0.01, "mode": mode},
        }
    )


def fold_ids(records, fold):
    import pandas as pd

    frame = pd.read_csv(os.path.join(records["labeled"], "folds.csv"))
    return set(frame.loc[frame["fold"] == fold, "id"].astype(str))


@pytest.mark.slow
def test_per_fold_pseudo_labels_do_not_leak_validation_labels(tmp_path, copied_noise_records):
    """Random labels cannot be learnt, only memorised. The unlabelled images are copies of
    the labelled ones, so a pseudo-label from a model that memorised fold k's labels hands
    them to the fold-k model: its CV score rises far above chance. Per-fold pseudo-labels
    come from the one model that never saw fold k, and the score stays at chance."""
    import shutil

    import pandas as pd

    from kerastricks.pseudo import pseudo_label_rounds
    from kerastricks.pseudo_sets import pseudo_provenance

    records = copied_noise_records
    config = memorising_config(tmp_path, records, "per_fold")
    report = pseudo_label_rounds(config)
    run_dir = report["run_dir"]
    assert run_dir.endswith("leak-pseudo")
    honest = {row["round"]: row["cv_score"] for row in report["rounds"]}
    assert honest[0] < 0.35 and honest[1] < 0.35, f"chance is {CHANCE}: {honest}"

    # Provenance: no model behind fold k's pseudo set trained on a fold-k id.
    for fold in (0, 1):
        provenance = pseudo_provenance(os.path.join(run_dir, "pseudo1", f"fold{fold}"))
        assert provenance["round"] == 1 and provenance["for_folds"] == [fold]
        assert [m["val_fold"] for m in provenance["models"]] == [fold]
        trained_on = set().union(*(m["trained_on_ids"] for m in provenance["models"]))
        assert trained_on == fold_ids(records, 1 - fold)
        assert not trained_on & fold_ids(records, fold)
        fold_config = os.path.join(run_dir, "round1", f"fold{fold}", "config.yaml")
        assert f"pseudo1/fold{fold}" in open(fold_config).read()
    # The unlabelled records carry no labels: no pseudo accuracy is made up.
    rounds = pd.read_csv(os.path.join(run_dir, "rounds.csv"))
    assert rounds["pseudo_added"].tolist() == [0, LEAK_IMAGES]
    assert rounds["pseudo_accuracy"].isna().all()

    # The same round-0 models, pooled: fold k now learns its own labels through the copies.
    pooled_dir = str(tmp_path / "runs" / "pooled-pseudo")
    shutil.copytree(run_dir, pooled_dir, ignore=shutil.ignore_patterns("pseudo1", "round1"))
    pooled = memorising_config(tmp_path, records, "pooled")
    leaky = pseudo_label_rounds(pooled, resume=pooled_dir)["rounds"]
    assert leaky[0]["cv_score"] == honest[0], "round 0 is the same run"
    assert leaky[1]["cv_score"] > 0.45, f"the pooled leak should show (chance {CHANCE})"
    provenance = pseudo_provenance(os.path.join(pooled_dir, "pseudo1", "pooled"))
    assert provenance["for_folds"] == [0, 1] and len(provenance["models"]) == 2
    trained_on = set().union(*(m["trained_on_ids"] for m in provenance["models"]))
    assert fold_ids(records, 0) <= trained_on, "the pooled set's models saw fold 0's labels"


def test_pseudo_records_follow_the_record_contract(tmp_path):
    # The shard name and the manifest come from tfrecords_tools.schema; the reader reads them.
    import types

    import tensorflow as tf

    from kerastricks.data import resolve_records
    from kerastricks.pseudo_sets import write_pseudo_records
    from tfrecords_tools.schema import check_manifest, make_example, shard_name

    source_file = str(tmp_path / "unlabeled.tfrec")
    with tf.io.TFRecordWriter(source_file) as writer:
        for index in range(3):
            writer.write(make_example(b"png", [], f"u{index}", -1, None))
    source = types.SimpleNamespace(keys={"image": "image", "id": "id"}, files=[source_file])
    targets = np.array([[0.9, 0.1], [0.2, 0.8]], "float32")
    out = str(tmp_path / "pseudo1")
    manifest = write_pseudo_records(
        source, np.array(["u0", "u2"]), targets, 0.5, out, "single_label"
    )
    check_manifest(manifest, out)
    assert manifest["shards"][0]["file"] == shard_name("pseudo", -1, 0)
    assert manifest["counts"]["per_fold"] == {"-1": 2}
    records = resolve_records(out)
    assert (records.task, records.num_classes, records.labeled) == ("single_label", 2, True)
    assert set(manifest["features"]) >= {"soft_label", "weight", "label"}
