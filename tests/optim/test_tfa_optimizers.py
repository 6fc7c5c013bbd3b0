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
