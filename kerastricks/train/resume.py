"""What a resumed run may change, and which kind of run a folder holds.

`--resume RUN` continues the saved run exactly, with the config and `--set` values the user
gives on top: a setting that only shapes what has not happened yet (stages not started, the
epochs of the stage in progress, evaluation, prediction, progress output) is applied; a
setting the saved weights, optimizer state or finished epochs depend on is refused with a
message naming the key. Nothing the user gave is ignored.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

from kerastricks.config import Config, ConfigError, from_dict, to_dict

RUN_KINDS = ("train", "cv", "pseudo-label")
KIND_FILE = "run.json"
# The run folder is named by --resume itself; fold and extra records are set per fold by cv.
_IDENTITY = ("name", "output", "data.val_fold", "data.extra_records")
# Settings that act only on what happens after the resume point.
_FREE = (
    "tta.",
    "predict.",
    "data.test",
    "data.cache",
    "data.deterministic",
    "train.verbose",
    "train.explain",
    "train.validation_steps",
    "train.steps_per_execution",
    "train.jit_compile",
    "cv.folds",
    "pseudo.rounds",
)
# What labelled the pseudo sets already written: fixed once one exists.
_LABELLING = ("tta.", "predict.weights")
# Compared through the resolved stages instead (a recipe expands into stages).
_STAGE_KEYS = ("train.stages", "train.recipe", "train.batch_size")


def resume_config(
    saved: Config,
    given: Config,
    *,
    epochs_done: int = 0,
    training_locked: bool = False,
    pseudo_locked: bool = False,
    where: str = "the run",
) -> tuple[Config, list[str]]:
    """The config a resumed run continues with, and one line per change applied.

    Args:
        saved: the run folder's `config.yaml`.
        given: the config the user resumes with (their file and `--set` values).
        epochs_done: finished epochs of this training run (decides which stages started).
        training_locked: every training setting is fixed (a CV fold has finished with them).
        pseudo_locked: pseudo-label selection settings, TTA and the checkpoint used are
            fixed (a pseudo set was written with them).
        where: the run folder, for messages.

    Raises:
        ConfigError: naming the first key that may not change, with both values and why.
    """
    from kerastricks.train.stages import resolve_stages

    old, new = _flatten(to_dict(saved)), _flatten(to_dict(given))
    merged = to_dict(saved)
    changes = []
    for path in sorted(set(old) | set(new)):
        if old.get(path) == new.get(path) or _matches(path, _IDENTITY + _STAGE_KEYS):
            continue
        free = (_matches(path, _FREE) and not (pseudo_locked and _matches(path, _LABELLING))) or (
            path.startswith("pseudo.") and not pseudo_locked
        )
        if not free:
            raise ConfigError(
                f"{path}: {where} was trained with {old.get(path)!r}, the resumed config asks "
                f"for {new.get(path)!r}. A resumed run keeps what its weights and optimizer "
                "state were trained with: keep the value, or start a new run without --resume."
            )
        _set(merged, path, new.get(path))
        changes.append(f"{path}: {old.get(path)!r} -> {new.get(path)!r}")
    old_stages = [dataclasses.asdict(s) for s in resolve_stages(saved.train)]
    new_stages = [dataclasses.asdict(s) for s in resolve_stages(given.train)]
    batches = (saved.train.batch_size, given.train.batch_size)
    if training_locked and batches[0] != batches[1]:
        raise ConfigError(
            f"train.batch_size: {where} has folds trained with {batches[0]}, the resumed "
            f"config asks for {batches[1]}; the folds of one run train alike. Keep the value, "
            "or start a new run without --resume."
        )
    done = None if training_locked else epochs_done
    stages, stage_changes = _merge_stages(old_stages, new_stages, batches, done, where)
    merged["train"].update(stages=stages, recipe=None, batch_size=given.train.batch_size)
    if batches[0] != batches[1]:
        stage_changes.insert(0, f"train.batch_size: {batches[0]} -> {batches[1]} (new stages)")
    return from_dict(merged, source=f"resume of {where}"), changes + stage_changes


def resumed_run_config(
    config: Config,
    run_dir: str,
    kind: str,
    *,
    epochs_done: int = 0,
    training_locked: bool = False,
    pseudo_locked: bool = False,
) -> Config:
    """`resume_config` for the run in `run_dir` (refused when it holds another `kind` of
    run); prints each change it applies."""
    from kerastricks.config import load_config

    check_run_kind(run_dir, kind)
    saved = load_config(os.path.join(run_dir, "config.yaml"))
    merged, changes = resume_config(
        saved,
        config,
        epochs_done=epochs_done,
        training_locked=training_locked,
        pseudo_locked=pseudo_locked,
        where=run_dir,
    )
    for change in changes:
        print(f"kerastricks: resume applies {change}")
    return merged


def _merge_stages(
    old: list[dict[str, Any]],
    new: list[dict[str, Any]],
    batches: tuple[int, int],
    epochs_done: int | None,
    where: str,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Stages that finished stay as they were; the stage in progress may change its epochs;
    stages not started (and new ones) take the given values. `epochs_done=None`: all fixed."""
    merged, changes, start = [], [], 0
    for i in range(max(len(old), len(new))):
        before = old[i] if i < len(old) else None
        after = new[i] if i < len(new) else None
        if before is not None:
            # The batch a started stage trained with stays, whatever the new default.
            before = {**before, "batch_size": before["batch_size"] or batches[0]}
        started = before is not None and (epochs_done is None or start < epochs_done)
        end = start + (before["epochs"] if before else 0)
        if not started:
            if after is not None:
                merged.append({**after, "batch_size": after["batch_size"] or batches[1]})
                if before is None or after != old[i]:
                    changes.append(f"train.stages.{i}: {'changed' if before else 'added'}")
            elif before is not None:
                changes.append(f"train.stages.{i}: removed (not started)")
            start = end
            continue
        if after is None:
            raise ConfigError(
                f"train.stages.{i}: {where} has trained stage {i} ('{before['name']}'); it "
                "cannot be removed on resume."
            )
        after = {**after, "batch_size": after["batch_size"] or batches[1]}
        finished = epochs_done is None or end <= epochs_done
        for key in sorted(before):
            if before[key] == after[key]:
                continue
            if key == "batch_size" and new[i]["batch_size"] is None:
                continue  # only the default changed: it applies to stages not started
            if key == "epochs" and not finished and after["epochs"] > epochs_done - start:
                changes.append(
                    f"train.stages.{i}.epochs: {before['epochs']} -> {after['epochs']} (the "
                    "stage in progress; its LR schedule now spans the new length)"
                )
                before = {**before, "epochs": after["epochs"]}
                continue
            state = "finished" if finished else f"has {epochs_done - start} epoch(s) done"
            raise ConfigError(
                f"train.stages.{i}.{key}: stage {i} ('{before['name']}') of {where} {state} "
                f"with {before[key]!r}; the resumed config asks for {after[key]!r}. Only "
                "stages not started may change (and the epochs of the stage in progress); "
                f"append a stage (train.stages.{max(len(old), len(new))}) to train more."
            )
        merged.append(before)
        start = start + before["epochs"]
    return merged, changes


