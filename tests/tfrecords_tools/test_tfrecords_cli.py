"""`tfrecords-tools` exit codes and output: 0 done, 1 corrupt records found, 2 user error."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import tensorflow as tf

from tfrecords_tools.cli import main


def test_write_inspect_verify(make_digits, tmp_path, capsys):
    out = str(tmp_path / "out")
    csv = make_digits(20)
    argv = ["write", "--csv", csv, "--out", out, "--folds", "2", "--id-col", "id", "--quiet"]
    assert main(argv) == 0
    with open(f"{out}/manifest.json") as f:
        manifest = json.load(f)
    assert manifest["num_records"] == 20 and manifest["options"]["id_col"] == "id"
    assert main(["inspect", out]) == 0
    assert "20 records in 2 files" in capsys.readouterr().out
    assert main(["verify", out, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_records"] == 20


def test_user_errors_exit_2_with_the_message(make_digits, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(["write", "--csv", str(tmp_path / "none.csv"), "--out", out]) == 2
    assert "error: CSV file not found" in capsys.readouterr().err
    csv = make_digits(8)
    assert main(["write", "--csv", csv, "--out", out, "--label-col", "kind"]) == 2
    assert "column 'kind' (--label-col) not found" in capsys.readouterr().err
    assert main(["write", "--csv", csv, "--out", out, "--quiet"]) == 0
    assert main(["write", "--csv", csv, "--out", out, "--quiet"]) == 2
    assert "already holds a dataset" in capsys.readouterr().err
    assert main(["write", "--csv", csv, "--out", out, "--quiet", "--overwrite"]) == 0


def test_multi_label_columns_from_the_cli(make_digits, tmp_path):
    csv = make_digits(8, a=[0, 1] * 4, b=[1, 1, 0, 0] * 2)
    out = str(tmp_path / "out")
    assert main(["write", "--csv", csv, "--out", out, "--label-col", "a", "b", "--quiet"]) == 0
    with open(f"{out}/manifest.json") as f:
        assert json.load(f)["counts"]["per_class"] == {"a": 4, "b": 4}


def test_verify_exits_1_on_a_corrupt_shard(make_digits, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["write", "--csv", make_digits(8), "--out", str(out), "--quiet"]) == 0
    shard = next(out.glob("*.tfrec"))
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0x01
    shard.write_bytes(bytes(data))
    assert main(["verify", str(out)]) == 1
    assert f"CORRUPT: 1 problems in {out}" in capsys.readouterr().out


def test_folds_below_two_and_a_file_as_out_are_one_line_errors(make_digits, tmp_path, capsys):
    csv = make_digits(8)
    out = str(tmp_path / "out")
    for folds in ("0", "1", "-3"):
        assert main(["write", "--csv", csv, "--out", out, "--folds", folds, "--quiet"]) == 2
        error = capsys.readouterr().err
        assert (
            f"--folds) must be at least 2, or omitted for no folds; received folds={folds}" in error
        )
    assert not (tmp_path / "out").exists()
    existing = tmp_path / "notes.txt"
    existing.write_text("mine")
    assert main(["write", "--csv", csv, "--out", str(existing), "--quiet"]) == 2
    error = capsys.readouterr().err
    expected = f"--out must be a folder, but {existing} is a file; choose another --out"
    assert error == f"tfrecords-tools write: error: {expected}\n"
    assert existing.read_text() == "mine"


def test_verify_fails_on_an_interrupted_write_and_shows_progress(make_digits, tmp_path, capsys):
    out = tmp_path / "out"
    csv = make_digits(40)
    assert main(["write", "--csv", csv, "--out", str(out), "--shard-mb", "0.002", "--quiet"]) == 0
    shards = len(list(out.glob("*.tfrec")))
    assert main(["verify", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"OK: 40 records in {shards} files")
    assert f"verify: {shards}/{shards} files, 40 records" in captured.err
    (out / "manifest.json").unlink()  # what a write killed before its manifest left behind
    assert main(["verify", str(out), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert f"CORRUPT: 1 problems in {out}" in captured.out
    assert f"{out} has no manifest.json but holds files of a tfrecords-tools write" in captured.out
    assert "the write was interrupted" in captured.out and captured.err == ""


def _features(folder) -> list[list[str]]:
    records = tf.data.TFRecordDataset(sorted(str(p) for p in folder.glob("*.tfrec")))
    return [sorted(tf.train.Example.FromString(r.numpy()).features.feature) for r in records]


def test_a_csv_without_labels_writes_unlabelled_records(make_digits, tmp_path, capsys):
    csv = make_digits(10)
    pd.read_csv(csv).drop(columns=["label"]).to_csv(csv, index=False)
    out = tmp_path / "test"
    assert main(["write", "--csv", csv, "--out", str(out), "--id-col", "id"]) == 0
    assert "wrote 10 records (no labels)" in capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["labeled"] is False and manifest["task"] is None
    assert (manifest["class_names"], manifest["num_classes"]) == ([], 0)
    assert manifest["features"] == {"image": "bytes", "id": "bytes", "fold": "int64"}
    assert _features(out) == [["fold", "id", "image"]] * 10
    assert main(["verify", str(out), "--quiet"]) == 0
    argv = ["write", "--csv", csv, "--out", str(tmp_path / "other"), "--quiet"]
    assert main(argv + ["--folds", "2"]) == 2
    assert "records without labels are written without folds: omit --folds" in (
        capsys.readouterr().err
    )
    assert main(argv + ["--label-col", "label"]) == 2
    assert "omit --label-col" in capsys.readouterr().err


def test_no_labels_ignores_a_label_column(make_digits, tmp_path):
    out = tmp_path / "test"
    assert (
        main(["write", "--csv", make_digits(6), "--out", str(out), "--no-labels", "--quiet"]) == 0
    )
    assert json.loads((out / "manifest.json").read_text())["labeled"] is False
    assert _features(out) == [["fold", "id", "image"]] * 6


def test_help_and_readmes_say_resize_scales_the_longer_side(capsys):
    with pytest.raises(SystemExit):
        main(["write", "--help"])
    assert "scale the longer side to PX" in " ".join(capsys.readouterr().out.split())
    root = Path(__file__).parents[2]
    for readme in ("README.md", "notebooks/README.md"):
        text = (root / readme).read_text()
        assert "shorter side" not in text, readme
    assert "`--resize PX` scales the\n**longer** side" in (root / "README.md").read_text()
    assert "`--from-folder DIR`" in (root / "README.md").read_text()
