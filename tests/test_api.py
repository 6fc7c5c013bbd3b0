"""The top-level API: `import kerastricks as kt` gives the names a user needs."""

import importlib.util
import inspect

import pytest

import kerastricks as kt

_FIT = importlib.util.find_spec("kerastricks.fit") is not None
_NAMES = [name for name in kt.__all__ if name not in ("__version__", "train")]


@pytest.mark.parametrize("name", _NAMES)
def test_each_top_level_name_is_a_callable(name):
    if name in ("fit_stages", "fine_tune") and not _FIT:
        pytest.skip("kerastricks.fit is not written yet")
    assert callable(getattr(kt, name))


def test_train_is_the_subpackage_and_callable_as_the_runner():
    from kerastricks.train import runner, stages

    assert kt.train.stages is stages  # the subpackage's modules stay reachable
    called = []
    original = runner.train
    runner.train = lambda *args, **kwargs: called.append((args, kwargs)) or "summary"
    try:
        assert kt.train("config", resume="run") == "summary"
    finally:
        runner.train = original
    assert called == [(("config",), {"resume": "run"})]


def test_lr_find_and_registries_are_the_subpackages_own():
    from kerastricks.callbacks import find_lr
    from kerastricks.schedules import list_schedules

    assert kt.lr_find is find_lr
    assert kt.list_schedules is list_schedules
    assert "one_cycle" in kt.list_schedules()
    assert "adamw" in kt.list_optimizers()
    assert "resnet18" in kt.list_backbones("resnet1*")


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'fit_stage'"):
        kt.fit_stage  # noqa: B018


def test_create_model_is_a_backbone_and_a_head_in_one_call():
    import tensorflow as tf

    model = kt.create_model("resnet18", num_classes=3, input_size=32, head={"dropout": 0.0})
    assert model.output_shape == (None, 32, 32, 3)[:1] + (3,)
    assert model(tf.zeros([1, 32, 32, 3])).dtype == tf.float32
    assert list(inspect.signature(kt.create_model).parameters)[:3] == [
        "name",
        "num_classes",
        "weights",
    ]
