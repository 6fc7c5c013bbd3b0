"""MixUp / CutMix: rows really mixed with row B-1-i, lambda ~ Beta(alpha, alpha), `prob` and
`switch_prob` honoured, CutMix label weight = pasted area, and the box of timm's `rand_bbox`."""

import kerastricks  # noqa: F401  (selects tf-keras before TensorFlow is imported)

# isort: split
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from kerastricks.data.augment.mix import MixUpCutMix, cutmix_box, cutmix_mask

BATCH = 8
# Row i is class i: a mixed label shows which row was the partner, and with what weight.
EYE = np.eye(BATCH, dtype=np.float32)


def _images(batch=BATCH, size=16):
    # Continuous random values: a pixel equal to another row's pixel came from that row.
    return np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype(np.float32)


def _seed(step):
    return tf.constant([step, 11], tf.int64)


def test_mixup_blends_every_row_with_row_b_minus_1_minus_i():
    images = _images()
    mix = MixUpCutMix(mixup_alpha=0.4, cutmix_alpha=0.0)
    for step in range(6):
        out, labels = (t.numpy() for t in mix(images, EYE, _seed(step)))
        lam = labels[0, 0]
        assert 0.0 < lam < 1.0
        # One lambda for the whole batch (timm's batch mode); partner of i is B-1-i.
        np.testing.assert_allclose(labels, lam * EYE + (1 - lam) * EYE[::-1], atol=1e-6)
        np.testing.assert_allclose(out, lam * images + (1 - lam) * images[::-1], atol=1e-3)


def test_cutmix_pastes_one_box_from_row_b_minus_1_minus_i_weighted_by_its_area():
    images = _images()
    mix = MixUpCutMix(mixup_alpha=0.0, cutmix_alpha=1.0)
    shares = []
    for step in range(8):
        out, labels = (t.numpy() for t in mix(images, EYE, _seed(step)))
        from_partner = np.all(out == images[::-1], axis=-1)  # [B, H, W]
        from_self = np.all(out == images, axis=-1)
        assert np.all(from_partner ^ from_self)  # every pixel is one row's or its partner's
        box = from_partner[0]
        assert np.all(from_partner == box)  # the same box in every row
        rows, cols = np.nonzero(box)
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert box.sum() == height * width  # a rectangle
        share = box.mean()
        # The label weight of the partner is the pixel share that came from it.
        np.testing.assert_allclose(labels, (1 - share) * EYE + share * EYE[::-1], atol=1e-6)
        shares.append(share)
    assert all(0.0 < s < 1.0 for s in shares)


# timm 1.0.31, timm/data/mixup.py: `rand_bbox` (lines 47-56) with the centre fixed, and
# `cutmix_bbox_and_lam` (lines 90-92, correct_lam=True). Worked by hand from its formulas:
#   cut = int(size * sqrt(1 - lam)); lo = clip(c - cut // 2, 0, size);
#   hi = clip(c + (cut + 1) // 2, 0, size); lam = 1 - (yh - yl) * (xh - xl) / (H * W).
# The lambdas make sqrt(1 - lam) a power-of-two fraction, exact in float32 and float64.
TIMM_RAND_BBOX = [
    # (H, W, lam, cy, cx), (yl, yh, xl, xh), corrected lam
    ((16, 16, 0.75, 8, 8), (4, 12, 4, 12), 1 - 64 / 256),  # cut 8: even sides
    ((12, 12, 0.4375, 6, 6), (2, 11, 2, 11), 1 - 81 / 144),  # cut 9: odd sides keep 9
    ((12, 20, 0.4375, 1, 18), (0, 6, 11, 20), 1 - 54 / 240),  # cuts 9, 15: clipped
    ((13, 9, 0.609375, 12, 0), (8, 13, 0, 3), 1 - 15 / 117),  # cuts 8, 5: clipped
    ((20, 20, 0.9375, 10, 3), (8, 13, 1, 6), 1 - 25 / 400),  # cut 5
    ((7, 7, 0.0, 3, 3), (0, 7, 0, 7), 0.0),  # cut 7: the whole image
]


@pytest.mark.parametrize(("args", "box", "lam"), TIMM_RAND_BBOX)
def test_cutmix_box_matches_timm_rand_bbox(args, box, lam):
    height, width = args[:2]
    ours = tuple(int(v) for v in cutmix_box(*args))
    assert ours == box
    area = (ours[1] - ours[0]) * (ours[3] - ours[2])
    np.testing.assert_allclose(1 - area / (height * width), lam, rtol=0, atol=1e-12)


def _label_weights(mix, images, labels, count):
    """Row 0's own-class weight for `count` seeds, in one graph (fast)."""

    @tf.function
    def run(seeds):
        return tf.map_fn(
            lambda s: mix(images, labels, s)[1][0, 0], seeds, fn_output_signature=tf.float32
        )

    seeds = tf.stack(
        [tf.range(count, dtype=tf.int64), tf.fill([count], tf.constant(5, tf.int64))], 1
    )
    return run(seeds).numpy().astype(np.float64)


