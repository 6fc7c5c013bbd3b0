"""How each tfimm family splits into layer groups, and the docs page generated from it.

The rules follow timm's ``group_matcher(coarse=True)`` of each family: a stem, then one
group per stage (per block for isotropic transformers), then the layers after the last stage
(final norm / head convolution), which timm calls group 99999 and we call ``neck``. The new
head of `build_classifier` (or a tfimm classifier) comes last.

`DEPTH_RULES` are finer: timm's ``group_matcher(coarse=False)``, one depth per block, which
``lr_mult: {layer_decay: d}`` decays over (`kerastricks.models.layer_decay`).

After editing, regenerate the page (tests/models/test_groups.py checks it)::

    .venv/bin/python -c "from kerastricks.models._family_rules import write_doc; write_doc()"
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

STEM = "stem"
NECK = "neck"
HEAD = "head"


@dataclass(frozen=True)
class StageRule:
    """A regex on a top-level layer name (or model-level variable) that names its group.

    Args:
        pattern: regex with an optional named group ``i`` (the stage or block index).
        name: group name, formatted with ``i``.
        order: position of the group among the stages, from ``i``.
    """

    pattern: str
    name: str
    order: Callable[[int], float] = float

    def match(self, text: str) -> tuple[float, str] | None:
        found = re.match(self.pattern, text)
        if found is None:
            return None
        index = int(found.groupdict().get("i") or 0)
        return self.order(index), self.name.format(i=index)


def _after_blocks(index: int) -> float:
    return 1000.0 + index


def _poolformer_stage(index: int) -> float:
    # network/{odd} are downsampling layers: they open the next stage, as in timm's ConvNeXt.
    return float((index + 1) // 2)


_BLOCKS = StageRule(r"^blocks/(?P<i>\d+)$", "blocks/{i}")

FAMILY_RULES: dict[str, tuple[StageRule, ...]] = {
    "resnet": (StageRule(r"^layer(?P<i>\d+)/", "layer{i}"),),
    "efficientnet": (StageRule(r"^blocks\.(?P<i>\d+)\.", "blocks.{i}"),),
    "convnext": (StageRule(r"^stages/(?P<i>\d+)$", "stages/{i}"),),
    "resnetv2": (StageRule(r"^stages/(?P<i>\d+)/", "stages/{i}"),),
    "vgg": (StageRule(r"^features/(?P<i>\d+)$", "features/{i}"),),
    "vit": (_BLOCKS,),
    "vit_hybrid": (_BLOCKS,),
    "cait": (
        _BLOCKS,
        StageRule(r"^blocks_token_only/(?P<i>\d+)$", "blocks_token_only/{i}", _after_blocks),
    ),
    "swin": (StageRule(r"^layers/(?P<i>\d+)$", "layers/{i}"),),
    "pit": (StageRule(r"^transformers/(?P<i>\d+)/", "transformers/{i}"),),
    "pvt": (
        StageRule(r"^(patch_embed|block|pos_embed)(?P<i>\d+)", "stage{i}"),
        StageRule(r"^cls_token", "stage4", lambda index: 4.0),
    ),
    "pvt_v2": (StageRule(r"^(patch_embed|block|norm)(?P<i>\d+)", "stage{i}"),),
    "poolformer": (StageRule(r"^network/(?P<i>\d+)", "network/{i}", _poolformer_stage),),
    "mlp_mixer": (_BLOCKS,),
    "convmixer": (_BLOCKS,),
}

# timm's `param_groups_layer_decay` ranks parameters by `group_matcher(coarse=False)`: a key
# per parameter name (stem, then block indices), keys sorted, one depth per key, except that a
# key ending in this marker (timm's MATCH_PREV_GROUP) shares the depth of the key before it.
JOIN_PREVIOUS = 99999


@dataclass(frozen=True)
class DepthRule:
    """A regex on a timm parameter name (as tfimm converts it) that gives its depth key.

    The key is ``(rank, first index + shift, other indices..., *suffix)``; names that no rule
    of the family matches sort last, with the classifier, as in timm.

    Args:
        pattern: regex; its groups are the block indices.
        rank: 0 for the stem, 1 for blocks (the matcher's position in timm's dict).
        suffix: appended to the key: ``(0,)`` files a downsample layer with its stage's
            first block, ``(JOIN_PREVIOUS,)`` a final norm with the last block.
        shift: added to the first index, or a function of all the model's names that gives
            it (where tfimm ports an older timm layout, or timm's matcher counts blocks).
    """

    pattern: str
    rank: int
    suffix: tuple[int, ...] = ()
    shift: int | Callable[[list[str]], int] = 0

    def key(self, name: str, names: list[str]) -> tuple[float, ...] | None:
        found = re.match(self.pattern, name)
        if found is None:
            return None
        indices = [int(index) for index in found.groups()]
        if indices:
            shift = self.shift(names) if callable(self.shift) else self.shift
            indices[0] += shift
        return tuple(float(part) for part in (self.rank, *indices, *self.suffix))


def _cait_token_only_shift(names: list[str]) -> int:
    # CaiT's class-attention blocks share the depth of the last self-attention blocks.
    def count(prefix: str) -> int:
        return len({name.split(".")[1] for name in names if name.startswith(prefix)})

    return count("blocks.") - count("blocks_token_only.")


_FINAL_NORM = DepthRule(r"^norm\.", 1, (JOIN_PREVIOUS,))
_EACH_BLOCK = DepthRule(r"^blocks\.(\d+)\.", 1)
_VIT_DEPTHS = (
    DepthRule(r"^(?:cls_token|reg_token|pos_embed|patch_embed|norm_pre)", 0),
    _EACH_BLOCK,
    _FINAL_NORM,
)

# Families where `layer_decay` decays over the layer groups, `d ** (n - 1 - g)` for group g,
# and why. timm falls back to chunks of 12 parameters in definition order for models without
# a group_matcher, which says nothing about depth.
NO_TIMM_MATCHER = {
    "pit": "timm's PiT has no `group_matcher`",
    "pvt": "timm has no PVT v1",
    "poolformer": "timm's PoolFormer (a MetaFormer) has no `group_matcher`",
}

# Our own transcription of timm 1.0.31's group_matcher(coarse=False) for each family that
# has one, on the names tfimm's weight conversion gives; tests/models/
# test_layer_decay_timm.py checks every parameter's LR against timm's own numbers.
# pit, poolformer and pvt are missing: timm has no group_matcher for them.
DEPTH_RULES: dict[str, tuple[DepthRule, ...]] = {
    "resnet": (
        DepthRule(r"^(?:conv1|bn1)\.", 0),
        DepthRule(r"^layer(\d+)\.(\d+)\.", 1),
    ),
    "efficientnet": (
        DepthRule(r"^(?:conv_stem|bn1)\.", 0),
        DepthRule(r"^blocks\.(\d+)\.(\d+)\.", 1),
        DepthRule(r"^(?:conv_head|bn2)\.", 1, (JOIN_PREVIOUS,)),
    ),
    "convnext": (
        DepthRule(r"^stem\.", 0),
        DepthRule(r"^stages\.(\d+)\.downsample\.", 1, (0,)),
        DepthRule(r"^stages\.(\d+)\.blocks\.(\d+)\.", 1),
        DepthRule(r"^norm_pre\.", 1, (JOIN_PREVIOUS,)),
    ),
    "resnetv2": (
        DepthRule(r"^stem\.", 0),
        DepthRule(r"^stages\.(\d+)\.blocks\.(\d+)\.", 1),
        _FINAL_NORM,
    ),
    "vgg": (
        DepthRule(r"^features\.0\.", 0),
        DepthRule(r"^features\.(\d+)\.", 1),
    ),
    "vit": _VIT_DEPTHS,
    "vit_hybrid": _VIT_DEPTHS,
    "cait": (
        DepthRule(r"^(?:cls_token|pos_embed|patch_embed)", 0),
        _EACH_BLOCK,
        DepthRule(r"^blocks_token_only\.(\d+)\.", 1, shift=_cait_token_only_shift),
        _FINAL_NORM,
    ),
    "swin": (
        DepthRule(r"^patch_embed\.", 0),
        # tfimm ends stage i with its patch merging; timm 1.0.31 opens stage i + 1 with it.
        DepthRule(r"^layers\.(\d+)\.downsample\.", 1, (0,), shift=1),
        DepthRule(r"^layers\.(\d+)\.blocks\.(\d+)\.", 1),
        _FINAL_NORM,
    ),
    "pvt_v2": (
        # tfimm keeps the old names patch_embed{k}, block{k}, norm{k}; timm 1.0.31 has
        # patch_embed and stages.{k - 1}, one depth per stage.
        DepthRule(r"^patch_embed1\.", 0),
        DepthRule(r"^(?:patch_embed|block|norm)(\d+)\.", 1, shift=-1),
    ),
    "mlp_mixer": (
        DepthRule(r"^stem\.", 0),
        _EACH_BLOCK,
        _FINAL_NORM,
    ),
    "convmixer": (
        DepthRule(r"^stem\.", 0),
        _EACH_BLOCK,
    ),
}

# One small model per family: the docs show their groups, a slow test builds them all.
FAMILY_EXAMPLES: dict[str, str] = {
    "resnet": "resnet18",
    "efficientnet": "efficientnet_b0",
    "convnext": "convnext_tiny",
    "resnetv2": "resnetv2_50x1_bitm",
    "vgg": "vgg11_bn",
    "vit": "vit_tiny_patch16_224",
    "vit_hybrid": "vit_tiny_r_s16_p8_224",
    "cait": "cait_xxs24_224",
    "swin": "swin_tiny_patch4_window7_224",
    "pit": "pit_ti_224",
    "pvt": "pvt_tiny",
    "pvt_v2": "pvt_v2_b0",
    "poolformer": "poolformer_s12",
    "mlp_mixer": "mixer_s16_224",
    "convmixer": "convmixer_768_32",
}


def family_of(model: object) -> str | None:
    """The tfimm family (architecture module name) of a model, None when not tfimm."""
    module = type(model).__module__
    if not module.startswith("tfimm.architectures."):
        return None
    family = module.rsplit(".", 1)[-1]
    return family if family in FAMILY_RULES else None


def render_doc() -> str:
    """The text of docs/layer_groups.md, generated from `FAMILY_RULES`."""
    lines = [
        "# Layer groups of tfimm backbones",
        "",
        "<!-- Generated by kerastricks.models._family_rules.write_doc(); tests/models/",
        "     test_groups.py fails when this file and the rules disagree. -->",
        "",
        "`kerastricks.models.layer_groups(model, n=None)` splits a model into ordered groups,",
        "input side first, for per-group learning rates (`lr_mult` as `slice` or a list;",
        "`layer_decay` follows timm's depths, see below) and gradual",
        "unfreezing (`kerastricks.callbacks.GradualUnfreeze`). The natural groups follow timm's",
        "`group_matcher(coarse=True)`: a `stem` (the layers before the first stage, and",
        "model-level variables such as `cls_token` and `pos_embed`), one group per stage (one",
        "per block for isotropic transformers), a `neck` (layers after the last stage: final",
        "norm, head convolution), then the `head` (the new head of `build_classifier`, or a",
        "tfimm classifier). Groups without variables are left out.",
        "",
        "With `n` given, neighbouring backbone groups are merged (the head stays its own",
        "group), or the largest groups are split along their layers, until there are `n`.",
        "Any other Keras model (Sequential, functional, subclassed) is split evenly along its",
        "layers that own weights, the last one being the head (n=None: 3 groups, as fastai's",
        "`cnn_learner` had).",
        "",
        "Stage rules match tfimm's top-level layer names (timm parameter names).",
        "",
        "| family (tfimm module) | example | stage rule: regex -> group |",
        "| --- | --- | --- |",
    ]
    for family, rules in FAMILY_RULES.items():
        # A '|' inside a regex would end the Markdown table cell.
        described = "; ".join(
            f"`{rule.pattern}` -> `{rule.name}`".replace("|", "\\|") for rule in rules
        )
        lines.append(f"| {family} | `{FAMILY_EXAMPLES[family]}` | {described} |")
    return "\n".join(lines + _render_depth_section())


def _describe_depth(rule: DepthRule) -> str:
    if rule.rank == 0:
        target = "stem"
    else:
        indices = ["i", "j"][: re.compile(rule.pattern).groups]
        if indices and callable(rule.shift):
            indices[0] += " + blocks - token-only blocks"
        elif indices and rule.shift:
            indices[0] += f" {'+' if rule.shift > 0 else '-'} {abs(rule.shift)}"
        if rule.suffix == (JOIN_PREVIOUS,):
            return f"`{rule.pattern}` -> the depth before".replace("|", "\\|")
        target = f"({', '.join(indices + [str(part) for part in rule.suffix])})"
    # A '|' inside a regex would end the Markdown table cell.
    return f"`{rule.pattern}` -> {target}".replace("|", "\\|")


def _render_depth_section() -> list[str]:
    lines = [
        "",
        "## Layer-wise LR decay (`lr_mult: {layer_decay: d}`)",
        "",
        "A `layer_decay` spec does not decay over the groups above: every variable gets the LR",
        "that timm's `param_groups_layer_decay` gives the same parameter of the same timm model",
        "(`kerastricks.models.layer_decay`). timm ranks parameters by",
        "`group_matcher(coarse=False)`: one depth for the stem, one per block, a final norm",
        "or head convolution with the last block, and the classifier (here the new head, and",
        "whatever no rule matches) last; depth `k` of `n` trains at `d ** (n - 1 - k)` times",
        "the head's LR. On `resnet18` that is 10 depths (stem at `0.75 ** 9` = 0.075 x), on",
        "`vit_tiny_patch16_224` 14. tests/models/test_layer_decay_timm.py checks every",
        "parameter against timm 1.0.31's own numbers (tools/timm_layer_decay_table.py).",
        "",
        "Under a staged run the optimizer keeps one set of variable lists, each the part of",
        "one layer group at one depth (`lr_partition`), so that a stage's `slice` or list",
        "spec still gives per-group LRs and a `layer_decay` spec timm's per-depth ones.",
        "",
        "The rules below match the timm parameter names that tfimm's weight conversion gives;",
        "a key `(i, j)` is a block's position (stage, block); keys sort in order, one depth",
        "each, so `(i, 0)` puts a downsampling layer at its stage's first block; names no rule",
        "matches train with the head.",
        "",
        "| family (tfimm module) | depth rule: regex -> key |",
        "| --- | --- |",
    ]
    for family in FAMILY_RULES:
        if family in DEPTH_RULES:
            described = "; ".join(_describe_depth(rule) for rule in DEPTH_RULES[family])
        else:
            described = f"{NO_TIMM_MATCHER[family]}: over the layer groups above"
        lines.append(f"| {family} | {described} |")
    lines.append("")
    return lines


def write_doc(path: str = "docs/layer_groups.md") -> None:
    """Writes `render_doc()` to the docs page (run from the repository root)."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(render_doc())
