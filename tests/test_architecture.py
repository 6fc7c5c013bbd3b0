"""Which modules a single-trick import pulls in, in fresh interpreters without tfimm."""

import json
import os
import subprocess
import sys

# One interpreter: `kerastricks` alone first (it must not load TensorFlow), then TensorFlow, then
# each module in a forked child, so that each child starts from the same modules (TensorFlow
# loads once). `sys.modules["tfimm"] = None` makes `import tfimm` fail as if not installed.
_PROBE = """
import importlib, json, os, sys
sys.modules["tfimm"] = None

def loaded():
    return sorted(
        m for m, v in sys.modules.items()
        if v is not None and (m.startswith(("tfimm", "kerastricks")) or m == "tensorflow")
    )

import kerastricks
result = {"kerastricks": loaded()}
import tensorflow
for module in sys.argv[1:]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(module)
            os.write(write, json.dumps(loaded()).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        result[module] = json.loads(pipe.read() or "null")
    os.waitpid(pid, 0)
try:
    kerastricks.create_model
except ImportError as error:
    result["create_model"] = str(error)
print(json.dumps(result))
"""

# The pieces users import alone depend on TensorFlow only (docs/design.md).
_ALLOWED = {
    "kerastricks": {"kerastricks", "kerastricks._compat"},
    "kerastricks.schedules": {
        "kerastricks",
        "kerastricks._compat",
        "kerastricks.schedules",
        "kerastricks.schedules.annealing",
        "kerastricks.schedules.cyclical",
        "kerastricks.schedules.piecewise",
        "kerastricks.schedules.staged",
        "tensorflow",
    },
    "kerastricks.optim": {
        "kerastricks",
        "kerastricks._compat",
        "kerastricks._mixins",
        "tensorflow",
    },
    "kerastricks.callbacks": {
        "kerastricks",
        "kerastricks._compat",
        "kerastricks._mixins",
        "tensorflow",
    },
    "kerastricks.losses": {
        "kerastricks",
        "kerastricks._compat",
        "kerastricks.losses",
        "tensorflow",
    },
}
# Whole subpackages a piece may use: its own, and for optim/callbacks each other's helpers
# (callbacks find the innermost optimizer through kerastricks.optim.inner). A subpackage counts
# with its `__init__`, which importing any of its modules runs; optim itself needs no tfimm
# (checked above as a piece of its own).
_ALLOWED_PACKAGES = {
    "kerastricks.optim": ("kerastricks.optim.",),
    "kerastricks.callbacks": ("kerastricks.callbacks.", "kerastricks.optim."),
    # losses check task and loss names with the config's checker (the config has no TF).
    "kerastricks.losses": ("kerastricks.config.",),
}


def _imported_by(modules):
    environment = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    run = subprocess.run(
        [sys.executable, "-c", _PROBE, *modules],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    imported = json.loads(run.stdout.strip().splitlines()[-1])
    assert None not in imported.values(), run.stderr
    return imported


def test_single_trick_imports_need_neither_tfimm_nor_the_rest_of_kerastricks():
    imported = _imported_by([m for m in _ALLOWED if m != "kerastricks"])
    # The model builders need tfimm, and say how to install it.
    message = imported.pop("create_model", "")
    assert "pip install --no-deps --ignore-requires-python tfimm==0.2.14" in message
    imported = {module: set(names) for module, names in imported.items()}
    for module, names in imported.items():
        allowed_prefixes = _ALLOWED_PACKAGES.get(module, ())
        extra = {
            name
            for name in names - _ALLOWED[module]
            if not f"{name}.".startswith(allowed_prefixes) and name != module
        }
        assert not extra, f"import {module} pulled in {sorted(extra)}"
    assert imported["kerastricks"] == {"kerastricks", "kerastricks._compat"}  # no TensorFlow
    assert "kerastricks.models.groups" not in imported["kerastricks.callbacks"]
