"""layer_decay multipliers against timm 1.0.31's own numbers (tools/timm_layer_decay_table.py).

Each tfimm variable is matched to its timm parameter by tfimm's weight-name conversion,
plus the renames below where tfimm ports an older timm layout; the new head of
`build_classifier` stands for timm's classifier.
"""

import json
import pathlib
import re

import pytest
import tensorflow as tf
from tfimm.utils.timm import convert_tf_weight_name_to_pt_weight_name

import kerastricks  # noqa: F401
from kerastricks.models import build_classifier, create_backbone, layer_groups
from kerastricks.models._family_rules import DEPTH_RULES, FAMILY_RULES, NO_TIMM_MATCHER
from kerastricks.models.layer_decay import layer_decay_multipliers, layer_depths, lr_partition
from kerastricks.optim import spread_lrs

TABLE = json.loads(
    (pathlib.Path(__file__).parent / "data" / "timm_layer_decay_1.0.31.json").read_text()
)
DECAY = TABLE["layer_decay"]

# tfimm name (after tfimm's conversion) -> timm 1.0.31 name, where the two differ.
TIMM_RENAMES = {
    "convnext": [(r"^(stages\.\d+\.blocks\.\d+)\.weight$", r"\1.gamma")],  # layer scale
    "swin": [(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m[1]) + 1}.downsample")],
    "pvt_v2": [
        (r"^patch_embed1\.", "patch_embed."),
        (r"^patch_embed(\d+)\.", lambda m: f"stages.{int(m[1]) - 1}.downsample."),
        (r"^block(\d+)\.", lambda m: f"stages.{int(m[1]) - 1}.blocks."),
        (r"^norm(\d+)\.", lambda m: f"stages.{int(m[1]) - 1}.norm."),
        (r"\.mlp\.dwconv\.dwconv\.", ".mlp.dwconv."),
    ],
}


def _timm_name(variable: tf.Variable, model_name: str) -> str:
    name = convert_tf_weight_name_to_pt_weight_name(variable.name)[0]
    for prefix, renames in TIMM_RENAMES.items():
        if model_name.startswith(prefix):
            for pattern, replacement in renames:
                name = re.sub(pattern, replacement, name)
    return name


def _expected_scale(variable: tf.Variable, model_name: str) -> tuple[str, float]:
    entry = TABLE["models"][model_name]
    if variable.name.startswith("head/"):
        classifier = [v for k, v in entry["lr_scale"].items() if k.startswith(entry["classifier"])]
        return "<classifier>", classifier[0]
    name = _timm_name(variable, model_name)
    return name, entry["lr_scale"][name]


def _assert_matches_timm(model: tf.keras.Model, model_name: str) -> None:
    lists, multipliers = layer_decay_multipliers(model, DECAY)
    assert len(lists) == len(multipliers)
    seen = set()
    for variables, multiplier in zip(lists, multipliers, strict=True):
        for variable in variables:
            name, expected = _expected_scale(variable, model_name)
            seen.add(name)
            assert multiplier == pytest.approx(expected, rel=1e-6), (variable.name, name)
    entry = TABLE["models"][model_name]
    backbone_params = {k for k in entry["lr_scale"] if not k.startswith(entry["classifier"])}
    assert backbone_params <= seen  # every timm parameter was compared
    trainable = [v.ref() for v in model.weights if v.trainable]
    listed = [v.ref() for variables in lists for v in variables]
    assert len(listed) == len(set(listed)) and set(listed) == set(trainable)


def _classifier(name: str, size: int) -> tf.keras.Model:
    return build_classifier(create_backbone(name, weights=None, input_size=size), 10)


@pytest.fixture(scope="module")
def vit_tiny() -> tf.keras.Model:
    return _classifier("vit_tiny_patch16_224", 32)


def test_table_is_timm_1_0_31_at_decay_0_75():
    assert TABLE["timm_version"] == "1.0.31"
    assert DECAY == 0.75
    resnet = TABLE["models"]["resnet18"]["lr_scale"]
    assert resnet["conv1.weight"] == pytest.approx(0.75**9)  # the 0.075 x stem


def test_every_family_has_depth_rules_or_a_reason():
    assert set(DEPTH_RULES) | set(NO_TIMM_MATCHER) == set(FAMILY_RULES)
    assert not set(DEPTH_RULES) & set(NO_TIMM_MATCHER)
    families = {"resnet", "vit", "efficientnet", "convnext", "resnetv2", "vgg", "vit_hybrid"}
    families |= {"cait", "swin", "pvt_v2", "mlp_mixer", "convmixer"}
    assert set(DEPTH_RULES) == families  # each has a model in the timm table


