"""Mutation check: break one trick at a time and see that a test fails (`make mutants`).

Each mutant is a small text replacement in a trick module (a flipped comparison, a dropped
term, a wrong partner row) together with the fast tests that should catch it. The script
copies the repository to a private temporary folder (the working tree by default, or a
commit with `--rev`), checks that every mutant's snippet occurs exactly once there (a
refactor makes the check fail loudly instead of testing nothing), runs the mapped tests
once unmutated (they must pass), then for each mutant: applies it, runs its tests, restores
the file. The tree you work in is never modified.

A mutant is killed when its tests fail, survives when they pass. The exit code is non-zero
when a mutant survives that `KNOWN_SURVIVORS` does not list with a reason, when a listed
survivor is now killed (remove it from the list), or on any error.

    python tools/mutants.py               # all mutants, 2 at a time
    python tools/mutants.py --rev HEAD    # what is committed
    python tools/mutants.py --fast        # without the end-to-end (resume) mutants
    python tools/mutants.py -k lamb -k tta --jobs 1
    python tools/mutants.py --list
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 900


class Mutant(NamedTuple):
    """One small break of a trick and the tests that must notice it."""

    name: str
    file: str
    original: str
    replacement: str
    description: str
    tests: tuple[str, ...]
    slow: bool = False  # end-to-end tests: scheduled first, so that they overlap the rest


MIX = "kerastricks/data/augment/mix.py"
AUG = "tests/data/test_augment.py::"
MIX_TESTS = (
    AUG + "test_mixup_cutmix_labels_sum_to_one_and_match_pixels",
    AUG + "test_mixup_cutmix_smoothing_and_prob",
    "tests/data/test_mix.py",
)
SCHED_TESTS = ("tests/test_schedules.py",)
MULT = "tests/optim/test_lr_multipliers.py::"
MULT_TESTS = (
    MULT + "test_sgd_moves_each_group_by_multiplier_times_gradient",
    MULT + "test_wrapped_matches_unwrapped_optimizer_with_lr_times_multiplier",
    MULT + "test_adamw_decay_scales_with_multiplier",
    MULT + "test_momentum_sgd_scales_the_whole_step_when_multipliers_change",
    MULT + "test_cheap_learning_rate_path_only_where_it_is_exact",
)
TFA = "tests/optim/test_tfa_optimizers.py::"
LOOKAHEAD_TESTS = (
    TFA + "test_lookahead_syncs_every_sync_period",
    TFA + "test_lookahead_slow_step_size_sets_how_far_the_slow_weights_move",
    TFA + "test_ranger_with_multiplier_matches_numpy_with_scaled_lr",
)
RADAM_TESTS = (
    TFA + "test_rectified_adam_matches_numpy_rule_step_by_step",
    TFA + "test_rectified_adam_switches_at_the_step_sma_crosses_sma_threshold",
    TFA + "test_rectified_adam_rectifies_when_sma_equals_the_threshold",
)
LAMB_TESTS = (
    TFA + "test_lamb_matches_numpy_rule",
    TFA + "test_lamb_trust_ratio_is_computed_per_variable",
    TFA + "test_lamb_adapted_step_length_is_lr_times_weight_norm",
    TFA + "test_lamb_zero_norms_use_a_trust_ratio_of_one",
    TFA + "test_lamb_from_create_optimizer_model_keeps_1d_variables_out_of_decay_and_trust_ratio",
)
AVG = "tests/callbacks/test_averaging.py::"
ACC = "tests/optim/test_accumulate.py::"
TTA = "tests/eval/test_tta.py::"
PSEUDO = "tests/test_pseudo.py::"
FOLDS = "tests/tfrecords_tools/test_folds.py::"
# End to end (slow): a run killed by SIGKILL and resumed ends where an uninterrupted one does.
RESUME_TESTS = (
    "tests/train/test_resume.py::"
    "test_killed_runs_resume_to_the_uninterrupted_weights_slots_steps_and_lrs",
)

MUTANTS = (
    # --- MixUp / CutMix ---
    Mutant(
        "mix-partner",
        MIX,
        "mixed = images * tf.cast(lam, images.dtype) + tf.reverse(images, [0]) * tf.cast(\n"
        "            1.0 - lam, images.dtype\n"
        "        )\n"
        "        return mixed, labels * lam + tf.reverse(labels, [0]) * (1.0 - lam)",
        "mixed = images * tf.cast(lam, images.dtype) + tf.roll(images, 1, 0) * tf.cast(\n"
        "            1.0 - lam, images.dtype\n"
        "        )\n"
        "        return mixed, labels * lam + tf.roll(labels, 1, 0) * (1.0 - lam)",
        "MixUp partner of row i is row i-1 (images and labels alike), not row B-1-i",
        MIX_TESTS,
    ),
    Mutant(
        "mix-labels",
        MIX,
        "1.0 - lam, images.dtype\n"
        "        )\n"
        "        return mixed, labels * lam + tf.reverse(labels, [0]) * (1.0 - lam)",
        "1.0 - lam, images.dtype\n        )\n        return mixed, labels",
        "MixUp mixes the images but leaves the labels unmixed",
        MIX_TESTS,
    ),
    Mutant(
        "cutmix-area",
        MIX,
        "lam = 1.0 - area",
        "lam = lam + 0.0 * area",
        "CutMix label weight is the drawn lambda, not the pasted box's area",
        MIX_TESTS,
    ),
    Mutant(
        "cutmix-box",
        MIX,
        "(rows < y1)",
        "(rows <= y1)",
        "CutMix pastes one row more than the box whose area weights the labels",
        MIX_TESTS,
    ),
    Mutant(
        "mix-prob",
        MIX,
        "draws[0] < self.prob,",
        "draws[0] < self.prob**2,",
        "a batch is mixed with probability `prob**2` instead of `prob`",
        MIX_TESTS,
    ),
    Mutant(
        "mix-switch",
        MIX,
        "return draw < self.switch_prob",
        "return draw >= self.switch_prob",
        "CutMix is chosen with probability 1 - switch_prob",
        MIX_TESTS,
    ),
    Mutant(
        "mix-beta",
        MIX,
        "alpha=alpha, dtype=tf.float64",
        "alpha=2.0 * alpha, dtype=tf.float64",
        "lambda ~ Beta(2 alpha, 2 alpha): right mean, too small a variance",
        MIX_TESTS,
    ),
    # --- stored image copies ---
    Mutant(
        "copies-cover",
        "kerastricks/data/decode.py",
        "covers = tf.reduce_all(crop_hws >= tf.constant(target_hw, tf.int32), axis=1)",
        "covers = tf.reduce_any(crop_hws >= tf.constant(target_hw, tf.int32), axis=1)",
        "a copy is chosen when its crop covers the output on one side only",
        ("tests/data/test_copies.py",),
    ),
    # --- schedules ---
    Mutant(
        "sched-cos",
        "kerastricks/schedules/annealing.py",
        "return end + (start - end) * half * half",
        "return end + (start - end) * half",
        "cosine annealing uses cos(pi pct / 2) instead of its square",
        SCHED_TESTS,
    ),
    Mutant(
        "sched-onecycle-ends",
        "kerastricks/schedules/piecewise.py",
        "return [0.0, pct * steps - 1.0, steps - 1.0]",
        "return [0.0, pct * steps, steps - 1.0]",
        "OneCycle's warm-up ends one step late (PyTorch ends it at pct * total - 1)",
        SCHED_TESTS,
    ),
    Mutant(
        "sched-cyclical",
        "kerastricks/schedules/cyclical.py",
        "return 1.0 / 2.0 ** (x - 1.0)",
        "return 1.0 / 2.0**x",
        "triangular2 halves the amplitude already in the first cycle",
        SCHED_TESTS,
    ),
    # --- LR multipliers and discriminative LRs ---
    Mutant(
        "mult-rescale",
        "kerastricks/optim/multipliers.py",
        "variable.assign_add((multiplier - 1.0) * (variable - before))",
        "variable.assign_add(0.0 * (multiplier - 1.0) * (variable - before))",
        "optimizers off the cheap path (momentum SGD) ignore the multiplier",
        MULT_TESTS,
    ),
    Mutant(
        "mult-decay",
        "kerastricks/optim/multipliers.py",
        "lr = tf.cast(self.learning_rate, variable.dtype)",
        "lr = tf.cast(_base_learning_rate_property(self).fget(self), variable.dtype)",
        "a grouped variable's decoupled weight decay is not scaled by its multiplier",
        MULT_TESTS,
    ),
    Mutant(
        "mult-cheap-path",
        "kerastricks/optim/multipliers.py",
        'in _LR_LINEAR_WITHOUT_MOMENTUM and not getattr(optimizer, "momentum", 0)',
        "in _LR_LINEAR_WITHOUT_MOMENTUM",
        "momentum SGD scales its LR (which its momentum buffer keeps) instead of its step",
        MULT_TESTS,
    ),
    Mutant(
        "spread-layer-decay",
        "kerastricks/optim/spread.py",
        "return [decay ** (n_groups - 1 - i) for i in range(n_groups)]",
        "return [decay ** (n_groups - i) for i in range(n_groups)]",
        "layer_decay gives the head d instead of 1 (every group one factor too many)",
        ("tests/optim/test_spread_lrs.py",),
    ),
    Mutant(
        "spread-slice",
        "kerastricks/optim/spread.py",
        "return [ratio ** (1.0 - i / (n_groups - 1)) for i in range(n_groups)]",
        "return [ratio ** (i / (n_groups - 1)) for i in range(n_groups)]",
        "slice(lo, hi) gives the head lo and the first group hi",
        ("tests/optim/test_spread_lrs.py",),
    ),
    Mutant(
        "layer-decay-final-norm",
        "kerastricks/models/_family_rules.py",
        '_FINAL_NORM = DepthRule(r"^norm\\.", 1, (JOIN_PREVIOUS,))',
        '_FINAL_NORM = DepthRule(r"^norm\\.", 1)',
        "a ViT's final norm gets a depth of its own: every block one factor of d too many",
        ("tests/models/test_layer_decay_timm.py",),
    ),
    Mutant(
        "layer-decay-per-stage",
        "kerastricks/models/_family_rules.py",
        'DepthRule(r"^layer(\\d+)\\.(\\d+)\\.", 1),',
        'DepthRule(r"^layer(\\d+)\\.", 1),',
        "ResNet layer decay per stage, not per block as timm's",
        ("tests/models/test_layer_decay_timm.py",),
    ),
    # --- Lookahead ---
    Mutant(
        "lookahead-period",
        "kerastricks/optim/lookahead.py",
        "local_step = self.iterations + 1",
        "local_step = self.iterations",
        "Lookahead synchronises one step early (after steps k-1, 2k-1, ...)",
        LOOKAHEAD_TESTS,
    ),
    Mutant(
        "lookahead-reset",
        "kerastricks/optim/lookahead.py",
        "return _assign(variable, slow)",
        "return tf.no_op()",
        "the fast weights are not reset to the slow ones at a synchronisation",
        LOOKAHEAD_TESTS,
    ),
    Mutant(
        "lookahead-alpha",
        "kerastricks/optim/lookahead.py",
        "alpha = tf.cast(self.slow_step_size, variable.dtype)",
        "alpha = tf.cast(0.5, variable.dtype)",
        "slow_step_size is ignored (always 0.5, the default)",
        LOOKAHEAD_TESTS,
    ),
    # --- RAdam ---
    Mutant(
        "radam-threshold",
        "kerastricks/optim/radam.py",
        "step = tf.where(sma_t >= tf.cast(self.sma_threshold, dtype), rectified, m_corrected)",
        "step = tf.where(sma_t > tf.cast(self.sma_threshold, dtype), rectified, m_corrected)",
        "RAdam rectifies only when sma_t > sma_threshold (tfa: >=)",
        RADAM_TESTS,
    ),
    Mutant(
        "radam-rt",
        "kerastricks/optim/radam.py",
        "* sma_inf / sma_t",
        "* sma_t / sma_inf",
        "the rectification term r_t has its last factor upside down",
        RADAM_TESTS,
    ),
    # --- LAMB ---
    Mutant(
        "lamb-ratio-decay",
        "kerastricks/optim/lamb.py",
        "s_norm = tf.norm(step)",
        "s_norm = tf.norm(m_corrected / (tf.sqrt(v_corrected) + tf.cast(self.epsilon, dtype)))",
        "the trust ratio's step norm leaves out the weight-decay term",
        LAMB_TESTS,
    ),
    Mutant(
        "lamb-exclusion",
        "kerastricks/optim/lamb.py",
        "if self._use_layer_adaptation(variable):",
        "if True:",
        "exclude_from_layer_adaptation (and the decay exclusions) are ignored",
        LAMB_TESTS,
    ),
    Mutant(
        "lamb-zero-guard",
        "kerastricks/optim/lamb.py",
        "safe = tf.logical_and(w_norm > 0, s_norm > 0)",
        "safe = s_norm > 0",
        "a zero-norm variable gets a trust ratio of 0 (never moves) instead of 1",
        LAMB_TESTS,
    ),
    # --- EMA / SWA ---
    Mutant(
        "swa-mean",
        "kerastricks/callbacks/averaging.py",
        "average.assign(average + (value - average) / tf.cast(n, average.dtype))",
        "average.assign(average + (value - average) / tf.cast(n + 1.0, average.dtype))",
        "SWA's running mean divides by n + 1",
        (
            AVG + "test_swa_is_the_mean_of_epoch_weights_and_survives_a_checkpoint",
            AVG + "test_swa_recomputes_bn_for_the_average",
        ),
    ),
    Mutant(
        "swa-start",
        "kerastricks/callbacks/averaging.py",
        "return self.swa_epoch_start - 1",
        "return self.swa_epoch_start",
        "an integer swa_epoch_start starts averaging one epoch late",
        (
            AVG + "test_swa_start_follows_lightning",
            AVG + "test_swa_is_the_mean_of_epoch_weights_and_survives_a_checkpoint",
        ),
    ),
    Mutant(
        "ema-validation",
        "kerastricks/callbacks/averaging.py",
        "self._validation = self.averaged_weights()",
        "self._validation = contextlib.nullcontext()",
        "validation runs on the raw weights, not the EMA",
        (AVG + "test_ema_equals_numpy_average_and_validation_uses_it",),
    ),
    Mutant(
        "update-bn-variance",
        "kerastricks/callbacks/averaging.py",
        "layer.moving_variance.assign(sums[2 * index + 1] / count)",
        "layer.moving_variance.assign(sums[2 * index + 1] / max(count - 1, 1))",
        "update_bn divides the summed batch variances by count - 1",
        (
            AVG + "test_update_bn_sets_the_data_mean_and_touches_nothing_else",
            AVG + "test_update_bn_variance_is_biased_on_2d_and_unbiased_like_torch_on_conv",
        ),
    ),
    # --- gradient accumulation ---
    Mutant(
        "accumulate-mean",
        "kerastricks/optim/accumulate.py",
        "grads = [s / tf.cast(steps, s.dtype) for s in sums]",
        "grads = sums",
        "accumulation applies the sum of the micro-batch gradients, not their mean",
        (ACC + "test_accumulated_sgd_update_equals_the_large_batch_update",),
    ),
    Mutant(
        "accumulate-last",
        "kerastricks/optim/accumulate.py",
        "lambda i, _: i < steps,",
        "lambda i, _: i < steps - 1,",
        "the last micro-batch's gradients are left out",
        (ACC + "test_accumulated_sgd_update_equals_the_large_batch_update",),
    ),
    # --- TTA ---
    Mutant(
        "tta-beta",
        "kerastricks/eval/tta.py",
        "return (1.0 - beta) * mean_augmented + beta * plain",
        "return beta * mean_augmented + (1.0 - beta) * plain",
        "beta weights the augmented passes instead of the plain one",
        ("tests/eval/test_tta.py",),
    ),
    Mutant(
        "tta-mean",
        "kerastricks/eval/tta.py",
        "return (plain + mean_augmented * len(augmented)) / (len(augmented) + 1)",
        "return (plain + mean_augmented) / 2",
        "beta=None averages plain with the augmented mean, not every pass equally",
        ("tests/eval/test_tta.py",),
    ),
    Mutant(
        "tta-plain-pass",
        "kerastricks/eval/tta.py",
        'names = list(dict.fromkeys(["identity", *transforms]))',
        'names = list(dict.fromkeys([*transforms, "identity"]))',
        "predict_tta takes the first transform's pass as the plain one",
        ("tests/eval/test_tta.py",),
    ),
    # --- pseudo-label selection ---
    Mutant(
        "pseudo-threshold",
        "kerastricks/pseudo_sets.py",
        "return np.flatnonzero(confidence >= threshold)",
        "return np.flatnonzero(confidence > threshold)",
        "a sample whose top probability equals the threshold is not selected",
        (PSEUDO + "test_threshold_keeps_confident_rows",),
    ),
    Mutant(
        "pseudo-top-k",
        "kerastricks/pseudo_sets.py",
        'order = members[np.argsort(-confidence[members], kind="stable")]',
        'order = members[np.argsort(confidence[members], kind="stable")]',
        "top_k keeps the least confident samples of each class",
        (PSEUDO + "test_top_k_per_class_keeps_classes_balanced",),
    ),
    # --- fold assignment ---
    Mutant(
        "folds-seed",
        "tfrecords_tools/folds.py",
        "splitter = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)",
        "splitter = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=0)",
        "the fold seed is ignored",
        (FOLDS + "test_folds_are_seeded",),
    ),
    Mutant(
        "folds-groups",
        "tfrecords_tools/folds.py",
        "splitter = StratifiedGroupKFold(n_splits=num_folds, shuffle=True, random_state=seed)",
        "splitter = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)",
        "groups are ignored: a patient's images can land in several folds",
        (FOLDS + "test_a_group_is_never_split_across_folds",),
    ),
    Mutant(
        "folds-strata",
        "tfrecords_tools/folds.py",
        "return keys.where(counts >= num_folds, _RARE).to_numpy()",
        "return keys.where(counts >= num_folds * 100, _RARE).to_numpy()",
        "multi-label folds are not stratified on the label set (every set pooled)",
        (FOLDS + "test_multi_label_stratifies_on_the_label_set",),
    ),
    # --- resume ---
    Mutant(
        "resume-finished",
        "kerastricks/train/resume.py",
        "finished = epochs_done is None or end <= epochs_done",
        "finished = epochs_done is None or end < epochs_done",
        "a stage that has just finished counts as in progress: its epochs may grow on resume",
        ("tests/train/test_resume_config.py",),
    ),
    Mutant(
        "resume-slots",
        "kerastricks/train/checkpoints.py",
        "status.assert_existing_objects_matched()",
        "status.assert_existing_objects_matched()\n"
        "        for v in self._checkpoint.optimizer.variables:\n"
        "            if v.name.startswith(('m/', 'v/')):\n"
        "                v.assign(tf.zeros_like(v))",
        "a resumed run restarts Adam's moment slots from zero (weights and step counter kept)",
        RESUME_TESTS,
        slow=True,
    ),
    Mutant(
        "resume-data-order",
        "kerastricks/train/runner.py",
        "if data.deterministic and consumed:",
        "if data.deterministic and consumed < 0:",
        "a stage resumed mid-way restarts its input stream instead of skipping what it trained on",
        RESUME_TESTS,
        slow=True,
    ),
)

# Mutants that no test kills, each with why that is harmless (or which test should change).
KNOWN_SURVIVORS: dict[str, str] = {}


def _tree_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    return [p for p in out.split("\0") if p and os.path.isfile(os.path.join(ROOT, p))]


def make_copy(dest: str, rev: str | None) -> None:
    """The working tree's files (tracked and untracked, not ignored), or commit `rev`."""
    os.makedirs(dest)
    if rev is not None:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", rev], cwd=ROOT, check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
        return
    for path in _tree_files():
        target = os.path.join(dest, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, path), target)