def _matches(path: str, prefixes: Sequence[str]) -> bool:
    return any(path == p or path.startswith(p if p.endswith(".") else p + ".") for p in prefixes)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        data = data.setdefault(key, {})
    data[last] = value


def write_run_kind(run_dir: str, kind: str) -> None:
    """Marks a run folder as a `train`, `cv` or `pseudo-label` run (for --resume)."""
    from kerastricks._fs import write_json_atomic

    write_json_atomic(os.path.join(run_dir, KIND_FILE), {"kind": kind})


def check_run_kind(run_dir: str, kind: str) -> None:
    """Raises naming the folder when `--resume` points at a run of another kind (or none)."""
    import tensorflow as tf

    if not tf.io.gfile.exists(os.path.join(run_dir, "config.yaml")):
        raise FileNotFoundError(
            f"--resume {run_dir}: no kerastricks run there (no config.yaml). Start it without "
            "--resume."
        )
    found = run_kind(run_dir)
    if found != kind:
        raise ConfigError(
            f"--resume {run_dir}: that folder holds a {found} run, not a {kind} run. Resume it "
            f"with `kerastricks {found} CONFIG --resume {run_dir}`."
        )


def run_kind(run_dir: str) -> str:
    """The kind of run a folder holds: from its marker, else from its layout (older runs)."""
    import tensorflow as tf

    path = os.path.join(run_dir, KIND_FILE)
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            return json.load(f)["kind"]
    names = {n.rstrip("/") for n in tf.io.gfile.listdir(run_dir)}
    if any(n.startswith("round") for n in names):
        return "pseudo-label"
    if any(n.startswith("fold") for n in names):
        return "cv"
    return "train"
