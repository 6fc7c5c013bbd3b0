"""The README cannot rot: its Python blocks run, its YAML reference matches the schema, and
its YAML examples validate."""

import os
import re
import shutil

import pytest
import yaml

import kerastricks  # noqa: F401
from kerastricks.config import from_dict
from kerastricks.config.reference import END, START, render_reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md")).read()


def blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_yaml_reference_matches_the_schema():
    start, end = README.index(START), README.index(END) + len(END)
    assert README[start:end] == render_reference(), (
        "README's YAML reference is stale: regenerate it with `make docs`"
    )


def test_readme_yaml_examples_are_valid_configs():
    examples = blocks("yaml")
    assert examples
    for text in examples:
        from_dict(yaml.safe_load(text))


def test_readme_shows_the_two_commands_first():
    first_code = blocks("bash")[0]
    assert first_code.splitlines()[:2] == [
        line for line in first_code.splitlines()[:2] if line.startswith(("make demo", "make test"))
    ]
    assert "make demo" in first_code and "make test" in first_code


@pytest.mark.slow
def test_readme_python_blocks_run(tmp_path, digits_records, monkeypatch):
    shutil.copytree(os.path.join(ROOT, "configs"), tmp_path / "configs")
    os.makedirs(tmp_path / "data" / "digits")
    os.symlink(digits_records, tmp_path / "data" / "digits" / "tfrecords")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    python_blocks = blocks("python")
    assert len(python_blocks) >= 3
    for index, code in enumerate(python_blocks):
        try:
            exec(compile(code, f"README.md python block {index}", "exec"), namespace)
        except Exception as error:  # the block number makes the failure findable
            raise AssertionError(f"README python block {index} failed: {error!r}") from error
    assert namespace["result"].summary["val_accuracy"] is not None
    assert os.path.exists(tmp_path / "runs_readme" / "readme" / "summary.json")
