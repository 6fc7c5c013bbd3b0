"""CSV problems are reported, with the column and line numbers, before any image is read."""

from __future__ import annotations

import hashlib
import posixpath

import pytest

import tfrecords_tools.images as images_module
from tfrecords_tools import TFRecordsError, write_records
from tfrecords_tools.sources import read_csv_source, read_folder_source


@pytest.fixture(autouse=True)
def no_image_reads(monkeypatch):
    def fail(path):
        raise AssertionError(f"an image was read before the CSV was validated: {path}")

    monkeypatch.setattr(images_module, "read_bytes", fail)


def _write(tmp_path, text: str) -> str:
    (tmp_path / "t.csv").write_text(text)
    return str(tmp_path / "t.csv")


def _fails(csv: str, match: str, **kwargs) -> None:
    out = csv + ".out"
    with pytest.raises(TFRecordsError, match=match):
        write_records(out, csv=csv, progress=False, **kwargs)


def test_missing_csv(tmp_path):
    _fails(str(tmp_path / "nope.csv"), r"CSV file not found: .*nope\.csv")


def test_empty_csv_and_header_only(tmp_path):
    _fails(_write(tmp_path, ""), "CSV file is empty")
    _fails(_write(tmp_path, "path,label\n"), "header but no rows")


def test_missing_column_is_named_with_the_columns_found(tmp_path):
    csv = _write(tmp_path, "file,label\na.png,1\n")
    _fails(csv, r"column 'path' \(--image-col\) not found .* columns found: 'file', 'label'")
    _fails(csv, r"column 'kind' \(--label-col\)", image_col="file", label_cols=["kind"])


def test_empty_labels_give_line_numbers(tmp_path):
    csv = _write(tmp_path, "path,label\na.png,1\nb.png,\nc.png,2\nd.png,\n")
    _fails(csv, r"empty label in column 'label' .* CSV lines 3, 5;")


def test_duplicate_ids_give_examples(tmp_path):
    csv = _write(tmp_path, "path,label,id\na.png,1,x\nb.png,1,y\nc.png,2,x\n")
    _fails(csv, r"duplicate ids in column 'id': 'x' at CSV lines 2, 4", id_col="id")


def test_the_same_image_twice_is_a_duplicate_id(tmp_path):
    csv = _write(tmp_path, "path,label\na/x.png,1\nb.png,1\na/x.png,2\n")
    _fails(
        csv,
        r"duplicate ids in column 'path \(ids from the file names\)': 'a/x.png' at CSV lines 2, 4",
    )


def test_separator_needs_multi_label(tmp_path):
    csv = _write(tmp_path, "path,label\na.png,x y\n")
    _fails(
        csv,
        "label_sep .* multi-label data; got task 'single_label'",
        label_sep=" ",
        task="single_label",
    )


def test_bad_multi_label_and_regression_values(tmp_path):
    csv = _write(tmp_path, "path,a,b\np.png,1,0\nq.png,2,1\n")
    _fails(
        csv,
        r"column 'a' .* must hold 0 or 1; found '2' at CSV line 3",
        label_cols=["a", "b"],
        task="multi_label",
    )
    csv = _write(tmp_path, "path,y\np.png,1.5\nq.png,high\n")
    _fails(
        csv,
        r"column 'y' .* not a number: 'high' at CSV line 3",
        label_cols=["y"],
        task="regression",
    )


def test_task_is_inferred(tmp_path):
    cases = {
        "path,label\na.png,cat\nb.png,dog\n": ("single_label", ["label"]),
        "path,label\na.png,2\nb.png,10\n": ("single_label", ["label"]),
        "path,label\na.png,0.5\nb.png,1\n": ("regression", ["label"]),
        "path,a,b\na.png,0,1\nb.png,1,1\n": ("multi_label", ["a", "b"]),
    }
    for text, (task, columns) in cases.items():
        table = read_csv_source(_write(tmp_path, text), label_cols=columns)
        assert table.task == task, text
    numeric = read_csv_source(_write(tmp_path, "path,label\na.png,2\nb.png,10\nc.png,1\n"))
    assert numeric.class_names == ["1", "2", "10"]
    assert [label[0] for label in numeric.labels] == [1, 2, 0]


def test_paths_are_relative_to_the_csv_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    text = "path,label\nimg/a.png,1\n/abs/b.png,1\n"
    (tmp_path / "sub" / "t.csv").write_text(text)
    table = read_csv_source(str(tmp_path / "sub" / "t.csv"))
    assert table.paths == [f"{tmp_path}/sub/img/a.png", "/abs/b.png"]
    assert table.ids == ["a", "b"]


def test_colliding_file_stems_become_relative_path_ids(tmp_path):
    table = read_csv_source(_write(tmp_path, "path,label\ncat/1.png,c\ndog/1.png,d\n"))
    assert table.ids == ["cat/1", "dog/1"]
    table = read_csv_source(_write(tmp_path, "path,label\na/1.png,c\na/1.jpg,d\n"))
    assert table.ids == ["a/1.png", "a/1.jpg"]


def test_default_ids_are_the_stems_that_splitext_gives(tmp_path):
    names = ["a.jpg", "x/b.c.jpg", ".hidden", "..jpg", "d..jpg", "noext", "e.", "y\\.f.jpg"]
    text = "path,label\n" + "".join(f"{name},1\n" for name in names)
    expected = [posixpath.splitext(n.replace("\\", "/").rpartition("/")[2])[0] for n in names]
    assert read_csv_source(_write(tmp_path, text)).ids == expected
    assert expected[:4] == ["a", "b.c", ".hidden", "..jpg"]


def test_csv_sha256_is_recorded(tmp_path):
    text = "path,label\na.png,1\n"
    table = read_csv_source(_write(tmp_path, text))
    assert table.source["sha256"] == hashlib.sha256(text.encode()).hexdigest()


def test_labels_differing_by_surrounding_spaces_are_one_class(tmp_path):
    csv = _write(tmp_path, "path,label\na.png, cat\nb.png,cat \nc.png,dog\nd.png,cat\n")
    table = read_csv_source(csv)
    assert table.class_names == ["cat", "dog"]
    assert table.label_texts == ["cat", "cat", "dog", "cat"]
    tags = _write(tmp_path, "path,tags\na.png,x | y\nb.png,y|x \n")
    assert read_csv_source(tags, label_cols=["tags"], label_sep="|").class_names == ["x", "y"]
    _fails(_write(tmp_path, "path,label\na.png,cat\nb.png,  \n"), r"empty label.*CSV line 3")


def test_folder_images_differing_by_extension_are_refused(tmp_path):
    for name in ("a/x.jpg", "a/x.png", "a/y.jpg", "b/z.png"):
        (tmp_path / "tree" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "tree" / name).write_bytes(b"not read")
    with pytest.raises(
        TFRecordsError,
        match=r"1 ids in .*tree name more than one image: "
        r"a/x.jpg and a/x.png; .*rename or remove one",
    ):
        read_folder_source(str(tmp_path / "tree"))
    (tmp_path / "tree" / "a" / "x.png").unlink()
    (tmp_path / "tree" / "b ").mkdir()
    (tmp_path / "tree" / "b " / "w.png").write_bytes(b"not read")
    table = read_folder_source(str(tmp_path / "tree"))
    assert table.ids == ["a/x", "a/y", "b /w", "b/z"]
    assert table.class_names == ["a", "b"]
