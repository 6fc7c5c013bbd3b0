"""LAMB, with tensorflow-addons' argument names and update rule."""

from __future__ import annotations

import re

import tensorflow as tf

from kerastricks.optim._moments import AdamMoments


@tf.keras.utils.register_keras_serializable(package="kerastricks")
class LAMB(AdamMoments):
    """Adam with a per-layer trust ratio, for large-batch training (LAMB).

    You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes"
    (2019). Arguments and update rule follow `tfa.optimizers.LAMB`: the Adam step (plus
    `weight_decay * variable`) is rescaled by `||variable|| / ||step||` for each variable,
    unless its name matches `exclude_from_layer_adaptation` (which defaults to
    `exclude_from_weight_decay`). Variables excluded from weight decay with the optimizer's
    `exclude_from_weight_decay(var_list=...)` also skip the trust ratio, as in timm.

    Example:

    ```python
    optimizer = kerastricks.optim.LAMB(2e-3, weight_decay=0.02,
                                       exclude_from_weight_decay=["bias", "bn"])
    ```

    Args:
        learning_rate: float or `LearningRateSchedule`.
        beta_1: decay rate of the first-moment estimate.
        beta_2: decay rate of the second-moment estimate.
        epsilon: added to the denominator for numerical stability.
        weight_decay: decoupled weight decay factor (part of the adapted step).
        exclude_from_weight_decay: regexes; variables whose name matches get no decay.
        exclude_from_layer_adaptation: regexes; variables whose name matches get no trust
            ratio. `None` uses `exclude_from_weight_decay`.
        name: name of the optimizer.
        **kwargs: base optimizer arguments (`clipnorm`, `global_clipnorm`, `jit_compile`...).
    """

    def __init__(
        self,
        learning_rate: float | tf.keras.optimizers.schedules.LearningRateSchedule = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-6,
        weight_decay: float = 0.0,
        exclude_from_weight_decay: list[str] | None = None,
        exclude_from_layer_adaptation: list[str] | None = None,
        name: str = "LAMB",
        **kwargs,
    ):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, False, name, **kwargs)
        self.weight_decay = weight_decay
        self.exclude_from_weight_decay(var_names=list(exclude_from_weight_decay or []))
        self._layer_adaptation_names = exclude_from_layer_adaptation

    def _use_layer_adaptation(self, variable) -> bool:
        if self._layer_adaptation_names is None:
            return self._use_weight_decay(variable)
        return not any(re.search(name, variable.name) for name in self._layer_adaptation_names)

    def update_step(self, gradient, variable):
        """Applies one LAMB step to `variable`."""
        dtype = variable.dtype
        local_step = tf.cast(self.iterations + 1, dtype)
        m_corrected, v_corrected = self._corrected_moments(gradient, variable, local_step)
        step = m_corrected / (tf.sqrt(v_corrected) + tf.cast(self.epsilon, dtype))
        if self.weight_decay and self._use_weight_decay(variable):
            step += tf.cast(self.weight_decay, dtype) * variable
        ratio = tf.ones([], dtype)
        if self._use_layer_adaptation(variable):
            w_norm = tf.norm(variable)
            s_norm = tf.norm(step)
            safe = tf.logical_and(w_norm > 0, s_norm > 0)
            ratio = tf.where(safe, w_norm / tf.where(safe, s_norm, 1.0), 1.0)
        variable.assign_sub(ratio * tf.cast(self.learning_rate, dtype) * step)

    def get_config(self) -> dict:
        """Returns the constructor arguments (tfa's names)."""
        config = super().get_config()
        config.pop("amsgrad")
        config.update(
            {
                "weight_decay": self.weight_decay,
                "exclude_from_weight_decay": list(self._exclude_from_weight_decay_names),
                "exclude_from_layer_adaptation": self._layer_adaptation_names,
            }
        )
        return config
