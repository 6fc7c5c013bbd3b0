"""Distribution strategy and precision, picked from the hardware (or the config)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import tensorflow as tf

from kerastricks.config.names import PRECISIONS, STRATEGIES
from kerastricks.config.validate import check_choice


@dataclass
class Hardware:
    """The strategy in use and what it runs on.

    Args:
        strategy: the `tf.distribute.Strategy`.
        kind: `tpu`, `gpu` or `cpu` (the accelerator type).
        name: `tpu`, `mirrored`, `multi_worker` or `default`.
        replicas: number of replicas in sync (global batch = per-replica batch x replicas).
        is_chief: whether this process writes the run folder.
    """

    strategy: tf.distribute.Strategy
    kind: str
    name: str
    replicas: int
    is_chief: bool = True

    def describe(self) -> str:
        """One line for logs: strategy, device kind and replicas."""
        return f"strategy={self.name} device={self.kind} replicas={self.replicas}"


def detect_hardware(name: str = "auto") -> Hardware:
    """Builds the strategy: TPU → TPUStrategy, several GPUs → Mirrored, TF_CONFIG workers →
    MultiWorkerMirrored, else the default strategy; `name` forces one of them."""
    check_choice("train.strategy", name, STRATEGIES)
    if name == "multi_worker" or (name == "auto" and _tf_config_workers() > 1):
        # Collective ops must be configured before anything initialises the devices.
        return hardware_of(tf.distribute.MultiWorkerMirroredStrategy())
    if name in ("auto", "tpu"):
        hardware = _try_tpu()
        if hardware is not None:
            return hardware
        if name == "tpu":
            raise RuntimeError(
                "train.strategy is 'tpu' but no TPU was found (TPUClusterResolver failed). On "
                "Kaggle, pick a TPU accelerator in the notebook settings; elsewhere use 'auto'."
            )
    gpus = tf.config.list_logical_devices("GPU")
    kind = "gpu" if gpus else "cpu"
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices)
        return Hardware(strategy, kind, "mirrored", strategy.num_replicas_in_sync)
    strategy = tf.distribute.get_strategy()
    return Hardware(strategy, kind, "default", 1)


def hardware_of(strategy: tf.distribute.Strategy | None = None) -> Hardware:
    """The `Hardware` of a strategy the caller built (None: the current strategy)."""
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return Hardware(strategy, "tpu", "tpu", replicas)
    kind = "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        resolver = strategy.cluster_resolver
        is_chief = resolver.task_type in (None, "chief") or (
            resolver.task_type == "worker" and resolver.task_id == 0
        )
        return Hardware(strategy, kind, "multi_worker", replicas, is_chief)
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return Hardware(strategy, kind, "mirrored", replicas)
    return Hardware(strategy, kind, "default", replicas)


def _try_tpu() -> Hardware | None:
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.NotFoundError, KeyError):
        return None
    strategy = tf.distribute.TPUStrategy(resolver)
    return Hardware(strategy, "tpu", "tpu", strategy.num_replicas_in_sync)


def _tf_config_workers() -> int:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0
    cluster = json.loads(raw).get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def resolve_precision(precision: str, kind: str) -> str:
    """`auto` → mixed_bfloat16 on TPU, mixed_float16 on GPU (with loss scaling), float32 on CPU."""
    check_choice("train.precision", precision, PRECISIONS)
    if precision != "auto":
        return precision
    return {"tpu": "mixed_bfloat16", "gpu": "mixed_float16"}.get(kind, "float32")


def resolve_jit_compile(jit_compile: str | bool, kind: str) -> bool:
    """`auto` → XLA on TPU only: measured 4-9x slower on a 2-core CPU (MISSION.md)."""
    if isinstance(jit_compile, bool):
        return jit_compile
    if jit_compile != "auto":
        raise ValueError(f"train.jit_compile: expected auto, true or false, got {jit_compile!r}")
    return kind == "tpu"
