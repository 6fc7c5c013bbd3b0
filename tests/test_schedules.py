"""Schedules: PyTorch/fastai/tfa values step for step, pure math without TF, serialisation."""

import kerastricks  # noqa: F401  (selects tf-keras before TensorFlow is imported)

# isort: split
import functools
import math

import numpy as np
import pytest
import tensorflow as tf

from kerastricks.schedules import (
    Constant,
    Cyclical,
    OneCycle,
    PiecewiseAnneal,
    Staged,
    WarmupCosine,
    annealing_cos,
    annealing_exp,
    annealing_linear,
    combine_schedules,
    get_schedule,
    list_schedules,
)

# Printed once by torch 2.13.0 (CPU) in a throwaway venv: OneCycleLR on SGD/Adam, reading
# param_groups[0]["lr"] / ["momentum"] / ["betas"][0] before each optimizer.step().
TORCH_ONE_CYCLE = [
    (
        {"max_lr": 1.0, "total_steps": 10},
        [0.04, 0.52, 1.0, 0.9504846320134737, 0.8117456539497631, 0.6112620219362893,
         0.38874197806371075, 0.18825834605023697, 0.049519367986526286, 4e-06],
        [0.95, 0.9, 0.85, 0.854951556604879, 0.8688255099070633, 0.8888739533021842,
         0.9111260466978157, 0.9311744900929366, 0.945048443395121, 0.95],
    ),
    (
        {"max_lr": 1.0, "total_steps": 10, "three_phase": True},
        [0.04, 0.52, 1.0, 0.52, 0.04, 0.0361807218535102, 0.0261817218535102,
         0.013822278146489805, 0.0038232781464898036, 4e-06],
        [0.95, 0.9, 0.85, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95],
    ),
    (
        {"max_lr": 0.5, "total_steps": 7, "anneal_strategy": "linear", "pct_start": 0.4},
        [0.02, 0.2866666666666666, 0.47619057142857146, 0.35714342857142856,
         0.2380962857142857, 0.1190491428571428, 2.000000000002e-06],
        [0.95, 0.8944444444444444, 0.8547619047619047, 0.8785714285714286,
         0.9023809523809524, 0.9261904761904761, 0.95],
    ),
    # Phase one ends at a negative step (0.3 * 2 - 1): PyTorch anneals from there.
    (
        {"max_lr": 2e-3, "total_steps": 2},
        [0.0016234913078995259, 8e-09],
        [0.8688255099070633, 0.95],
    ),
    (
        {"max_lr": 1e-3, "total_steps": 5, "three_phase": True, "pct_start": 0.25,
         "div_factor": 10.0, "final_div_factor": 100.0},
        [1e-4, 9.509795896116975e-05, 6.151478623083756e-05, 1.9637254807992694e-05, 1e-06],
        [0.95] * 5,
    ),
]  # fmt: skip


def reference_one_cycle(
    step,
    max_lr,
    total_steps,
    pct_start=0.3,
    div_factor=25.0,
    final_div_factor=1e4,
    anneal_strategy="cos",
    three_phase=False,
):
    """PyTorch's published OneCycleLR formula, written out independently of kerastricks."""
    initial = max_lr / div_factor
    final = initial / final_div_factor
    if three_phase:
        ends = [pct_start * total_steps - 1, 2 * pct_start * total_steps - 2, total_steps - 1]
        values = [initial, max_lr, initial, final]
    else:
        ends = [pct_start * total_steps - 1, total_steps - 1]
        values = [initial, max_lr, final]
    start = 0.0
    for i, end in enumerate(ends):
        if step <= end or i == len(ends) - 1:
            pct = (step - start) / (end - start)
            if anneal_strategy == "cos":
                return values[i + 1] + (values[i] - values[i + 1]) / 2 * (
                    math.cos(math.pi * pct) + 1
                )
            return values[i] + (values[i + 1] - values[i]) * pct
        start = end


def as_list(schedule, steps):
    return schedule(tf.range(steps)).numpy().tolist()


