"""The Kaggle notebook executed on the CPU with tiny settings, and its install planner."""

import importlib.metadata
import json
import os
import re
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from PIL import Image

import kerastricks  # noqa: F401  (Keras 2 API before TensorFlow loads)
from kerastricks.install_plan import (
    REQUIREMENTS,
    TFIMM,
    install_missing,
    plan_install,
    requirement_name,
    tf_keras_requirement,
)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "kaggle_tpu.ipynb"
COMPLETE = {
    **{requirement_name(r): "1.0" for r in REQUIREMENTS},
    "tensorflow": "2.21.0",
    "tf-keras": "2.21.0",
    "tfimm": "0.2.14",
    "kerastricks": "0.1.0",
}
TINY_DIGITS_TRAIN = 160
TINY_DIGITS_TEST = 24
TINY_NUM_FOLDS = 4
# Appended to the parameters cell, as papermill's injected parameters override the defaults.
TINY_PARAMETERS = f"""
BACKBONE = "resnet18"
IMAGE_SIZES = [16, 32]
EPOCHS = [1, 1]
BATCH_SIZE = 16
STEPS_PER_EPOCH = 3
VALIDATION_STEPS = 2
NUM_FOLDS = {TINY_NUM_FOLDS}
FOLDS = [0, 1]
DIGITS_TRAIN = {TINY_DIGITS_TRAIN}
DIGITS_TEST = {TINY_DIGITS_TEST}
TTA = ["identity", "hflip"]
SMOKE = True
"""
PROBE = """
import json, sys, importlib.metadata
print("PROBE " + json.dumps({
    "executable": sys.executable,
    "plan_empty": INSTALL_PLAN.empty,
    "pip_args": INSTALL_PLAN.pip_args(),
    "tf_version": tf.__version__,
    "tf_metadata_version": importlib.metadata.version("tensorflow"),
    "cv_dir": CV_DIR,
}))
"""


# ---------------------------------------------------------------------------------------------
# The install planner (pure function)


def test_complete_environment_plans_nothing():
    plan = plan_install(COMPLETE, "2.21.0")
    assert plan.empty
    assert plan.pip_args() == []
    assert "nothing to install" in plan.describe()


@pytest.mark.parametrize("installed_tf_keras", [None, "2.19.0", "2.20.1"])
def test_tf_keras_minor_follows_tensorflow_and_tensorflow_is_never_planned(installed_tf_keras):
    installed = {k: v for k, v in COMPLETE.items() if k != "tf-keras"}
    if installed_tf_keras:
        installed["tf-keras"] = installed_tf_keras
    plan = plan_install(installed, "2.21.0")
    assert plan.requirements == ["tf-keras~=2.21.0"]
    assert plan.steps[0].flags == ("--no-deps",)
    assert not any(
        requirement_name(r).startswith(("tensorflow", "tf-nightly")) for r in plan.requirements
    )


def test_tf_keras_of_same_minor_but_other_patch_is_kept():
    plan = plan_install({**COMPLETE, "tf-keras": "2.21.3"}, "2.21.0")
    assert plan.empty


def test_fresh_tpu_vm_plan_order_and_flags():
    # A TPU VM: TensorFlow under another distribution name, numpy/pandas/... present.
    installed = {"tensorflow-cpu": "2.18.1", "numpy": "1.26.4", "pandas": "2.2.2", "keras": "3.8.0"}
    plan = plan_install(installed, "2.18.1", kerastricks_spec="kerastricks==0.1.0")
    commands = plan.pip_args("/tmp/constraints.txt")
    assert commands[0] == ["install", "--no-deps", "tf-keras~=2.18.0"]
    assert commands[1] == ["install", "--no-deps", "--ignore-requires-python", TFIMM]
    assert commands[2] == ["install", "--no-deps", "kerastricks==0.1.0"]
    # Every other requirement, in REQUIREMENTS order (tf-keras went in step 0).
    present = {"tensorflow", "tf-keras", "keras", "numpy", "pandas"}
    missing = [requirement_name(r) for r in REQUIREMENTS if requirement_name(r) not in present]
    assert missing[:2] == ["scikit-learn", "pyyaml"] and "google-crc32c" in missing
    assert commands[3] == ["install", "--constraint", "/tmp/constraints.txt", *missing]
    assert "tensorflow-cpu==2.18.1" in plan.constraints
    assert "numpy==1.26.4" in plan.constraints
    assert all("tensorflow" not in r for r in plan.requirements)


