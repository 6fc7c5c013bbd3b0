"""RectifiedAdam, LAMB, Lookahead and Ranger against independent numpy implementations
of their published update rules (RAdam paper / tfa, LAMB paper / tfa, Lookahead paper)."""

import kerastricks  # noqa: F401  (selects tf-keras before TensorFlow is imported)

# isort: split
import numpy as np
import pytest
import tensorflow as tf

from kerastricks.optim import (
    LAMB,
    Lookahead,
    RectifiedAdam,
    create_optimizer,
    set_lr_multipliers,
    with_lr_multipliers,
)

W0 = np.array([1.0, -2.0, 0.5, 3.0])
CURVATURE = np.array([1.0, 0.5, 2.0, 0.1])


def _gradient(w):
    return CURVATURE * (w - 0.25)


def _run(optimizer, variable, steps):
    path = []
    for _ in range(steps):
        grad = tf.constant(_gradient(variable.numpy().astype(np.float64)), tf.float32)
        optimizer.apply_gradients([(grad, variable)])
        path.append(variable.numpy().copy())
    return np.array(path)


def _tf_trajectory(optimizer, steps, jit=False, name="w", multiplier=None):
    optimizer.jit_compile = jit  # tf_keras turns XLA off on CPU; force it on.
    variable = tf.Variable(W0.astype(np.float32), name=name)
    if multiplier is not None:
        with_lr_multipliers(optimizer, [[variable]], [multiplier])
    return _run(optimizer, variable, steps), optimizer


def _radam_rule(
    lr=1e-3,
    b1=0.9,
    b2=0.999,
    eps=1e-7,
    wd=0.0,
    amsgrad=False,
    threshold=5.0,
    total_steps=0,
    warmup=0.1,
    min_lr=0.0,
    scale=1.0,
):
    """Returns step(w, t, state) following Liu et al. 2019 with tfa's warmup and decay."""
    sma_inf = 2.0 / (1.0 - b2) - 1.0

    def step(w, t, state):
        g = _gradient(w)
        lr_t = lr
        if total_steps > 0:
            warm = total_steps * warmup
            decay_steps = max(total_steps - warm, 1.0)
            if t <= warm:
                lr_t = lr * t / warm
            else:
                lr_t = lr + (min_lr - lr) / decay_steps * min(t - warm, decay_steps)
        state["m"] = b1 * state.get("m", 0.0) + (1 - b1) * g
        state["v"] = b2 * state.get("v", 0.0) + (1 - b2) * g * g
        second = state["v"]
        if amsgrad:
            state["vhat"] = second = np.maximum(state.get("vhat", 0.0), state["v"])
        m_hat = state["m"] / (1 - b1**t)
        v_hat = np.sqrt(second / (1 - b2**t))
        sma_t = sma_inf - 2 * t * b2**t / (1 - b2**t)
        if sma_t >= threshold:
            r = np.sqrt(
                (sma_t - 4) * (sma_t - 2) * sma_inf / ((sma_inf - 4) * (sma_inf - 2) * sma_t)
            )
            update = r * m_hat / (v_hat + eps)
        else:
            update = m_hat
        return w - scale * lr_t * (update + wd * w)

    return step


def _lamb_rule(lr, b1=0.9, b2=0.999, eps=1e-6, wd=0.0, adapt=True):
    def step(w, t, state):
        g = _gradient(w)
        state["m"] = b1 * state.get("m", 0.0) + (1 - b1) * g
        state["v"] = b2 * state.get("v", 0.0) + (1 - b2) * g * g
        update = (state["m"] / (1 - b1**t)) / (np.sqrt(state["v"] / (1 - b2**t)) + eps) + wd * w
        ratio = np.linalg.norm(w) / np.linalg.norm(update) if adapt else 1.0
        return w - lr * ratio * update

    return step


def _sgd_momentum_rule(lr, momentum):
    def step(w, t, state):
        state["buf"] = momentum * state.get("buf", 0.0) - lr * _gradient(w)
        return w + state["buf"]

    return step


