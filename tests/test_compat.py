"""The Keras 2 guard, checked in fresh interpreters."""

import os
import subprocess
import sys

import pytest


def run_python(code, **env):
    environment = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=300
    )


def test_import_kerastricks_first_selects_tf_keras():
    result = run_python(
        "import kerastricks, os, tensorflow as tf\n"
        "print(os.environ['TF_USE_LEGACY_KERAS'], tf.keras.__name__)"
    )
    assert result.returncode == 0, result.stderr
    flag, module = result.stdout.split()[-2:]
    assert flag == "1"
    assert module.startswith("tf_keras")


def test_tensorflow_with_keras3_first_raises_clear_error():
    result = run_python("import tensorflow as tf\ntf.keras.layers\nimport kerastricks")
    assert result.returncode != 0
    assert "KerasVersionError" in result.stderr
    assert "import kerastricks" in result.stderr
    assert "TF_USE_LEGACY_KERAS=1" in result.stderr


def test_tensorflow_first_with_the_variable_set_is_fine():
    result = run_python(
        "import tensorflow as tf\nimport kerastricks\nprint('ok')", TF_USE_LEGACY_KERAS="1"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_missing_tfimm_prints_the_install_command(tmp_path):
    # A stub package named tfimm that is not importable shadows nothing; instead hide it.
    code = (
        "import importlib.util, sys\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'tfimm' else real(n, *a)\n"
        "import kerastricks.schedules\n"  # a single trick needs TensorFlow only
        "print('schedules imported')\n"
        "import kerastricks.models\n"
        "kerastricks.models.create_backbone\n"
    )
    result = run_python(code)
    assert result.returncode != 0
    assert "schedules imported" in result.stdout
    assert "pip install --no-deps --ignore-requires-python tfimm==0.2.14" in result.stderr


@pytest.mark.parametrize("module", ["tfrecords_tools"])
def test_tfrecords_tools_does_not_import_kerastricks(module):
    result = run_python(f"import sys, {module}\nprint('kerastricks' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("False")