def test_offline_plan_uses_only_the_wheels_folder():
    plan = plan_install({"tensorflow": "2.20.0"}, "2.20.0", wheels_dir="/kaggle/input/wheels")
    assert len(plan.steps) == 4
    for args in plan.pip_args("c.txt"):
        assert args[1:4] == ["--no-index", "--find-links", "/kaggle/input/wheels"]
    assert "offline from /kaggle/input/wheels (--no-index)" in plan.describe()


def test_missing_tensorflow_is_the_only_case_it_is_planned():
    plan = plan_install({"numpy": "2.0.0"}, None)
    assert plan.requirements[0] == "tensorflow>=2.16,<2.22"
    assert "tf-keras>=2.16,<2.22" in plan.requirements
    assert plan.steps[-1].pinned


def test_unreadable_tensorflow_version_keeps_tf_keras():
    plan = plan_install(COMPLETE, "unknown")
    assert plan.empty
    assert any("no major.minor" in note for note in plan.notes)
    with pytest.raises(ValueError, match="'unknown'"):
        tf_keras_requirement("unknown")


def test_requirements_mirror_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert list(REQUIREMENTS) == project["dependencies"]


def test_missing_wheels_dir_fails_before_pip(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("subprocess.run", lambda *a, **k: calls.append(a))
    with pytest.raises(FileNotFoundError, match="WHEELS_DIR"):
        install_missing(wheels_dir=str(tmp_path / "absent"))
    assert calls == []


def _fake_environment(monkeypatch, installed, tf_versions):
    """Patches what install_missing sees and records its pip calls (with the constraints)."""
    import kerastricks.install_plan as install_plan

    versions = iter(tf_versions)
    calls = []

    def fake_run(command, check):
        constraints = (
            command[command.index("--constraint") + 1] if "--constraint" in command else None
        )
        calls.append((command, Path(constraints).read_text().split() if constraints else None))

    monkeypatch.setattr(install_plan, "installed_distributions", lambda: dict(installed))
    monkeypatch.setattr(install_plan, "tensorflow_version", lambda: next(versions))
    monkeypatch.setattr(install_plan.subprocess, "run", fake_run)
    return calls


def test_install_missing_runs_the_plan_with_this_python(monkeypatch, capsys):
    installed = {k: v for k, v in COMPLETE.items() if k not in ("tfimm", "safetensors")}
    calls = _fake_environment(monkeypatch, installed, ["2.21.0", "2.21.0"])
    plan = install_missing()
    commands = [command for command, _ in calls]
    assert commands == [
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--ignore-requires-python",
            TFIMM,
            "--quiet",
        ],
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--constraint",
            commands[1][5],
            "safetensors",
            "--quiet",
        ],
    ]
    assert "tensorflow==2.21.0" in calls[1][1] and "tf-keras==2.21.0" in calls[1][1]
    assert plan.requirements == [TFIMM, "safetensors"]
    assert "installed: tfimm==0.2.14, safetensors" in capsys.readouterr().out


def test_install_missing_refuses_a_changed_tensorflow(monkeypatch):
    installed = {k: v for k, v in COMPLETE.items() if k != "tfimm"}
    _fake_environment(monkeypatch, installed, ["2.21.0", "2.22.0"])
    with pytest.raises(RuntimeError, match="TensorFlow changed from 2.21.0 to 2.22.0"):
        install_missing()


# ---------------------------------------------------------------------------------------------
# The notebook, end to end