def _numpy_trajectory(rule, steps, sync_period=None, alpha=0.5):
    w, slow, state, path = W0.copy(), W0.copy(), {}, []
    for t in range(1, steps + 1):
        w = rule(w, t, state)
        if sync_period and t % sync_period == 0:
            slow = slow + alpha * (w - slow)
            w = slow.copy()
        path.append(w)
    return np.array(path)


RADAM_CASES = {
    "defaults_decay": dict(kwargs=dict(learning_rate=0.05, weight_decay=0.01), rule={}),
    "amsgrad_warmup": dict(
        kwargs=dict(
            learning_rate=0.05,
            beta_2=0.99,
            amsgrad=True,
            total_steps=10,
            warmup_proportion=0.3,
            min_lr=0.01,
        ),
        rule=dict(b2=0.99, amsgrad=True, total_steps=10, warmup=0.3, min_lr=0.01),
    ),
}


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "xla"])
@pytest.mark.parametrize("case", list(RADAM_CASES))
def test_rectified_adam_matches_numpy_rule_step_by_step(case, jit):
    kwargs, rule = RADAM_CASES[case]["kwargs"], dict(RADAM_CASES[case]["rule"])
    rule.setdefault("wd", kwargs.get("weight_decay", 0.0))
    got, _ = _tf_trajectory(RectifiedAdam(**kwargs), steps=12, jit=jit)
    want = _numpy_trajectory(_radam_rule(lr=kwargs["learning_rate"], **rule), steps=12)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
    # Both regimes ran: SGD-with-momentum steps first, rectified Adam steps later.
    assert np.abs(np.diff(got, axis=0)).max() > 1e-3


def test_rectified_adam_keeps_tfa_signature_and_config():
    optimizer = RectifiedAdam()
    config = optimizer.get_config()
    expected = dict(
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        weight_decay=0.0,
        amsgrad=False,
        sma_threshold=5.0,
        total_steps=0,
        warmup_proportion=0.1,
        min_lr=0.0,
        name="RectifiedAdam",
    )
    assert {key: config[key] for key in expected} == pytest.approx(expected)
    clone = RectifiedAdam.from_config(config)
    assert clone.get_config() == config


@pytest.mark.parametrize("excluded", [False, True])
def test_lamb_matches_numpy_rule(excluded):
    optimizer = LAMB(
        0.02, weight_decay=0.1, exclude_from_weight_decay=["bias"] if excluded else None
    )
    got, _ = _tf_trajectory(optimizer, steps=5, name="bias" if excluded else "kernel")
    rule = _lamb_rule(0.02, wd=0.0 if excluded else 0.1, adapt=not excluded)
    np.testing.assert_allclose(got, _numpy_trajectory(rule, steps=5), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "xla"])
def test_lookahead_syncs_every_sync_period(jit):
    optimizer = Lookahead(tf.keras.optimizers.SGD(0.1, momentum=0.9), sync_period=3)
    got, optimizer = _tf_trajectory(optimizer, steps=7, jit=jit)
    want = _numpy_trajectory(_sgd_momentum_rule(0.1, 0.9), steps=7, sync_period=3)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    slow = optimizer._slow_weights[0].numpy()
    # After step 6 (a sync) the slow weights equal the weights then; step 7 moved on.
    np.testing.assert_allclose(slow, got[5], rtol=1e-6)
    assert not np.allclose(got[6], slow)
    assert int(optimizer.iterations) == int(optimizer.inner_optimizer.iterations) == 7


def test_ranger_with_multiplier_matches_numpy_with_scaled_lr():
    ranger = create_optimizer("ranger", learning_rate=0.05, weight_decay=0.01, sync_period=4)
    got, _ = _tf_trajectory(ranger, steps=9, multiplier=0.5)
    want = _numpy_trajectory(_radam_rule(lr=0.025, wd=0.01), steps=9, sync_period=4)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


def test_radam_with_min_lr_decay_scales_the_whole_step():
    optimizer = RectifiedAdam(0.05, total_steps=8, warmup_proportion=0.25, min_lr=0.02)
    got, _ = _tf_trajectory(optimizer, steps=8, multiplier=0.5)
    rule = _radam_rule(lr=0.05, total_steps=8, warmup=0.25, min_lr=0.02, scale=0.5)
    np.testing.assert_allclose(got, _numpy_trajectory(rule, 8), rtol=2e-5, atol=1e-6)


