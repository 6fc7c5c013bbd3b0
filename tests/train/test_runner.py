"""The fit wrapper on real digits records: freezing per stage, sizes per stage, records."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import kerastricks  # noqa: F401
from kerastricks.config import ConfigError
from kerastricks.models import layer_groups
from kerastricks.train import train
from kerastricks.train.build import build_model
from kerastricks.train.preflight import preflight
from kerastricks.train.runner import stage_datasets
from kerastricks.train.stages import plan_stages
from kerastricks.train.strategy import detect_hardware

TWO_STAGES = [
    {"name": "frozen", "epochs": 1, "image_size": 16, "unfreeze": "head", "lr": 3e-3},
    {"name": "all", "epochs": 1, "image_size": 32, "unfreeze": "all", "lr": 1e-3},
]


def initial_weights(config, image_size):
    tf.keras.utils.set_random_seed(config.seed)
    model = build_model(config, 10, image_size)
    return model


def group_snapshot(model):
    """Per group, {variable name: value} (BatchNorm statistics included)."""
    groups = layer_groups(model)
    return [{v.name: v.numpy().copy() for v in g.variables} for g in groups], groups


def moved(before, after):
    """Per group: did any of its variables change?"""
    return [
        any(not np.array_equal(x[name], y[name]) for name in x)
        for x, y in zip(before, after, strict=True)
    ]


def test_head_stage_freezes_backbone_weights_and_bn_statistics(make_config):
    config = make_config(
        model={"backbone": "resnet18", "calibrate_bn": False}, train={"stages": TWO_STAGES[:1]}
    )
    start, _ = group_snapshot(initial_weights(config, 16))
    result = train(config)
    end, groups = group_snapshot(result.model)
    changed = moved(start, end)
    assert changed[-1], "the head must train in a head-only stage"
    assert not any(changed[:-1]), f"frozen groups moved: {changed}"
    bn_stats = [n for g in start[:-1] for n in g if "moving_mean" in n or "moving_var" in n]
    assert len(bn_stats) > 10, "resnet18's frozen groups hold BatchNorm statistics"


def test_random_init_gets_calibrated_bn_statistics_before_a_frozen_stage(make_config, capsys):
    config = make_config(train={"stages": TWO_STAGES[:1], "steps_per_epoch": 1})
    result = train(config)
    assert "BatchNorm statistics calibrated on 10 training batches" in capsys.readouterr().out
    means = [v.numpy() for v in result.model.weights if "moving_mean" in v.name]
    assert all(np.abs(m).max() > 0 for m in means), "every BN layer saw the data"


def test_second_stage_trains_every_group_and_records_both_stages(make_config):
    config = make_config(train={"stages": TWO_STAGES})
    start, _ = group_snapshot(initial_weights(config, 16))
    result = train(config)
    end, _ = group_snapshot(result.model)
    assert all(moved(start, end))
    history = pd.read_csv(os.path.join(result.run_dir, "history.csv"))
    assert history["stage"].tolist() == [0, 1]
    assert history["image_size"].tolist() == [16, 32]
    assert {"loss", "val_loss", "val_accuracy", "lr", "img_per_s"} <= set(history.columns)
    summary = json.load(open(os.path.join(result.run_dir, "summary.json")))
    assert summary["val_accuracy"] == pytest.approx(history["val_accuracy"].max())
    assert [s["image_size"] for s in summary["stages"]] == [16, 32]
    assert summary["versions"]["tensorflow"].startswith("2.")
    for name in (
        "config.yaml",
        "plots/curves.png",
        "plots/lr.png",
        "checkpoints/best.weights.h5",
        "checkpoints/last.weights.h5",
    ):
        assert os.path.exists(os.path.join(result.run_dir, name)), name
    assert tf.io.gfile.glob(os.path.join(result.run_dir, "tensorboard", "train", "*"))


def test_dataset_image_size_follows_the_stages(make_config):
    config = make_config(train={"stages": TWO_STAGES})
    inputs = preflight(config)
    plans = plan_stages(inputs.stages, inputs.num_train, 16, 1)
    hardware = detect_hardware("default")
    for plan, size in zip(plans, (16, 32), strict=True):
        train_ds, val_ds = stage_datasets(config, inputs, plan, hardware)
        assert train_ds.element_spec[0].shape.as_list() == [16, size, size, 3]
        assert val_ds.element_spec[0].shape.as_list()[1:] == [size, size, 3]


def test_loss_goes_down_on_digits(make_config):
    config = make_config(
        train={
            "steps_per_epoch": 8,
            "stages": [{"epochs": 4, "image_size": 32, "lr": 3e-3, "schedule": "constant"}],
        }
    )
    history = train(config).history
    losses = [row["loss"] for row in history]
    assert losses[-1] < 0.8 * losses[0], losses


def test_existing_run_folder_is_refused_without_overwrite(make_config):
    config = make_config()
    train(config)
    with pytest.raises(FileExistsError, match="--resume"):
        train(config)


def test_nan_loss_stops_with_the_stage_and_step(make_config):
    config = make_config(
        train={
            "optimizer": {"name": "sgd", "weight_decay": 0.0},
            "stages": [
                {"name": "boom", "epochs": 1, "image_size": 16, "lr": 1e30, "schedule": "constant"}
            ],
        }
    )
    with pytest.raises(FloatingPointError, match="stage 'boom' at step"):
        train(config)


def xla_compiled_ops(model):
    """Op types of the train step that run inside functions marked `_XlaMustCompile` (what
    `tf.function(jit_compile=True)` sets and the runtime obeys), nested calls included."""
    ops = set()
    for concrete in model.train_function._list_all_concrete_functions():
        library = {f.signature.name: f for f in concrete.graph.as_graph_def().library.function}
        stack = [f for f in library.values() if f.attr["_XlaMustCompile"].b]
        seen = set()
        while stack:
            function = stack.pop()
            if function.signature.name in seen:
                continue
            seen.add(function.signature.name)
            for node in function.node_def:
                ops.add(node.op)
                callee = node.attr["f"].func.name
                if callee in library:
                    stack.append(library[callee])
    return ops


@pytest.mark.parametrize("jit_compile", [True, False])
def test_jit_compile_puts_the_whole_train_step_under_xla_or_none_of_it(make_config, jit_compile):
    stage = {"epochs": 1, "image_size": 16, "lr": 1e-3}
    config = make_config(
        train={
            "jit_compile": jit_compile,
            "steps_per_epoch": 2,
            "validation_steps": 1,
            "stages": [stage],
        }
    )
    result = train(config)
    ops = xla_compiled_ops(result.model)
    if jit_compile:
        # Forward pass, backward pass and the optimizer's update: all in the XLA cluster.
        assert {"Conv2D", "Conv2DBackpropFilter", "FusedBatchNormV3"} <= ops, sorted(ops)
        assert {"AssignAddVariableOp", "AssignSubVariableOp"} <= ops, sorted(ops)
    else:
        assert ops == set()
    assert result.summary["steps"] == 2
    assert np.isfinite(result.history[0]["loss"])


def test_vit_with_two_sizes_and_swa_is_refused_before_training(make_config):
    stages = [{"epochs": 1, "image_size": 32}, {"epochs": 1, "image_size": 48}]
    config = make_config(
        model={"backbone": "vit_tiny_patch16_224"}, train={"stages": stages, "swa": 1}
    )
    with pytest.raises(ConfigError, match=r"train.swa.*ask for \[32, 48\]"):
        preflight(config)


def vit_two_sizes(make_config):
    """A ViT trained at 32 px, then 48 px (it is rebuilt between the stages)."""
    return make_config(
        model={"backbone": "vit_tiny_patch16_224", "head": {"dropout": 0.0}},
        train={
            "steps_per_epoch": 2,
            "validation_steps": 1,
            "stages": [
                {"epochs": 1, "image_size": 32, "lr": 1e-3},
                {"epochs": 1, "image_size": 48, "lr": 1e-3},
            ],
        },
    )


def test_vit_runs_two_sizes_and_carries_weights_and_state_over(make_config):
    config = vit_two_sizes(make_config)
    result = train(config)
    assert [row["image_size"] for row in result.history] == [32, 48]
    assert result.model.input_shape[1:3] == (48, 48)
    assert result.summary["steps"] == 4, "the step counter carried over to the rebuilt model"
    pos_embed = [v for v in result.model.weights if "pos_embed" in v.name][0]
    assert pos_embed.shape[1] == 1 + 3 * 3, "position embeddings resized for a 3x3 grid"


def test_vit_resumes_at_the_stage_boundary_with_the_saved_size(make_config):
    config = vit_two_sizes(make_config)
    run_dir = train(config).run_dir
    state_path = os.path.join(run_dir, "checkpoints", "state.json")
    state = json.load(open(state_path))
    # As if killed right after stage 1: only its epoch and its 32 px checkpoint exist.
    state["rows"] = state["rows"][:1]
    state["stage_times"] = {"0": state["stage_times"]["0"]}
    state["checkpoint"] = state["checkpoint"].replace("ckpt-2", "ckpt-1")
    json.dump(state, open(state_path, "w"))
    resumed = train(config, resume=run_dir)
    assert [row["image_size"] for row in resumed.history] == [32, 48]
    assert resumed.summary["steps"] == 4


@pytest.mark.parametrize("scale_lr, expected", [(True, 2e-3), (False, 1e-3)])
def test_scale_lr_multiplies_the_lr_by_the_replicas(make_config, scale_lr, expected):
    from kerastricks.train.strategy import Hardware

    # Two replicas' bookkeeping on the default strategy: the global batch doubles, one device.
    hardware = Hardware(tf.distribute.get_strategy(), kind="cpu", name="default", replicas=2)
    stage = {"epochs": 1, "image_size": 16, "lr": 1e-3, "schedule": "constant"}
    config = make_config(train={"scale_lr": scale_lr, "stages": [stage]})
    result = train(config, hardware=hardware)
    history = pd.read_csv(os.path.join(result.run_dir, "history.csv"))
    assert history["lr"].tolist() == pytest.approx([expected])
    # The Keras 2 optimizer's `learning_rate` is its schedule evaluated at the current step.
    optimizer = result.model.optimizer
    assert int(optimizer.iterations) == 3
    assert float(optimizer.learning_rate) == pytest.approx(expected)
