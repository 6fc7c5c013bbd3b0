"""timm-style MixUp / CutMix switch: one or the other per batch, on images and labels."""

from __future__ import annotations

import tensorflow as tf


def sample_beta(alpha: float, seed: tf.Tensor) -> tf.Tensor:
    """One Beta(alpha, alpha) draw as G1 / (G1 + G2) with G ~ Gamma(alpha): XLA-friendly."""
    # float64: Gamma(0.2) draws underflow float32 often enough to give 0 / 0.
    gammas = tf.random.stateless_gamma([2], seed=seed, alpha=alpha, dtype=tf.float64)
    total = gammas[0] + gammas[1]
    lam = tf.where(total > 0, gammas[0] / tf.maximum(total, 1e-300), 0.5)
    return tf.cast(lam, tf.float32)


def cutmix_box(
    height: int, width: int, lam: tf.Tensor, cy: tf.Tensor, cx: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """timm's `rand_bbox` around a given centre: `(y0, y1, x0, x1)`, ends exclusive.

    The sides are `int(size * sqrt(1 - lam))`, the box spans `centre - cut // 2` to
    `centre + (cut + 1) // 2` (timm 1.0.31: an odd side keeps its full length) and is
    clipped to the image, so the area actually pasted can be smaller than `1 - lam`.
    """
    ratio = tf.sqrt(1.0 - tf.cast(lam, tf.float32))
    cut_h = tf.cast(height * ratio, tf.int32)  # truncation, as timm's int()
    cut_w = tf.cast(width * ratio, tf.int32)
    cy = tf.cast(cy, tf.int32)
    cx = tf.cast(cx, tf.int32)
    y0 = tf.clip_by_value(cy - cut_h // 2, 0, height)
    y1 = tf.clip_by_value(cy + (cut_h + 1) // 2, 0, height)
    x0 = tf.clip_by_value(cx - cut_w // 2, 0, width)
    x1 = tf.clip_by_value(cx + (cut_w + 1) // 2, 0, width)
    return y0, y1, x0, x1


def cutmix_mask(
    height: int, width: int, lam: tf.Tensor, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Box mask `[H, W, 1]` (1 inside the pasted box) and the box's real area fraction.

    The centre is uniform over the pixels, as in timm's `rand_bbox`; see `cutmix_box`.
    """
    cy = tf.random.stateless_uniform([], seed=seed, maxval=height, dtype=tf.int32)
    cx = tf.random.stateless_uniform([], seed=seed + 1, maxval=width, dtype=tf.int32)
    y0, y1, x0, x1 = cutmix_box(height, width, lam, cy, cx)
    rows = tf.range(height)[:, None, None]
    cols = tf.range(width)[None, :, None]
    inside = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
    area = tf.cast((y1 - y0) * (x1 - x0), tf.float32) / float(height * width)
    return tf.cast(inside, tf.float32), area


class MixUpCutMix:
    """Per batch, MixUp or CutMix (timm's `Mixup` in batch mode), labels mixed to match.

    Each batch is mixed with probability `prob`; then CutMix with probability `switch_prob`,
    else MixUp. The partner of sample i is sample B-1-i (timm flips the batch). The mixing
    weight lambda ~ Beta(alpha, alpha) is drawn from two Gamma samples; for CutMix the box is
    timm's `rand_bbox` (`cutmix_box`) and, with `correct_lam` (timm's default), the label
    weight is corrected to the area actually pasted: `1 - box_area / image_area`. Labels are
    smoothed first (timm's `mixup_target`) when `label_smoothing > 0`; leave it 0 when the
    loss already smooths.

    Example:
    ```python
    mix = MixUpCutMix(mixup_alpha=0.2, cutmix_alpha=1.0, seed=0)
    images, labels = mix(images, one_hot_labels)  # float [B, H, W, 3], float [B, C]
    ```

    Args:
        mixup_alpha: Beta parameter of MixUp (0 disables MixUp).
        cutmix_alpha: Beta parameter of CutMix (0 disables CutMix).
        switch_prob: probability of CutMix instead of MixUp when both are enabled.
        prob: probability that a batch is mixed at all.
        label_smoothing: smoothing applied to the labels before mixing.
        correct_lam: CutMix label weight from the pasted (clipped) box's area, as timm's
            `correct_lam=True`; False keeps the drawn lambda.
        seed: seed of the generator used when `__call__` gets no stateless seed.
    """

    def __init__(
        self,
        mixup_alpha: float = 0.2,
        cutmix_alpha: float = 1.0,
        switch_prob: float = 0.5,
        prob: float = 1.0,
        label_smoothing: float = 0.0,
        seed: int | None = None,
        correct_lam: bool = True,
    ) -> None:
        if mixup_alpha < 0 or cutmix_alpha < 0 or mixup_alpha + cutmix_alpha == 0:
            raise ValueError(
                "MixUpCutMix needs mixup_alpha >= 0, cutmix_alpha >= 0 and one of them > 0. "
                f"Received: mixup_alpha={mixup_alpha}, cutmix_alpha={cutmix_alpha}"
            )
        for name, value in (
            ("switch_prob", switch_prob),
            ("prob", prob),
            ("label_smoothing", label_smoothing),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"MixUpCutMix: {name} must be in [0, 1]. Received: {value}")
        self.mixup_alpha, self.cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
        self.switch_prob, self.prob = float(switch_prob), float(prob)
        self.label_smoothing, self.seed = float(label_smoothing), seed
        self.correct_lam = bool(correct_lam)
        self._generator: tf.random.Generator | None = None

    def __call__(
        self, images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor | None = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Mixes a batch: float images `[B, H, W, C]`, float labels `[B, C]`."""
        if seed is None:
            if self._generator is None:
                self._generator = (
                    tf.random.Generator.from_non_deterministic_state()
                    if self.seed is None
                    else tf.random.Generator.from_seed(self.seed)
                )
            seed = self._generator.make_seeds(1)[:, 0]
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
        labels = tf.cast(labels, tf.float32)
        if self.label_smoothing > 0:
            num_classes = tf.cast(tf.shape(labels)[-1], tf.float32)
            labels = labels * (1.0 - self.label_smoothing) + self.label_smoothing / num_classes
        draws = tf.random.stateless_uniform([2], seed=seeds[0])
        use_cutmix = self._use_cutmix(draws[1])
        mixed = tf.cond(
            use_cutmix,
            lambda: self._cutmix(images, labels, seeds[1], seeds[2]),
            lambda: self._mixup(images, labels, seeds[3]),
        )
        return tf.cond(draws[0] < self.prob, lambda: mixed, lambda: (images, labels))

    def _use_cutmix(self, draw: tf.Tensor) -> tf.Tensor:
        if self.mixup_alpha == 0:
            return tf.constant(True)
        if self.cutmix_alpha == 0:
            return tf.constant(False)
        return draw < self.switch_prob

    def _mixup(
        self, images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        if self.mixup_alpha == 0:
            return images, labels
        lam = sample_beta(self.mixup_alpha, seed)
        mixed = images * tf.cast(lam, images.dtype) + tf.reverse(images, [0]) * tf.cast(
            1.0 - lam, images.dtype
        )
        return mixed, labels * lam + tf.reverse(labels, [0]) * (1.0 - lam)

    def _cutmix(
        self, images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor, box_seed: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        if self.cutmix_alpha == 0:
            return images, labels
        lam = sample_beta(self.cutmix_alpha, seed)
        mask, area = cutmix_mask(images.shape[1], images.shape[2], lam, box_seed)
        mask = tf.cast(mask, images.dtype)
        mixed = images * (1 - mask) + tf.reverse(images, [0]) * mask
        if self.correct_lam:
            lam = 1.0 - area
        return mixed, labels * lam + tf.reverse(labels, [0]) * (1.0 - lam)

    def get_config(self) -> dict:
        """The constructor arguments, for YAML round-trips."""
        return {
            "mixup_alpha": self.mixup_alpha,
            "cutmix_alpha": self.cutmix_alpha,
            "switch_prob": self.switch_prob,
            "prob": self.prob,
            "label_smoothing": self.label_smoothing,
            "seed": self.seed,
            "correct_lam": self.correct_lam,
        }