def test_ranger_checkpoint_resume_continues_identically(tmp_path):
    def make():
        variable = tf.Variable(W0.astype(np.float32))
        ranger = create_optimizer("ranger", learning_rate=0.05, weight_decay=0.01, sync_period=4)
        with_lr_multipliers(ranger, [[variable]], [1.0])
        return variable, ranger

    variable, ranger = make()
    set_lr_multipliers(ranger, [0.7])
    _run(ranger, variable, 3)
    path = tf.train.Checkpoint(v=variable, optimizer=ranger).write(str(tmp_path / "ckpt"))
    _run(ranger, variable, 6)
    restored_variable, restored = make()
    tf.train.Checkpoint(v=restored_variable, optimizer=restored).read(path)
    _run(restored, restored_variable, 6)
    np.testing.assert_allclose(restored_variable.numpy(), variable.numpy(), rtol=1e-6)
    assert int(restored.iterations) == 9


# LAMB's reference here is tfa's `LAMB._resource_apply_dense` (tensorflow_addons/optimizers/
# lamb.py), which is the paper's Algorithm 2 with phi = identity:
#   update = m_hat / (sqrt(v_hat) + eps) (+ weight_decay * w when decayed)
#   ratio  = ||w|| / ||update|| when layer-adapted and both norms > 0, else 1
#   w     <- w - ratio * lr * update
# one norm per variable (tfa's "layer" is a variable).
def _lamb_numpy_step(w, g, t, state, lr, decay, adapt, b1=0.9, b2=0.999, eps=1e-6, wd=0.0):
    state["m"] = b1 * state.get("m", 0.0) + (1 - b1) * g
    state["v"] = b2 * state.get("v", 0.0) + (1 - b2) * g * g
    update = (state["m"] / (1 - b1**t)) / (np.sqrt(state["v"] / (1 - b2**t)) + eps)
    if decay:
        update = update + wd * w
    ratio = 1.0
    w_norm, u_norm = np.linalg.norm(w), np.linalg.norm(update)
    if adapt and w_norm > 0 and u_norm > 0:
        ratio = w_norm / u_norm
    return w - ratio * lr * update, ratio


def _lamb_numpy_run(starts, grads, flags, lr, wd):
    """starts: {name: w0}; grads: list over steps of {name: g}; flags: {name: (decay, adapt)}."""
    weights = {name: w.astype(np.float64) for name, w in starts.items()}
    states = {name: {} for name in starts}
    ratios = {name: [] for name in starts}
    for t, step_grads in enumerate(grads, start=1):
        for name in starts:
            decay, adapt = flags[name]
            weights[name], ratio = _lamb_numpy_step(
                weights[name], step_grads[name], t, states[name], lr, decay, adapt, wd=wd
            )
            ratios[name].append(ratio)
    return weights, ratios


def _random_grads(starts, steps, seed=1):
    rng = np.random.default_rng(seed)
    return [
        {name: rng.normal(size=w.shape) * (1 + i) for i, (name, w) in enumerate(starts.items())}
        for _ in range(steps)
    ]


def _apply_named(optimizer, variables, grads):
    for step_grads in grads:
        pairs = [(tf.constant(step_grads[v.name[:-2]], tf.float32), v) for v in variables]
        optimizer.apply_gradients(pairs)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "xla"])