@pytest.mark.parametrize("kwargs, lrs, moms", TORCH_ONE_CYCLE)
def test_one_cycle_matches_torch(kwargs, lrs, moms):
    schedule = OneCycle(**kwargs)
    steps = kwargs["total_steps"]
    np.testing.assert_allclose(as_list(schedule, steps), lrs, rtol=1e-5)
    np.testing.assert_allclose(as_list(schedule.momentum_schedule(), steps), moms, rtol=1e-6)
    # float32 on the step tensor (TPU has no float64); the float64 path of the same math
    # matches to rounding.
    np.testing.assert_allclose([schedule.value_at(float(s)) for s in range(steps)], lrs, rtol=1e-10)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_lr": 3e-3, "total_steps": 100},
        {"max_lr": 1e-2, "total_steps": 57, "pct_start": 0.15, "three_phase": True},
        {"max_lr": 1.0, "total_steps": 33, "anneal_strategy": "linear", "div_factor": 4.0},
    ],
)
def test_one_cycle_matches_published_formula(kwargs):
    steps = kwargs["total_steps"]
    expected = [reference_one_cycle(s, **kwargs) for s in range(steps)]
    np.testing.assert_allclose(as_list(OneCycle(**kwargs), steps), expected, rtol=1e-5)


def test_one_cycle_by_hand_ten_steps():
    # max 1, initial 1/25 = 0.04, final 0.04 / 1e4 = 4e-6; warm-up ends at step 0.3*10-1 = 2.
    lrs = as_list(OneCycle(1.0, 10), 12)
    assert lrs[0] == pytest.approx(0.04)
    assert lrs[1] == pytest.approx(0.52)  # half-way on the cosine: (0.04 + 1) / 2
    assert lrs[2] == pytest.approx(1.0)
    # Annealing from step 2 to 9: half-way at step 5.5, so steps 5 and 6 straddle the mean.
    mean = (1.0 + 4e-6) / 2
    assert lrs[5] > mean > lrs[6]
    assert lrs[5] - mean == pytest.approx(mean - lrs[6], rel=1e-5)
    assert lrs[9] == pytest.approx(4e-6, rel=1e-5)
    assert lrs[10] == lrs[11] == lrs[9]  # held after the cycle instead of PyTorch's error


def test_one_cycle_fastai_is_combined_cos():
    schedule = OneCycle.fastai(1e-3, 40)
    # fastai: combined_cos(0.25, 1e-3/25, 1e-3, 1e-3/1e5) at pos = step / total_steps.
    fastai = combine_schedules(
        [0.25, 0.75],
        [
            functools.partial(annealing_cos, 4e-5, 1e-3),
            functools.partial(annealing_cos, 1e-3, 1e-8),
        ],
    )
    expected = [fastai(s / 40) for s in range(41)]
    np.testing.assert_allclose(as_list(schedule, 41), expected, rtol=2e-6)
    assert expected[10] == pytest.approx(1e-3) and expected[40] == pytest.approx(1e-8)
    assert as_list(schedule.momentum_schedule(), 41)[10] == pytest.approx(0.85)


def test_pure_math_without_tensorflow():
    assert annealing_cos(1.0, 0.0, 0.5) == pytest.approx(0.5)
    assert annealing_cos(2.0, 1.0, 1.0) == pytest.approx(1.0)
    assert annealing_linear(1.0, 3.0, 0.25) == pytest.approx(1.5)
    assert annealing_exp(1e-7, 10.0, 0.5) == pytest.approx(1e-7 * 1e4)
    values = annealing_cos(1.0, 0.0, np.linspace(0, 1, 5))
    np.testing.assert_allclose(values, [1.0, 0.8535534, 0.5, 0.1464466, 0.0], atol=1e-7)
    assert isinstance(OneCycle(1.0, 10).value_at(3.0), float)


