"""Notebook install step: install what kerastricks needs, never the TensorFlow the VM ships.

A Kaggle TPU VM's TensorFlow is a special build (often installed under another distribution
name, such as `tensorflow-cpu` or `tensorflow-tpu`). `pip install kerastricks` would resolve
`tensorflow` and `tf-keras` from PyPI and could replace it, so the notebook installs in
steps: a `tf-keras` of the installed TensorFlow's minor version and tfimm without their
dependencies, then only the missing dependencies of kerastricks, pinned so that pip may not
upgrade anything already installed.

This module uses the standard library only: the notebook loads it from its file before
kerastricks can be imported (the package's `__init__` needs tfimm, which may be missing).

Example:

```python
plan = plan_install(installed_distributions(), tensorflow_version(), wheels_dir=None)
print(plan.describe())          # "nothing to install" on a complete environment
install_missing(wheels_dir="/kaggle/input/kerastricks-wheels")   # plans, prints, runs pip
```
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# Mirrors `[project] dependencies` in pyproject.toml (a test keeps the two equal): the
# notebook needs the list before kerastricks' own metadata can be read.
REQUIREMENTS = (
    "tensorflow>=2.16,<2.22",
    "tf-keras>=2.16,<2.22",
    "keras>=3.8",
    "numpy",
    "pandas",
    "scikit-learn",
    "pyyaml",
    "matplotlib",
    "pillow",
    "safetensors",
    "google-crc32c",
    "tensorboard",
)
TFIMM = "tfimm==0.2.14"
# Distribution names under which a TensorFlow build installs the `tensorflow` package.
TENSORFLOW_DISTRIBUTIONS = (
    "tensorflow",
    "tensorflow-cpu",
    "tensorflow-gpu",
    "tensorflow-tpu",
    "tensorflow-intel",
    "tensorflow-macos",
    "tf-nightly",
    "tf-nightly-cpu",
    "tf-nightly-tpu",
)
_NAME_END = re.compile(r"[\s<>=!~;\[(]")
_PEP440 = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?(\+[A-Za-z0-9.]+)?$")
_MAJOR_MINOR = re.compile(r"^(\d+)\.(\d+)")


def normalize_name(name: str) -> str:
    """The PEP 503 form of a distribution name: `TF_Keras` -> `tf-keras`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """The normalised distribution name of a requirement: `tf-keras~=2.21.0` -> `tf-keras`."""
    match = _NAME_END.search(requirement)
    return normalize_name(requirement[: match.start()] if match else requirement)


def tf_keras_requirement(tensorflow_version: str) -> str:
    """The `tf-keras` matching a TensorFlow version's minor: `2.21.0` -> `tf-keras~=2.21.0`."""
    match = _MAJOR_MINOR.match(tensorflow_version)
    if match is None:
        raise ValueError(
            f"cannot read a major.minor version from TensorFlow {tensorflow_version!r}; install "
            "the matching tf-keras by hand: pip install --no-deps tf-keras~=2.<minor>.0"
        )
    return f"tf-keras~={match.group(1)}.{match.group(2)}.0"


@dataclass(frozen=True)
class PipStep:
    """One `pip install` call of a plan.

    Args:
        requirements: what to install, as pip requirement strings.
        flags: extra pip flags, e.g. `("--no-deps",)`.
        reason: why this step is needed, for the printed plan.
        pinned: whether the step runs under the constraints that pin every installed version.
    """

    requirements: tuple[str, ...]
    flags: tuple[str, ...]
    reason: str
    pinned: bool = False