def test_lamb_trust_ratio_is_computed_per_variable(jit):
    rng = np.random.default_rng(0)
    # Norms 30, 0.02 and 1: one trust ratio shared by all (or none) cannot fit them all.
    starts = {
        "big_kernel": rng.normal(size=(4, 5)) * 7.0,
        "tiny_kernel": rng.normal(size=(6,)) * 0.01,
        "bias": rng.normal(size=(3,)) * 0.5,
        "norm_gamma": 1.0 + rng.normal(size=(3,)) * 0.2,
    }
    grads = _random_grads(starts, steps=4)
    optimizer = LAMB(
        0.01,
        weight_decay=0.1,
        exclude_from_weight_decay=["bias"],
        exclude_from_layer_adaptation=["gamma"],
    )
    optimizer.jit_compile = jit
    variables = [tf.Variable(w.astype(np.float32), name=name) for name, w in starts.items()]
    _apply_named(optimizer, variables, grads)
    # (decay, adapt): the adaptation list, once given, replaces the decay list (tfa's rule):
    # the bias is adapted though not decayed, the gamma decayed though not adapted.
    flags = {
        "big_kernel": (True, True),
        "tiny_kernel": (True, True),
        "bias": (False, True),
        "norm_gamma": (True, False),
    }
    want, ratios = _lamb_numpy_run(starts, grads, flags, lr=0.01, wd=0.1)
    for variable in variables:
        name = variable.name[:-2]
        np.testing.assert_allclose(variable.numpy(), want[name], rtol=2e-5, atol=1e-7, err_msg=name)
    # The ratios really differ by orders of magnitude between the variables.
    assert ratios["big_kernel"][0] > 100 * ratios["tiny_kernel"][0]
    assert ratios["norm_gamma"] == [1.0] * 4


def test_lamb_adapted_step_length_is_lr_times_weight_norm():
    # The trust ratio's defining property: an adapted variable moves by lr * ||w|| per step,
    # whatever its gradient's scale; the excluded one moves by lr * ||update|| instead.
    rng = np.random.default_rng(3)
    starts = {"kernel": rng.normal(size=(8,)) * 5.0, "bias": rng.normal(size=(8,)) * 5.0}
    optimizer = LAMB(0.01, exclude_from_layer_adaptation=["bias"])
    variables = [tf.Variable(w.astype(np.float32), name=name) for name, w in starts.items()]
    grads = [{"kernel": rng.normal(size=8) * 1e-3, "bias": rng.normal(size=8) * 1e-3}]
    _apply_named(optimizer, variables, grads)
    kernel, bias = (v.numpy() for v in variables)
    step = np.linalg.norm(kernel - starts["kernel"])
    assert step == pytest.approx(0.01 * np.linalg.norm(starts["kernel"]), rel=1e-4)
    # Step 1 of Adam is lr * g / (|g| + eps), about lr per coordinate: lr * sqrt(8) in all.
    g = grads[0]["bias"]
    expected_bias = np.linalg.norm(0.01 * g / (np.abs(g) + 1e-6))
    assert np.linalg.norm(bias - starts["bias"]) == pytest.approx(expected_bias, rel=1e-4)


def test_lamb_zero_norms_use_a_trust_ratio_of_one():
    g = np.array([1.0, -2.0, 3.0])
    optimizer = LAMB(0.1)
    zero = tf.Variable(np.zeros(3, np.float32), name="zero_kernel")
    still = tf.Variable(np.array([1.0, 2.0, 3.0], np.float32), name="still_kernel")
    optimizer.apply_gradients(
        [(tf.constant(g, tf.float32), zero), (tf.zeros(3, tf.float32), still)]
    )
    # ||w|| = 0: ratio 1, so the plain Adam step -lr * g / (|g| + eps) (not ratio 0: no move).
    np.testing.assert_allclose(zero.numpy(), -0.1 * g / (np.abs(g) + 1e-6), rtol=1e-6)
    # ||update|| = 0 (zero gradient, no decay): ratio 1, not ||w|| / 0 (inf * 0 = nan).
    np.testing.assert_array_equal(still.numpy(), [1.0, 2.0, 3.0])


def _small_model():
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential(
        [
            tf.keras.layers.Dense(4, name="dense"),
            tf.keras.layers.LayerNormalization(name="norm"),
            tf.keras.layers.Dense(2, name="head"),
        ]
    )
    model.build((None, 3))
    model.get_layer("norm").gamma.assign([1.5, 0.5, 2.0, 1.0])
    model.get_layer("head").bias.assign([2.0, -1.0])
    return model