def check_snippets(tree: str, mutants: list[Mutant]) -> list[str]:
    """One line per mutant whose snippet is not in its file exactly once."""
    problems = []
    for m in mutants:
        path = os.path.join(tree, m.file)
        if not os.path.exists(path):
            problems.append(f"{m.name}: {m.file} does not exist")
            continue
        count = open(path, encoding="utf-8").read().count(m.original)
        if count != 1:
            problems.append(f"{m.name}: snippet occurs {count} times in {m.file}: {m.original!r}")
    return problems


def _env(tree: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = tree  # before the editable install of the working tree
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no stale .pyc of a mutated module
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def run_pytest(tree: str, tests: list[str], extra: list[str]) -> tuple[int, str, float]:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra]
    command += ["--rootdir", tree, "-c", os.path.join(tree, "pyproject.toml"), *tests]
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command, cwd=tree, env=_env(tree), capture_output=True, text=True, timeout=TIMEOUT_S
        )
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as error:
        code, output = -1, f"timed out after {TIMEOUT_S} s: {error.stdout or ''}"
    return code, output, time.perf_counter() - start


def check_imports(tree: str) -> None:
    code = "import kerastricks, tfrecords_tools as t; print(kerastricks.__file__, t.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tree, env=_env(tree), capture_output=True, text=True
    )
    files = out.stdout.split()
    if out.returncode or not files or not all(f.startswith(tree + os.sep) for f in files):
        raise SystemExit(f"mutants: the copy is not what gets imported: {out.stdout}{out.stderr}")