@dataclass
class InstallPlan:
    """What to install on top of an environment, in order, and why.

    Args:
        steps: the pip calls, in order.
        notes: what was found and deliberately left alone.
        wheels_dir: the local wheel folder of an offline install (`--no-index`), or None.
        constraints: `name==version` of every installed distribution, for the pinned steps.
    """

    steps: list[PipStep] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    wheels_dir: str | None = None
    constraints: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """True when there is nothing to install."""
        return not self.steps

    @property
    def requirements(self) -> list[str]:
        """Every requirement the plan installs, in order."""
        return [r for step in self.steps for r in step.requirements]

    def pip_args(self, constraints_file: str | None = None) -> list[list[str]]:
        """The argument lists for `python -m pip`, one per step."""
        source = ["--no-index", "--find-links", self.wheels_dir] if self.wheels_dir else []
        commands = []
        for step in self.steps:
            pins = ["--constraint", constraints_file] if step.pinned and constraints_file else []
            commands.append(["install", *source, *step.flags, *pins, *step.requirements])
        return commands

    def describe(self) -> str:
        """The plan as text: source (index or offline folder), steps with reasons, notes."""
        where = f"offline from {self.wheels_dir} (--no-index)" if self.wheels_dir else "from PyPI"
        lines = [f"install plan ({where}):"]
        if self.empty:
            lines.append("  nothing to install")
        for step in self.steps:
            pinned = " (installed versions pinned)" if step.pinned else ""
            command = shlex.join(["pip", "install", *step.flags, *step.requirements])
            lines.append(f"  {command}{pinned}")
            lines.append(f"      why: {step.reason}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


def plan_install(
    installed: Mapping[str, str],
    tensorflow_version: str | None,
    *,
    wheels_dir: str | None = None,
    kerastricks_spec: str = "kerastricks",
    requirements: Sequence[str] = REQUIREMENTS,
) -> InstallPlan:
    """Plans the installs that make kerastricks importable without replacing TensorFlow.

    A pure function of what is installed. TensorFlow is never in the plan when any build of
    it is installed; `tf-keras` (matching TensorFlow's minor version), tfimm and kerastricks
    are installed with `--no-deps` (their metadata would pull `tensorflow` from PyPI); the
    other missing dependencies are installed with every installed version pinned.

    Example:

    ```python
    plan = plan_install({"tf-keras": "2.19.0"}, "2.21.0")
    plan.requirements[0]  # "tf-keras~=2.21.0"
    ```

    Args:
        installed: normalised distribution name -> version of everything installed.
        tensorflow_version: the installed TensorFlow's version, None when there is none.
        wheels_dir: a folder of wheels (e.g. an attached Kaggle dataset) for an offline
            install: every step then runs with `--no-index --find-links wheels_dir`.
        kerastricks_spec: how pip finds kerastricks (a name, a wheel path or a git URL).
        requirements: kerastricks' dependencies (default: `REQUIREMENTS`).
    """
    installed = {normalize_name(k): v for k, v in installed.items()}
    plan = InstallPlan(wheels_dir=wheels_dir)
    special = {"tensorflow", "tf-keras"}
    if tensorflow_version is None:
        tf_requirement = next(r for r in requirements if requirement_name(r) == "tensorflow")
        plan.steps.append(
            PipStep(
                (tf_requirement,),
                (),
                "no TensorFlow is installed (on a TPU VM, pick an "
                "image that ships one instead: the PyPI build has no TPU support)",
            )
        )
        plan.notes.append("tf-keras comes with kerastricks' dependencies after TensorFlow")
        special = {"tensorflow"}
    else:
        plan.notes.append(f"TensorFlow {tensorflow_version} is installed: left as it is")
        _plan_tf_keras(plan, installed, tensorflow_version)
    if "tfimm" not in installed:
        plan.steps.append(
            PipStep(
                (TFIMM,),
                ("--no-deps", "--ignore-requires-python"),
                "tfimm's metadata says Python < 3.11, but it is pure Python and works on 3.11+",
            )
        )
    if "kerastricks" not in installed:
        plan.steps.append(
            PipStep(
                (kerastricks_spec,),
                ("--no-deps",),
                "its dependencies are planned here, so pip never resolves TensorFlow",
            )
        )
    missing = [
        r
        for r in requirements
        if requirement_name(r) not in special and requirement_name(r) not in installed
    ]
    if missing:
        plan.steps.append(
            PipStep(tuple(missing), (), "missing dependencies of kerastricks", pinned=True)
        )
        plan.constraints = sorted(
            f"{name}=={version}" for name, version in installed.items() if _PEP440.match(version)
        )
    return plan


def _plan_tf_keras(plan: InstallPlan, installed: Mapping[str, str], tf_version: str) -> None:
    have = installed.get("tf-keras")
    if _minor(tf_version) is None:
        plan.notes.append(
            f"TensorFlow's version {tf_version!r} has no major.minor; tf-keras {have} is kept. "
            "If `import kerastricks` fails, install the matching one with --no-deps."
        )
        return
    wanted = tf_keras_requirement(tf_version)
    if have is not None and _minor(have) == _minor(tf_version):
        plan.notes.append(f"tf-keras {have} matches TensorFlow {tf_version}")
        return
    found = f"tf-keras {have} does not match" if have else "no tf-keras for"
    plan.steps.append(
        PipStep(
            (wanted,),
            ("--no-deps",),
            f"{found} TensorFlow {tf_version}; --no-deps because tf-keras requires "
            "`tensorflow`, which pip would fetch from PyPI over the VM's build",
        )
    )


def _minor(version: str) -> tuple[str, str] | None:
    match = _MAJOR_MINOR.match(version)
    return (match.group(1), match.group(2)) if match else None


def installed_distributions() -> dict[str, str]:
    """Normalised name -> version of every distribution installed for this Python."""
    versions: dict[str, str] = {}
    for distribution in importlib.metadata.distributions():
        name = distribution.metadata["Name"]
        if name:
            versions.setdefault(normalize_name(name), distribution.version)
    return versions


def tensorflow_version() -> str | None:
    """The installed TensorFlow's version, without importing it into this process.

    Read from the metadata of whichever distribution provides the `tensorflow` package; a
    build without metadata is asked in a subprocess (importing TensorFlow here would fix the
    Keras version before `TF_USE_LEGACY_KERAS` and tf-keras are in place).
    """
    if importlib.util.find_spec("tensorflow") is None:
        return None
    providers = importlib.metadata.packages_distributions().get("tensorflow", [])
    known = [name for name in providers if normalize_name(name) in TENSORFLOW_DISTRIBUTIONS]
    if known or providers:
        return importlib.metadata.version((known or providers)[0])
    code = "import tensorflow as tf; print(tf.__version__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    version = result.stdout.strip().splitlines()[-1:] if result.returncode == 0 else []
    return version[0] if version else "unknown"


def install_missing(
    *,
    wheels_dir: str | None = None,
    kerastricks_spec: str = "kerastricks",
    dry_run: bool = False,
) -> InstallPlan:
    """Plans and runs the notebook's install step; prints what it does and returns the plan.

    Raises before any pip call when `wheels_dir` is given but missing, and after the installs
    when the TensorFlow version changed (which the plan never asks for).

    Args:
        wheels_dir: folder of wheels for an offline install (an attached dataset), or None.
        kerastricks_spec: how pip finds kerastricks when it is not installed yet.
        dry_run: only print the plan.
    """
    if wheels_dir is not None and not os.path.isdir(wheels_dir):
        raise FileNotFoundError(
            f"WHEELS_DIR {wheels_dir!r} is not a folder. Attach the dataset that holds the "
            "wheels (Kaggle: Add Input), or set WHEELS_DIR = None to install from PyPI."
        )
    tf_before = tensorflow_version()
    plan = plan_install(
        installed_distributions(),
        tf_before,
        wheels_dir=wheels_dir,
        kerastricks_spec=kerastricks_spec,
    )
    print(plan.describe())
    if dry_run or plan.empty:
        return plan
    with tempfile.TemporaryDirectory() as folder:
        constraints = os.path.join(folder, "constraints.txt")
        with open(constraints, "w") as handle:
            handle.write("\n".join(plan.constraints) + "\n")
        for args in plan.pip_args(constraints):
            print("$ pip " + shlex.join(args), flush=True)
            subprocess.run([sys.executable, "-m", "pip", *args, "--quiet"], check=True)
    importlib.invalidate_caches()
    tf_after = tensorflow_version()
    if tf_before is not None and tf_after != tf_before:
        raise RuntimeError(
            f"TensorFlow changed from {tf_before} to {tf_after} during the install; restart "
            "the runtime, and report the plan above as a kerastricks bug."
        )
    print(f"installed: {', '.join(plan.requirements)}")
    return plan