def test_lamb_from_create_optimizer_model_keeps_1d_variables_out_of_decay_and_trust_ratio():
    model = _small_model()
    variables = model.trainable_variables
    starts = {f"v{i}": v.numpy().astype(np.float64) for i, v in enumerate(variables)}
    grads = _random_grads(starts, steps=3, seed=5)
    optimizer = create_optimizer("lamb", 0.02, weight_decay=0.3, model=model)
    for step_grads in grads:
        pairs = [(tf.constant(step_grads[f"v{i}"], tf.float32), v) for i, v in enumerate(variables)]
        optimizer.apply_gradients(pairs)
    # timm's param_groups_weight_decay: ndim <= 1 gets no decay, and (timm's Lamb, which
    # adapts only where weight_decay != 0) no trust ratio either.
    flags = {f"v{i}": (v.shape.rank > 1, v.shape.rank > 1) for i, v in enumerate(variables)}
    assert sum(decay for decay, _ in flags.values()) == 2  # the two kernels of six
    want, ratios = _lamb_numpy_run(starts, grads, flags, lr=0.02, wd=0.3)
    for i, variable in enumerate(variables):
        np.testing.assert_allclose(
            variable.numpy(), want[f"v{i}"], rtol=2e-5, atol=1e-7, err_msg=variable.name
        )
    assert all(ratios[f"v{i}"][0] != 1.0 for i, v in enumerate(variables) if v.shape.rank > 1)


def test_lookahead_slow_step_size_sets_how_far_the_slow_weights_move():
    optimizer = Lookahead(tf.keras.optimizers.Adam(0.1), sync_period=2, slow_step_size=0.3)
    got, optimizer = _tf_trajectory(optimizer, steps=5)

    def adam(w, t, state):
        g = _gradient(w)
        state["m"] = 0.9 * state.get("m", 0.0) + 0.1 * g
        state["v"] = 0.999 * state.get("v", 0.0) + 0.001 * g * g
        m_hat = state["m"] / (1 - 0.9**t)
        return w - 0.1 * m_hat / (np.sqrt(state["v"] / (1 - 0.999**t)) + 1e-7)

    want = _numpy_trajectory(adam, steps=5, sync_period=2, alpha=0.3)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Step 2's sync put the weights 30 % of the way from W0 to the fast weights; the same
    # run with alpha 0.5 lands elsewhere.
    halfway = _numpy_trajectory(adam, steps=5, sync_period=2, alpha=0.5)
    assert np.abs(got[1] - halfway[1]).max() > 1e-2
    np.testing.assert_allclose(optimizer._slow_weights[0].numpy(), got[3], rtol=1e-6)


# sma_t for beta_2 = 0.999 (see _radam_rule): 7.9895 at step 8, 8.9867 at step 9.
def test_rectified_adam_switches_at_the_step_sma_crosses_sma_threshold():
    got, _ = _tf_trajectory(RectifiedAdam(0.05, sma_threshold=8.5), steps=12)
    want = _numpy_trajectory(_radam_rule(lr=0.05, threshold=8.5), steps=12)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
    # Steps 1-8 are SGD with momentum, the same as a run that never rectifies; step 9 is not.
    never = _numpy_trajectory(_radam_rule(lr=0.05, threshold=1e9), steps=12)
    np.testing.assert_allclose(got[:8], never[:8], rtol=2e-5, atol=1e-6)
    assert np.abs(got[8] - never[8]).max() > 1e-3
    # With the default threshold 5 the switch is at step 6: the threshold was really used.
    default = _numpy_trajectory(_radam_rule(lr=0.05, threshold=5.0), steps=12)
    assert np.abs(got[5] - default[5]).max() > 1e-3


def test_rectified_adam_rectifies_when_sma_equals_the_threshold():
    # tfa's rule is sma_t >= sma_threshold: a threshold equal to sma_7 (float32, computed by
    # the same ops) switches at step 7, not 8.
    beta_2 = tf.constant(0.999, tf.float32)
    step = tf.constant(7.0, tf.float32)
    power = tf.pow(beta_2, step)
    sma_7 = float((2.0 / (1.0 - beta_2) - 1.0) - 2.0 * step * power / (1.0 - power))
    got, _ = _tf_trajectory(RectifiedAdam(0.05, sma_threshold=sma_7), steps=8)
    at_7 = _numpy_trajectory(_radam_rule(lr=0.05, threshold=6.5), steps=8)
    at_8 = _numpy_trajectory(_radam_rule(lr=0.05, threshold=7.5), steps=8)
    np.testing.assert_allclose(got, at_7, rtol=2e-5, atol=1e-6)
    assert np.abs(at_7[6] - at_8[6]).max() > 1e-3