def run_mutant(tree: str, m: Mutant) -> tuple[str, float, str]:
    path = os.path.join(tree, m.file)
    with open(path, encoding="utf-8") as f:
        original = f.read()
    if original.count(m.original) != 1:
        return "error", 0.0, f"snippet not found once in {m.file}"
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(original.replace(m.original, m.replacement))
        code, output, seconds = run_pytest(tree, list(m.tests), ["-x"])
    finally:
        with open(path, "w", encoding="utf-8") as f:
            f.write(original)
    # pytest: 0 all passed, 1 a test failed, 2 a collection error (the mutant broke an import);
    # 3-5 internal, usage or nothing collected: the check itself is broken.
    status = {0: "survived", 1: "killed", 2: "killed", -1: "timeout"}.get(code, "error")
    return status, seconds, output


def _tests_column(tests: tuple[str, ...]) -> str:
    """`file.py` for a whole file, `file.py` x n for n of its tests."""
    counts: dict[str, int] = {}
    for test in tests:
        path, _, name = test.partition("::")
        counts[os.path.basename(path)] = counts.get(os.path.basename(path), 0) + (1 if name else 0)
    return ", ".join(f"{f} x{n}" if n else f for f, n in counts.items())


def _killer(output: str) -> str:
    """The test that failed (or errored on collection), from pytest's short summary."""
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split()[1].split("::")[-1].split(" - ")[0]
    return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", help="test this commit (default: the working tree as it is)")
    parser.add_argument("--jobs", "-j", type=int, default=2, help="mutants run at a time")
    parser.add_argument("-k", action="append", help="only mutants whose name contains this")
    parser.add_argument("--fast", action="store_true", help="leave out the end-to-end mutants")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies")
    args = parser.parse_args(argv)

    mutants = [m for m in MUTANTS if not args.k or any(k in m.name for k in args.k)]
    mutants = [m for m in mutants if not (args.fast and m.slow)]
    if args.list:
        for m in mutants:
            print(f"{m.name:20} {m.file}: {m.description}")
        return 0
    names = [m.name for m in MUTANTS]
    assert len(set(names)) == len(names), "mutant names must be unique"
    unknown = sorted(set(KNOWN_SURVIVORS) - set(names))
    assert not unknown, f"KNOWN_SURVIVORS names no mutant: {unknown}"
    start = time.perf_counter()
    work = tempfile.mkdtemp(prefix="kerastricks-mutants-")
    try:
        trees = [os.path.join(work, f"tree{i}") for i in range(max(1, args.jobs))]
        make_copy(trees[0], args.rev)
        for tree in trees[1:]:
            shutil.copytree(trees[0], tree)
        problems = check_snippets(trees[0], mutants)
        if problems:
            print("mutants: snippets not found exactly once (update MUTANTS):", file=sys.stderr)
            print("\n".join("  " + p for p in problems), file=sys.stderr)
            return 2
        check_imports(trees[0])

        # The unmutated runs are jobs of the same pool (slow ones first, so that the rest
        # overlaps them); every result is discarded if one of them fails.
        slow = list(dict.fromkeys(t for m in mutants if m.slow for t in m.tests))
        fast = [t for t in dict.fromkeys(t for m in mutants for t in m.tests) if t not in slow]
        baselines = [tests for tests in (slow, fast) if tests]
        source = f"commit {args.rev}" if args.rev else "the working tree"
        print(f"{len(mutants)} mutants of {source}, {len(trees)} at a time", flush=True)

        free: queue.Queue[str] = queue.Queue()
        for tree in trees:
            free.put(tree)
        lock = threading.Lock()
        broken = threading.Event()

        def baseline(tests: list[str]) -> tuple[str, float, str]:
            tree = free.get()
            try:
                code, output, seconds = run_pytest(tree, tests, [])
            finally:
                free.put(tree)
            status = "pass" if code == 0 else f"FAIL (exit {code})"
            if code != 0:
                broken.set()
            with lock:
                print(f"  {'unmutated':20} {status:9} {seconds:5.0f} s  {len(tests)} test ids")
            return status, seconds, output

        def mutant(m: Mutant) -> tuple[str, float, str]:
            if broken.is_set():
                return "skipped", 0.0, ""
            tree = free.get()
            try:
                result = run_mutant(tree, m)
            finally:
                free.put(tree)
            with lock:
                print(f"  {m.name:20} {result[0]:9} {result[1]:5.0f} s", flush=True)
            return result

        with ThreadPoolExecutor(max_workers=len(trees)) as pool:
            checks = [pool.submit(baseline, baselines[0])]
            futures = {m: pool.submit(mutant, m) for m in mutants if m.slow}
            checks += [pool.submit(baseline, tests) for tests in baselines[1:]]
            futures.update({m: pool.submit(mutant, m) for m in mutants if not m.slow})
            results = {m: futures[m].result() for m in mutants}
        for check in checks:
            status, _, output = check.result()
            if status != "pass":
                print(output[-6000:])
                print("mutants: the mapped tests fail unmutated; fix them (or MUTANTS) first.")
                return 2
    finally:
        if args.keep:
            print(f"copies kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print("| mutant | what it breaks | tests | result | s |")
    print("|---|---|---|---|---|")
    failures = []
    for m in mutants:
        status, seconds, output = results[m]
        result = status
        if status == "killed":
            result += f" by `{_killer(output)}`"
        elif status == "survived" and m.name in KNOWN_SURVIVORS:
            result += " (known)"
        row = [f"`{m.name}`", m.description, _tests_column(m.tests), result, f"{seconds:.0f}"]
        print("| " + " | ".join(row) + " |")
        if status == "survived" and m.name not in KNOWN_SURVIVORS:
            failures.append(f"{m.name} survived: {m.description} ({m.file})")
        elif status == "killed" and m.name in KNOWN_SURVIVORS:
            failures.append(f"{m.name} is now killed: remove it from KNOWN_SURVIVORS")
        elif status in ("error", "timeout"):
            failures.append(f"{m.name}: {status}\n{output[-3000:]}")
    killed = sum(results[m][0] in ("killed", "timeout") for m in mutants)
    survived = [m.name for m in mutants if results[m][0] == "survived"]
    print()
    print(f"{killed}/{len(mutants)} killed in {time.perf_counter() - start:.0f} s")
    for name in survived:
        reason = KNOWN_SURVIVORS.get(name, "NOT A KNOWN SURVIVOR")
        print(f"survived: {name}: {reason}")
    for failure in failures:
        print(f"mutants: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