def test_warmup_cosine_equals_keras_cosine_decay():
    ours = WarmupCosine(1e-3, 50, warmup_steps=10, warmup_init_lr=1e-5, min_lr=1e-5)
    keras = tf.keras.optimizers.schedules.CosineDecay(
        1e-5, 40, alpha=1e-2, warmup_target=1e-3, warmup_steps=10
    )
    expected = [float(keras(s)) for s in range(55)]
    np.testing.assert_allclose(as_list(ours, 55), expected, rtol=1e-5)
    lrs = as_list(WarmupCosine(1.0, 4, warmup_steps=2), 5)
    np.testing.assert_allclose(lrs, [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-7)


def test_cyclical_modes_by_hand():
    tri = Cyclical(0.1, 1.0, step_size=2)
    np.testing.assert_allclose(as_list(tri, 9), [0.1, 0.55, 1.0, 0.55, 0.1, 0.55, 1.0, 0.55, 0.1])
    tri2 = Cyclical(0.1, 1.0, step_size=2, mode="triangular2")
    np.testing.assert_allclose(
        as_list(tri2, 9), [0.1, 0.55, 1.0, 0.55, 0.1, 0.325, 0.55, 0.325, 0.1]
    )
    exp = Cyclical(0.1, 1.0, step_size=2, mode="exp_range", gamma=0.5)
    assert exp.scale_mode == "iterations"
    expected = [0.1 + 0.9 * max(0.0, 1 - abs(s / 2 - 2 * math.floor(1 + s / 4) + 1)) * 0.5**s
                for s in range(9)]  # fmt: skip
    np.testing.assert_allclose(as_list(exp, 9), expected, rtol=1e-6)


@tf.keras.saving.register_keras_serializable(package="tests")
def quarter_scale(x):
    return 0.25 + 0.0 * x


@pytest.mark.parametrize(
    "schedule",
    [
        OneCycle(1e-3, 100, three_phase=True),
        OneCycle.fastai(1e-3, 100),
        WarmupCosine(1e-3, 100, warmup_steps=10, min_lr=1e-6),
        Cyclical(1e-4, 1e-2, 5, mode="triangular2"),
        Cyclical(1e-4, 1e-2, 5, scale_fn=quarter_scale),
        PiecewiseAnneal([0, 5, 20], [0.0, 1.0, 0.5], ["linear", "exp"]),
        Constant(3e-4),
        Staged([30, 60], [OneCycle(1e-3, 30), Constant(1e-4), WarmupCosine(1e-3, 40)]),
    ],
    ids=lambda s: type(s).__name__,
)
def test_round_trip_through_keras_serialisation(schedule):
    config = tf.keras.optimizers.schedules.serialize(schedule)
    assert config["registered_name"] == f"kerastricks>{type(schedule).__name__}"
    restored = tf.keras.optimizers.schedules.deserialize(config)
    assert type(restored) is type(schedule)
    assert restored.get_config() == schedule.get_config()
    np.testing.assert_array_equal(as_list(restored, 120), as_list(schedule, 120))
    optimizer = tf.keras.optimizers.Adam(schedule)
    restored_opt = tf.keras.optimizers.Adam.from_config(optimizer.get_config())
    assert float(restored_opt._learning_rate(7)) == float(schedule(7))


def test_staged_rebases_the_step_at_the_boundaries():
    first, second = OneCycle(1.0, 10), WarmupCosine(0.5, 4, warmup_steps=2)
    staged = Staged([10], [first, second])
    lrs = as_list(staged, 16)
    np.testing.assert_allclose(lrs[:10], as_list(first, 10), rtol=1e-7)
    assert lrs[9] == pytest.approx(4e-6, rel=1e-5)  # last step of stage 0
    np.testing.assert_allclose(lrs[10:15], [0.0, 0.25, 0.5, 0.25, 0.0], atol=1e-7)
    assert lrs[15] == pytest.approx(0.0, abs=1e-7)
    # Resume: a fresh optimizer whose iterations are restored to 11 gets the same LR.
    assert float(staged(tf.constant(11, tf.int64))) == pytest.approx(0.25)


def test_schedules_compile_with_xla():
    staged = Staged([5], [OneCycle(1.0, 5), Cyclical(0.1, 1.0, 2)])
    compiled = tf.function(lambda step: staged(step), jit_compile=True)
    for step in (0, 4, 5, 9):
        assert float(compiled(tf.constant(step, tf.int64))) == pytest.approx(float(staged(step)))


def test_registry_and_errors():
    assert list_schedules() == [
        "constant",
        "cyclical",
        "one_cycle",
        "one_cycle_fastai",
        "warmup_cosine",
    ]
    schedule = get_schedule("one_cycle_fastai", max_lr=1e-3, total_steps=10)
    assert schedule.convention == "fastai" and schedule.final_div_factor == pytest.approx(4000.0)
    with pytest.raises(ValueError, match="Did you mean 'one_cycle'"):
        get_schedule("one_cylce", max_lr=1.0)
    with pytest.raises(ValueError, match="'pct'.*It takes: max_lr, total_steps, pct_start"):
        get_schedule("one_cycle", max_lr=1.0, total_steps=3, pct=0.3)
    with pytest.raises(ValueError, match="pct_start=1.5"):
        OneCycle(1.0, 10, pct_start=1.5)
    with pytest.raises(ValueError, match="one boundary fewer"):
        Staged([5, 10], [Constant(1.0)])
    with pytest.raises(ValueError, match="mode='cosine'"):
        Cyclical(0.1, 1.0, 2, mode="cosine")


def test_staged_with_one_schedule_is_that_schedule():
    from kerastricks.schedules import Constant, Staged

    staged = Staged([], [Constant(0.25)])
    assert float(staged(0)) == pytest.approx(0.25)
    assert float(staged(1000)) == pytest.approx(0.25)