def _assert_beta(lams, alpha):
    # KS against Beta(alpha, alpha), and mean / variance inside the range that numpy's own
    # Beta samples of the same size span (seeded: the verdict is the same every run).
    assert stats.kstest(lams, "beta", args=(alpha, alpha)).pvalue > 0.01
    reference = np.random.default_rng(0).beta(alpha, alpha, (400, len(lams)))
    for moment in (np.mean, np.var):
        low, high = np.quantile(moment(reference, axis=1), [0.001, 0.999])
        assert low <= moment(lams) <= high, (moment.__name__, moment(lams), low, high)


@pytest.mark.parametrize("alpha", [0.4, 2.0])
def test_mixup_lambda_follows_beta_alpha_alpha(alpha):
    mix = MixUpCutMix(mixup_alpha=alpha, cutmix_alpha=0.0)
    lams = _label_weights(mix, _images(2, 2), EYE[:2, :2], 3000)
    _assert_beta(lams, alpha)


def test_cutmix_lambda_follows_beta_of_cutmix_alpha():
    # correct_lam=False keeps the drawn lambda as the label weight (timm's option).
    mix = MixUpCutMix(mixup_alpha=0.4, cutmix_alpha=2.0, switch_prob=1.0, correct_lam=False)
    lams = _label_weights(mix, _images(2, 8), EYE[:2, :2], 3000)
    _assert_beta(lams, 2.0)
    # ... and its pasted box has timm's side int(size * sqrt(1 - lam)) wherever not clipped.
    images = _images(2, 32)
    corrected = MixUpCutMix(mixup_alpha=0.4, cutmix_alpha=2.0, switch_prob=1.0)
    unclipped = 0
    for step in range(20):
        lam = float(mix(images, EYE[:2, :2], _seed(step))[1][0, 0])
        out = corrected(images, EYE[:2, :2], _seed(step))[0].numpy()
        rows, cols = np.nonzero(np.all(out[0] == images[1], axis=-1))
        side = int(32 * np.sqrt(1 - np.float32(lam)))
        for ends in (rows, cols):
            if len(ends) and 0 < ends.min() and ends.max() < 31:
                assert np.ptp(ends) + 1 == side
                unclipped += 1
    assert unclipped >= 10


def test_prob_and_switch_prob_are_honoured():
    count, prob, switch_prob = 3000, 0.3, 0.25
    mix = MixUpCutMix(mixup_alpha=1.0, cutmix_alpha=1.0, prob=prob, switch_prob=switch_prob)
    # Row 0 is black, row 1 white: CutMix leaves only 0s and 1s, MixUp one grey level.
    images = np.concatenate([np.zeros((1, 32, 32, 3)), np.ones((1, 32, 32, 3))]).astype("f")

    @tf.function
    def run(seeds):
        def one(seed):
            out, labels = mix(images, EYE[:2, :2], seed)
            binary = tf.reduce_all((out[0] == 0.0) | (out[0] == 1.0))
            return tf.stack([labels[0, 0], tf.cast(binary, tf.float32)])

        return tf.map_fn(one, seeds, fn_output_signature=tf.float32)

    seeds = tf.stack(
        [tf.range(count, dtype=tf.int64), tf.fill([count], tf.constant(9, tf.int64))], 1
    )
    weight, binary = run(seeds).numpy().T
    mixed = weight < 1.0
    # Within 4 standard errors of a binomial rate.
    assert abs(mixed.mean() - prob) < 4 * np.sqrt(prob * (1 - prob) / count)
    cutmix = binary[mixed] == 1.0
    sigma = np.sqrt(switch_prob * (1 - switch_prob) / mixed.sum())
    assert abs(cutmix.mean() - switch_prob) < 4 * sigma


def test_cutmix_box_centre_is_uniform_over_the_pixels():
    # timm draws cy, cx with np.random.randint(0, size). With lam = 0.75 on 16 px the sides
    # are 8, never clipped at both ends, so the centre is read back from the mask exactly.
    count, size = 3200, 16

    @tf.function
    def masks(seeds):
        return tf.map_fn(
            lambda s: cutmix_mask(size, size, 0.75, s)[0][..., 0],
            seeds,
            fn_output_signature=tf.float32,
        )

    seeds = tf.stack(
        [tf.range(count, dtype=tf.int64), tf.fill([count], tf.constant(3, tf.int64))], 1
    )
    inside = masks(seeds).numpy() > 0
    for axis in (2, 1):  # rows covered (-> cy), columns covered (-> cx)
        covered = inside.any(axis=axis)
        low = covered.argmax(axis=1)
        high = size - covered[:, ::-1].argmax(axis=1)
        centre = np.where(low > 0, low + 4, high - 4)
        counts = np.bincount(centre, minlength=size)
        assert len(counts) == size and stats.chisquare(counts).pvalue > 0.001