def _tensorflow_files() -> dict:
    distribution = importlib.metadata.distribution("tensorflow")
    (record,) = [f for f in distribution.files if f.name == "RECORD"]
    path = Path(distribution.locate_file(record))
    return {"version": distribution.version, "path": str(path), "mtime": path.stat().st_mtime_ns}


def _attached_weights_file(path: Path) -> str:
    """A timm-format checkpoint of resnet18, as a Kaggle user attaches one for offline runs."""
    from safetensors.numpy import save_file

    from kerastricks.models import create_backbone, timm_state_dict

    save_file(timm_state_dict(create_backbone("resnet18", input_size=32)), str(path))
    return str(path)


def _kernel_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ipykernel.kernelspec import install

    # A kernelspec of this very interpreter, first on JUPYTER_PATH, so the kernel is this venv.
    prefix = tmp_path / "jupyter"
    install(kernel_name="python3", prefix=str(prefix))
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    # Safety net: should the plan ever be non-empty, pip fails instead of reaching the network.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)


def _outputs(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            parts.append(output["text"])
        elif output["output_type"] == "error":
            parts.append("\n".join(output["traceback"]))
    return "".join(parts)


def _cell_with(nb, text: str):
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and text in c.source]
    return cell


@pytest.mark.slow
def test_notebook_runs_end_to_end_on_cpu(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "outputs committed"
    (parameters,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    output = tmp_path / "out"
    weights = _attached_weights_file(tmp_path / "resnet18.safetensors")
    parameters.source += (
        f"\n# injected by the test\n{TINY_PARAMETERS}"
        f"OUTPUT = {str(output)!r}\nWEIGHTS = {weights!r}\n"
    )
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    _kernel_env(tmp_path, monkeypatch)
    tf_before = _tensorflow_files()

    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    errors = [o for c in nb.cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert errors == []
    probe = json.loads(re.search(r"PROBE (.*)", _outputs(nb.cells[-1])).group(1))
    assert os.path.realpath(probe["executable"]) == os.path.realpath(sys.executable)
    # The install cell saw a complete environment: no pip call, TensorFlow untouched.
    assert probe["plan_empty"] and probe["pip_args"] == []
    assert "nothing to install" in _outputs(_cell_with(nb, "install_missing("))
    assert _tensorflow_files() == tf_before
    assert probe["tf_version"] == probe["tf_metadata_version"] == tf_before["version"]

    cv_dir = Path(probe["cv_dir"])
    history = pd.read_csv(cv_dir / "fold0" / "history.csv")
    assert history["image_size"].tolist() == [16, 32]
    assert history["stage_name"].tolist() == ["head_16px", "all_32px"], "WEIGHTS: head first"
    assert "fold 0: training" in _outputs(_cell_with(nb, "overwrite=True"))
    cv_text = _outputs(_cell_with(nb, "resume=CV_DIR"))
    assert "fold 0: training" not in cv_text, "fold 0 was trained in step 6 and must be reused"
    assert "fold 1: training" in cv_text
    summary = json.loads((cv_dir / "summary.json").read_text())
    printed = re.search(r"CV score \(accuracy\): (\d\.\d{4}) with TTA", cv_text)
    assert printed and float(printed.group(1)) == pytest.approx(summary["cv_score"], abs=1e-4)
    oof = pd.read_csv(cv_dir / "oof.csv")
    assert len(oof) == 2 * TINY_DIGITS_TRAIN // TINY_NUM_FOLDS
    assert sorted(oof["fold"].unique()) == [0, 1]

    submission = pd.read_csv(output / "submission.csv")
    assert list(submission.columns) == ["id", "label"]
    assert len(submission) == TINY_DIGITS_TEST
    assert submission["id"].str.match(r"digit_\d{4}$").all()
    assert submission["label"].between(0, 9).all()
    assert f"{TINY_DIGITS_TEST} rows from 2 fold model(s)" in _outputs(_cell_with(nb, "predict("))

    for png in ("gradcam.png", "batch.png"):
        with Image.open(output / png) as image:
            assert image.format == "PNG" and min(image.size) > 100
