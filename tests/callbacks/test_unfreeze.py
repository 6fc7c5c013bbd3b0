"""Gradual unfreezing: frozen weights and BN statistics stay put, slots survive, LR ratio."""

import kerastricks  # noqa: F401  (selects tf-keras before TensorFlow is imported)

# isort: split
import numpy as np
import pytest
import tensorflow as tf

from kerastricks.callbacks import GradualUnfreeze
from kerastricks.callbacks.unfreeze import unfrozen_count
from kerastricks.optim import get_lr_multipliers, with_lr_multipliers


def sequential_model():
    layers = [
        tf.keras.layers.Dense(6, name="low"),
        tf.keras.layers.BatchNormalization(name="low_bn"),
        tf.keras.layers.Dense(6, activation="relu", name="mid"),
        tf.keras.layers.Dense(1, name="head"),
    ]
    model = tf.keras.Sequential([tf.keras.Input((4,)), *layers])
    return model, [[layers[0], layers[1]], [layers[2]], [layers[3]]]


class CustomStepModel(tf.keras.Model):
    """A subclassed model with its own train_step, as users write them."""

    def __init__(self):
        super().__init__()
        self.low = tf.keras.layers.Dense(6)
        self.low_bn = tf.keras.layers.BatchNormalization()
        self.mid = tf.keras.layers.Dense(6, activation="relu")
        self.head = tf.keras.layers.Dense(1)

    def call(self, x, training=False):
        return self.head(self.mid(self.low_bn(self.low(x), training=training)))

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(self(x, training=True) - y))
        variables = self.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return {"loss": loss}


def subclassed_model():
    model = CustomStepModel()
    model(tf.zeros((1, 4)))
    return model, [[model.low, model.low_bn], [model.mid], [model.head]]


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32") * 3.0 + 1.0
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0], "float32"))[:, None]
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(8)


class Snapshots(tf.keras.callbacks.Callback):
    """Weights at each epoch end, and the head's Adam slot right after each epoch starts."""

    def __init__(self, head_kernel):
        super().__init__()
        self.head_kernel = head_kernel
        self.weights, self.slot_at_begin, self.slot_at_end = [], [], []

    def _slot(self):
        return adam_m(self.model.optimizer, self.head_kernel).copy()

    def on_epoch_begin(self, epoch, logs=None):
        self.slot_at_begin.append(self._slot())

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append({v.name: v.numpy().copy() for v in self.model.weights})
        self.slot_at_end.append(self._slot())


def adam_m(optimizer, variable):
    """Adam's first-moment slot of `variable` (tf_keras keeps them in a list by index)."""
    return optimizer._momentums[optimizer._index_dict[optimizer._var_key(variable)]].numpy()


def moved(before, after, names):
    return {n: not np.array_equal(before[n], after[n]) for n in names}


@pytest.mark.parametrize("build", [sequential_model, subclassed_model], ids=["seq", "subclass"])
def test_groups_unfreeze_on_schedule(build):
    tf.keras.utils.set_random_seed(0)
    model, groups = build()
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-2), loss="mse")
    head_kernel = groups[2][0].kernel
    snapshots = Snapshots(head_kernel)
    unfreeze = GradualUnfreeze(groups, {1: 2, 2: "all"})
    start = {v.name: v.numpy().copy() for v in model.weights}
    model.fit(data(), epochs=3, callbacks=[unfreeze, snapshots], verbose=0)
    assert unfreeze.changes == [(0, 1), (1, 2), (2, 3)]
    low = [v.name for v in groups[0][0].weights]
    bn_stats = [groups[0][1].moving_mean.name, groups[0][1].moving_variance.name]
    bn_scale = [groups[0][1].gamma.name]
    mid = [v.name for v in groups[1][0].weights]
    head = [v.name for v in groups[2][0].weights]
    epochs = [start, *snapshots.weights]

    def check(epoch, names, expected):
        assert moved(epochs[epoch], epochs[epoch + 1], names) == dict.fromkeys(names, expected)

    check(0, head, True)  # epoch 0: head only
    check(0, low + bn_stats + bn_scale + mid, False)
    check(1, mid + head, True)  # epoch 1: + mid
    check(1, low + bn_stats + bn_scale, False)
    check(2, low + bn_stats + bn_scale + mid + head, True)  # epoch 2: all, BN in training mode
    # The head's Adam slots carry over each unfreeze: not reset, still being updated.
    for epoch in (1, 2):
        np.testing.assert_array_equal(
            snapshots.slot_at_begin[epoch], snapshots.slot_at_end[epoch - 1]
        )
    assert np.abs(snapshots.slot_at_end[0]).sum() > 0
    low_slot = adam_m(model.optimizer, groups[0][0].kernel)
    assert np.abs(low_slot).sum() > 0  # slots of a late group exist and are used


