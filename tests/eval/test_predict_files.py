"""`predict` from the run folder alone: the command's TTA, unlabelled test records, rows in
the test CSV's (or the sample submission's) order, and records of other classes refused."""

import shutil

import numpy as np
import pandas as pd
import pytest

import kerastricks  # noqa: F401
from kerastricks.config import from_dict, to_dict
from kerastricks.eval import predict


def write_test_records(root, indices, labeled=False):
    """Digits written from a CSV whose rows are in `indices` order: without labels, with the
    digits' labels (`labeled=True`) or labelled cat/dog (`labeled="animal"`)."""
    from kerastricks.datasets import export_digits
    from tfrecords_tools import write_records

    csv_path = export_digits(str(root / "source"), np.sort(indices))
    table = pd.read_csv(csv_path).set_index("id").loc[[f"digit_{i:04d}" for i in indices]]
    table = table.reset_index()[["path", "id", "label"]]
    if labeled == "animal":
        table["label"] = ["cat", "dog"] * (len(table) // 2) + ["cat"] * (len(table) % 2)
    if not labeled:
        table = table.drop(columns="label")
    table.to_csv(csv_path, index=False)
    out = str(root / "records")
    write_records(
        out, csv=csv_path, id_col="id", label_cols=["label"] if labeled else None, progress=False
    )
    return out, table["id"].tolist()


@pytest.mark.slow
def test_predict_needs_only_the_run_folder_and_follows_the_command(
    make_config, tmp_path, monkeypatch
):
    from kerastricks.train import train

    shared = make_config().data.records
    records_copy = str(tmp_path / "train_records")
    shutil.copytree(shared, records_copy)
    config = make_config(tta={"transforms": ["identity"]}, data={"records": records_copy})
    run_dir = train(config).run_dir
    # A Kaggle inference notebook: the run folder and the test images, no training records.
    shutil.rmtree(records_copy)
    indices = np.array([1500, 1203, 1790, 1001, 1444, 1100, 1650, 1300, 1777, 1010, 1234])
    records, csv_order = write_test_records(tmp_path / "test", indices)

    plain = predict(config, run_dir, records, out_dir=str(tmp_path / "a"))
    with_tta = from_dict({**to_dict(config), "tta": {"transforms": ["identity", "hflip"]}})
    flipped = predict(with_tta, run_dir, records, out_dir=str(tmp_path / "b"))
    a = pd.read_csv(plain["predictions"])
    b = pd.read_csv(flipped["predictions"])
    assert a["id"].tolist() == csv_order, "rows follow the test CSV, not the shuffled records"
    assert "the CSV" in plain["order"]
    assert not np.allclose(a.filter(like="p_"), b.filter(like="p_")), "the command's TTA"
    assert a.columns.tolist() == ["id"] + [f"p_{i}" for i in range(10)], "class names kept"
    submission = pd.read_csv(plain["submission"])
    assert submission["id"].tolist() == csv_order
    assert set(submission["label"]) <= set(range(10))

    # A sample submission decides the order; ids it lacks or adds are refused.
    sample = tmp_path / "sample_submission.csv"
    pd.DataFrame({"image": csv_order[::-1], "label": 0}).to_csv(sample, index=False)
    ordered = from_dict(
        {**to_dict(config), "predict": {"id_column": "image", "sample_submission": str(sample)}}
    )
    result = predict(ordered, run_dir, records, out_dir=str(tmp_path / "c"))
    submission = pd.read_csv(result["submission"])
    assert submission.columns.tolist() == ["image", "label"]
    assert submission["image"].tolist() == csv_order[::-1]
    pd.DataFrame({"image": csv_order[1:], "label": 0}).to_csv(sample, index=False)
    with pytest.raises(ValueError, match=r"1 predicted but not listed"):
        predict(ordered, run_dir, records, out_dir=str(tmp_path / "d"))
    # A wrong id column is named before any model runs.
    import sys

    predict_module = sys.modules["kerastricks.eval.inference"]  # the package exports `predict`

    def no_models(*args, **kwargs):
        raise AssertionError("the models ran before the sample submission was checked")

    monkeypatch.setattr(predict_module, "ensemble_predict", no_models)
    wrong = from_dict(
        {**to_dict(ordered), "predict": {**to_dict(ordered)["predict"], "id_column": "x"}}
    )
    with pytest.raises(ValueError, match=r"has no column 'x'"):
        predict(wrong, run_dir, records, out_dir=str(tmp_path / "d"))
    monkeypatch.undo()

    # Labelled test records of classes the model does not know: named, before predicting.
    other, _ = write_test_records(tmp_path / "other", indices[:4], labeled="animal")
    with pytest.raises(ValueError, match=r"classes \['cat', 'dog'\].*trained on \['0', '1'"):
        predict(config, run_dir, other, out_dir=str(tmp_path / "e"))