def test_resnet18_matches_timm_per_block():
    model = _classifier("resnet18", 32)
    _assert_matches_timm(model, "resnet18")
    assert len(layer_depths(model)) == 10  # stem, 8 blocks, head


def test_vit_tiny_matches_timm_final_norm_with_last_block(vit_tiny):
    model = vit_tiny
    _assert_matches_timm(model, "vit_tiny_patch16_224")
    depths = layer_depths(model)
    assert len(depths) == 14  # stem, 12 blocks (the last with the final norm), head
    assert {v.name.split("/", 1)[1] for v in depths[12]} >= {"norm/gamma:0", "norm/beta:0"}


def test_partition_gives_timm_or_group_lrs_from_fixed_lists(vit_tiny):
    model = vit_tiny
    groups = layer_groups(model)  # stem, blocks/0..11, neck, head
    partition = lr_partition(model, groups)
    assert len(partition.variables) == 15  # the neck (final norm) splits off block 11's depth
    _, timm_multipliers = layer_decay_multipliers(model, DECAY)
    decayed = partition.multipliers({"layer_decay": DECAY})
    assert decayed == [timm_multipliers[depth] for depth in partition.depth]
    sliced = partition.multipliers({"slice": [1e-5, 1e-3]})
    by_group = spread_lrs(len(groups), {"slice": [1e-5, 1e-3]})
    assert sliced == [by_group[index] for index in partition.group_index]
    assert partition.multipliers(None) == [1.0] * 15


def test_model_without_timm_matcher_keeps_group_decay():
    model = tf.keras.Sequential([tf.keras.layers.Dense(4), tf.keras.layers.Dense(2)])
    model.build((None, 3))
    assert layer_depths(model) is None
    lists, multipliers = layer_decay_multipliers(model, 0.5)
    assert multipliers == spread_lrs(len(layer_groups(model)), {"layer_decay": 0.5})
    partition = lr_partition(model, layer_groups(model))
    assert partition.depth is None
    assert partition.multipliers({"layer_decay": 0.5}) == multipliers


@pytest.mark.extended
@pytest.mark.parametrize(
    ("model_name", "size"),
    [
        ("efficientnet_b0", 32),
        ("convnext_tiny", 32),
        ("resnetv2_50x1_bitm", 64),
        ("vgg11_bn", 224),
        ("vit_tiny_r_s16_p8_224", 64),
        ("cait_xxs24_224", 32),
        ("swin_tiny_patch4_window7_224", 224),
        ("pvt_v2_b0", 64),
        ("mixer_s16_224", 32),
        ("convmixer_768_32", 32),
    ],
)
def test_other_families_match_timm(model_name, size):
    _assert_matches_timm(_classifier(model_name, size), model_name)


def test_a_run_config_with_layer_decay_gives_the_optimizer_timms_lrs(make_config):
    # train.lr_mult reaches the optimizer through the runner's own build path.
    from kerastricks.optim import get_lr_multipliers, set_lr_multipliers
    from kerastricks.train.build import build_parts, stage_multipliers
    from kerastricks.train.stages import plan_stages

    config = make_config(
        model={"backbone": "resnet18"},
        train={
            "lr_mult": {"slice": [1e-3, 1.0]},
            "stages": [
                {"epochs": 1, "image_size": 32, "lr": 1e-3},
                {"epochs": 1, "image_size": 32, "lr": 1e-3, "lr_mult": {"layer_decay": DECAY}},
            ],
        },
    )
    plans = plan_stages(config.train.stages, 64, 16, 1, 2, 1)
    parts = build_parts(config, plans, 10, 1.0)
    first = get_lr_multipliers(parts.optimizer)
    assert min(first) == pytest.approx(1e-3)  # stage 1: the slice over our groups
    set_lr_multipliers(parts.optimizer, stage_multipliers(config, plans[1].stage, parts.partition))
    multipliers = get_lr_multipliers(parts.optimizer)
    checked = 0
    for variables, multiplier in zip(parts.partition.variables, multipliers, strict=True):
        for variable in variables:
            _, expected = _expected_scale(variable, "resnet18")
            assert multiplier == pytest.approx(expected, rel=1e-6), variable.name
            checked += 1
    assert checked == len([v for v in parts.model.weights if v.trainable])
