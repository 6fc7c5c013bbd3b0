"""Shared base of the Adam-family optimizers kerastricks adds (RectifiedAdam, LAMB)."""

from __future__ import annotations

import tensorflow as tf


class AdamMoments(tf.keras.optimizers.Optimizer):
    """Builds and updates Adam's first and second moments; subclasses turn them into a step.

    Args:
        learning_rate: float or `LearningRateSchedule`.
        beta_1: decay rate of the first-moment estimate.
        beta_2: decay rate of the second-moment estimate.
        epsilon: added to the denominator for numerical stability.
        amsgrad: use the maximum of past second moments (AMSGrad).
        name: name of the optimizer.
        **kwargs: base optimizer arguments (`clipnorm`, `global_clipnorm`, `jit_compile`...).
    """

    def __init__(self, learning_rate, beta_1, beta_2, epsilon, amsgrad, name, **kwargs):
        # weight_decay=None: tf_keras's own decoupled decay stays off; subclasses decay in
        # their update step with their reference's rule.
        kwargs.pop("weight_decay", None)
        super().__init__(name=name, weight_decay=None, **kwargs)
        self._learning_rate = self._build_learning_rate(learning_rate)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.amsgrad = amsgrad

    # The multiplier mixin must not add tf_keras's own decay on top of the subclass's.
    _decays_in_update_step = True
    # The step (decay included) is proportional to the learning rate: multipliers scale it.
    _update_is_linear_in_lr = True

    def _apply_weight_decay(self, variables):
        # Decay is part of each subclass's update step, with its reference's rule.
        return

    def build(self, var_list):
        """Creates the moment slots (`m`, `v`, and `vhat` with AMSGrad)."""
        super().build(var_list)
        if getattr(self, "_built", False):
            return
        self._built = True
        self._momentums = [self.add_variable_from_reference(v, "m") for v in var_list]
        self._velocities = [self.add_variable_from_reference(v, "v") for v in var_list]
        if self.amsgrad:
            self._velocity_hats = [self.add_variable_from_reference(v, "vhat") for v in var_list]

    def _corrected_moments(self, gradient, variable, local_step):
        """Updates the moments of `variable`; returns the bias-corrected (m, v)."""
        dtype = variable.dtype
        index = self._index_dict[self._var_key(variable)]
        gradient = tf.convert_to_tensor(gradient)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        m = self._momentums[index]
        v = self._velocities[index]
        m.assign(beta_1 * m + (1.0 - beta_1) * gradient)
        v.assign(beta_2 * v + (1.0 - beta_2) * tf.square(gradient))
        second = v
        if self.amsgrad:
            second = self._velocity_hats[index]
            second.assign(tf.maximum(second, v))
        m_corrected = m / (1.0 - tf.pow(beta_1, local_step))
        v_corrected = second / (1.0 - tf.pow(beta_2, local_step))
        return m_corrected, v_corrected

    def get_config(self) -> dict:
        """Returns the constructor arguments."""
        config = super().get_config()
        config.update(
            {
                "learning_rate": self._serialize_hyperparameter(self._learning_rate),
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
                "amsgrad": self.amsgrad,
            }
        )
        return config