def test_every_and_schedule_counts():
    assert [unfrozen_count(e, {0: 1, 2: 2, 4: "all"}, 5) for e in range(6)] == [1, 1, 2, 2, 5, 5]
    assert [unfrozen_count(e, {3: 9}, 4) for e in (0, 3)] == [1, 4]
    unfreeze = GradualUnfreeze([[None], [None], [None]], every=2)
    unfreeze.groups = [[], [], []]
    assert [unfreeze.count_at(e) for e in range(7)] == [1, 1, 2, 2, 3, 3, 3]
    with pytest.raises(ValueError, match="exactly one of"):
        GradualUnfreeze(3, {0: 1}, every=1)
    with pytest.raises(ValueError, match="counts >= 1"):
        GradualUnfreeze(3, {0: 0})


def test_prebuilt_optimizer_without_slots_is_refused_before_training():
    model, groups = sequential_model()
    for layer in groups[0] + groups[1]:
        layer.trainable = False
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-2), loss="mse")
    model.fit(data(), epochs=1, verbose=0)  # builds slots for the head only
    for layer in groups[0] + groups[1]:
        layer.trainable = True
    with pytest.raises(ValueError, match="no slots for 6 variables"):
        model.fit(data(), epochs=1, verbose=0, callbacks=[GradualUnfreeze(groups, every=1)])


def test_new_group_gets_a_tenth_of_the_head_multiplier():
    tf.keras.utils.set_random_seed(0)
    model, groups = sequential_model()
    optimizer = with_lr_multipliers(tf.keras.optimizers.SGD(1e-2), groups, [1.0, 1.0, 2.0])
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(data(), epochs=2, verbose=0, callbacks=[GradualUnfreeze(groups, {1: 2})])
    np.testing.assert_allclose(get_lr_multipliers(optimizer), [1.0, 0.2, 2.0])


def test_callback_and_stages_freeze_the_same_variables_of_a_vit():
    # One engine (kerastricks.models.freeze_groups): the callback freezes ViT's model-level
    # pos_embed and cls_token with the stem, as a stage's `unfreeze` does.
    from kerastricks.models import build_classifier, layer_groups, set_trainable

    model = build_classifier("vit_tiny_patch16_224", 3, input_size=32)
    groups = layer_groups(model, 3)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3), loss="mse")
    callback = GradualUnfreeze(groups, {0: 1, 1: 2})
    callback.set_model(model)
    callback.on_train_begin()
    for epoch, count in [(0, 1), (1, 2)]:
        callback.on_epoch_begin(epoch)
        by_callback = [v.name for v in model.trainable_variables]
        set_trainable(model, groups, count)
        assert [v.name for v in model.trainable_variables] == by_callback
    set_trainable(model, groups, "all")
    callback.on_epoch_begin(0)
    frozen = {v.name.split("/")[-1] for v in model.weights} - {
        v.name.split("/")[-1] for v in model.trainable_variables
    }
    assert {"pos_embed:0", "cls_token:0"} <= frozen
