"""Rectified Adam, with tensorflow-addons' argument names and update rule."""

from __future__ import annotations

import tensorflow as tf

from kerastricks.optim._moments import AdamMoments


@tf.keras.utils.register_keras_serializable(package="kerastricks")
class RectifiedAdam(AdamMoments):
    """Adam whose adaptive step is rectified to keep its variance consistent (RAdam).

    Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond" (2019). The
    arguments, defaults and update rule are those of `tfa.optimizers.RectifiedAdam`
    (tensorflow-addons, end-of-life), so a notebook moves by changing one import. While the
    variance estimate is unreliable (`sma_t < sma_threshold`, the first few steps) the step
    is SGD with momentum; after that, Adam's step times the rectification term `r_t`.
    `weight_decay` adds `weight_decay * variable` to the step before the learning rate
    (tfa's rule, decoupled from the gradient), skipping variables excluded with
    `exclude_from_weight_decay`. With `total_steps > 0` the learning rate warms up linearly
    over `warmup_proportion * total_steps` steps, then decays linearly to `min_lr`.

    Example:

    ```python
    optimizer = kerastricks.optim.RectifiedAdam(1e-3, total_steps=10_000, min_lr=1e-5)
    ranger = kerastricks.optim.Lookahead(optimizer, sync_period=6, slow_step_size=0.5)
    ```

    Args:
        learning_rate: float or `LearningRateSchedule`.
        beta_1: decay rate of the first-moment estimate.
        beta_2: decay rate of the second-moment estimate.
        epsilon: added to the denominator for numerical stability.
        weight_decay: decoupled weight decay factor (scaled by the learning rate).
        amsgrad: use the maximum of past second moments (AMSGrad).
        sma_threshold: length of the approximated simple moving average above which the
            rectified adaptive step is used.
        total_steps: total training steps; > 0 enables the built-in warmup and decay.
        warmup_proportion: fraction of `total_steps` spent warming up.
        min_lr: learning rate reached at `total_steps`.
        name: name of the optimizer.
        **kwargs: base optimizer arguments (`clipnorm`, `global_clipnorm`, `jit_compile`...).
    """

    def __init__(
        self,
        learning_rate: float | tf.keras.optimizers.schedules.LearningRateSchedule = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        sma_threshold: float = 5.0,
        total_steps: int = 0,
        warmup_proportion: float = 0.1,
        min_lr: float = 0.0,
        name: str = "RectifiedAdam",
        **kwargs,
    ):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, name, **kwargs)
        self.weight_decay = weight_decay
        self.sma_threshold = sma_threshold
        self.total_steps = int(total_steps)
        self.warmup_proportion = warmup_proportion
        self.min_lr = min_lr

    @property
    def _update_is_linear_in_lr(self) -> bool:
        # The built-in decay ends at min_lr, which a multiplier of the learning rate would
        # not scale; LR multipliers then rescale the whole step instead.
        return self.total_steps <= 0 or not self.min_lr

    def _scheduled_lr(self, dtype: tf.DType, local_step: tf.Tensor) -> tf.Tensor:
        lr = tf.cast(self.learning_rate, dtype)
        if self.total_steps <= 0:
            return lr
        total = tf.cast(self.total_steps, dtype)
        warmup = total * tf.cast(self.warmup_proportion, dtype)
        decay_steps = tf.maximum(total - warmup, 1.0)
        decay_rate = (tf.cast(self.min_lr, dtype) - lr) / decay_steps
        return tf.where(
            local_step <= warmup,
            lr * (local_step / warmup),
            lr + decay_rate * tf.minimum(local_step - warmup, decay_steps),
        )

    def update_step(self, gradient, variable):
        """Applies one RAdam step to `variable`."""
        dtype = variable.dtype
        local_step = tf.cast(self.iterations + 1, dtype)
        lr = self._scheduled_lr(dtype, local_step)
        beta_2 = tf.cast(self.beta_2, dtype)
        beta_2_power = tf.pow(beta_2, local_step)
        m_corrected, v_corrected = self._corrected_moments(gradient, variable, local_step)
        sma_inf = 2.0 / (1.0 - beta_2) - 1.0
        sma_t = sma_inf - 2.0 * local_step * beta_2_power / (1.0 - beta_2_power)
        r_t = tf.sqrt(
            (sma_t - 4.0) / (sma_inf - 4.0) * (sma_t - 2.0) / (sma_inf - 2.0) * sma_inf / sma_t
        )
        rectified = r_t * m_corrected / (tf.sqrt(v_corrected) + tf.cast(self.epsilon, dtype))
        step = tf.where(sma_t >= tf.cast(self.sma_threshold, dtype), rectified, m_corrected)
        if self.weight_decay and self._use_weight_decay(variable):
            step += tf.cast(self.weight_decay, dtype) * variable
        variable.assign_sub(lr * step)

    def get_config(self) -> dict:
        """Returns the constructor arguments (tfa's names)."""
        config = super().get_config()
        config.update(
            {
                "weight_decay": self.weight_decay,
                "sma_threshold": self.sma_threshold,
                "total_steps": self.total_steps,
                "warmup_proportion": self.warmup_proportion,
                "min_lr": self.min_lr,
            }
        )
        return config
