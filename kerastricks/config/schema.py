"""The run configuration schema: a tree of typed dataclasses with defaults.

tfimm's habit: typed configs, validated in one place (`kerastricks.config.validate`). A key
with a fixed set of names is typed `Literal[...]` of that set (`kerastricks.config.names`):
the schema says the choices, `validate` checks every such key from its type. Each class's
`Args:` section documents its keys; the README's YAML reference is generated from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from kerastricks.config.names import (
    DATASETS,
    DEFAULT_RESIZE,
    LOSSES,
    POOLINGS,
    PRECISIONS,
    PREDICT_TARGETS,
    PREDICT_WEIGHTS,
    PSEUDO_MODES,
    RECIPES,
    RESIZE_POLICIES,
    STRATEGIES,
    UNFREEZE,
)


@dataclass
class DataConfig:
    """Where the records are and how they are read.

    Args:
        records: folder with `manifest.json` (written by `tfrecords-tools write`), a glob of
            `.tfrec` files, or a list of files.
        prepare: name of a built-in example dataset (`digits`) to write into `records` when
            that folder has no manifest yet; null for your own data.
        keys: feature keys of foreign records, e.g. `{image: image_raw, label: target}`.
        num_classes: number of classes for foreign records (ours carry it in the manifest).
        val_fold: the fold that `kerastricks train` holds out for validation.
        resize: training resize policy: `squash`, `center_crop` or `random_resized_crop`.
        cache: cache decoded, resized images: false, `memory`, or a file path on fast disk.
        deterministic: a reproducible training input order (slower: parallel steps keep
            their order); null or false lets tf.data reorder elements for speed.
        extra_records: records that join every training fold and never validation
            (pseudo-labels, external data); they may carry `soft_label` and `weight`.
        unlabeled: records to pseudo-label.
        test: records to predict.
    """

    records: str = "data/digits/tfrecords"
    prepare: Literal[DATASETS] | None = None
    keys: dict[str, str] | None = None
    num_classes: int | None = None
    val_fold: int = 0
    resize: Literal[RESIZE_POLICIES] = DEFAULT_RESIZE
    cache: bool | str = False
    deterministic: bool | None = None
    extra_records: str | None = None
    unlabeled: str | None = None
    test: str | None = None


@dataclass
class HeadConfig:
    """The new head on top of the backbone (its input size is inferred).

    The one definition, for the YAML config and `kerastricks.models.build_classifier`.

    Args:
        pooling: `avg`, `max` or `avgmax` (timm: the mean of both) over the backbone's spatial
            features. Backbones that pool inside (a transformer's class token) ignore it;
            `avg` uses the backbone's own pooling, exactly as timm does.
        dropout: dropout rate before the logits (0.2: timm's EfficientNet default).
        hidden: size of an optional hidden Dense layer; null for none.
        hidden_activation: activation of the hidden layer (a Keras activation name).
    """

    pooling: Literal[POOLINGS] = "avg"
    dropout: float = 0.2
    hidden: int | None = None
    hidden_activation: str = "relu"


@dataclass
class ModelConfig:
    """The backbone and its head.

    Args:
        backbone: any tfimm model name (`kerastricks.models.list_backbones()`).
        weights: null (random init), `pretrained` (tfimm download: needs timm and PyTorch,
            which convert timm's weights), or a local file (`.weights.h5`, timm
            `.safetensors` / `.pth`) for offline use; a `.safetensors` file needs neither.
        head: the new head.
        calibrate_bn: before the first stage, set the BatchNorm statistics from training
            batches (null: only for random init, where the initial statistics make a frozen
            backbone's features explode).
        kwargs: extra keyword arguments for `tfimm.create_model`.
    """

    backbone: str = "efficientnet_b0"
    weights: str | None = None
    head: HeadConfig = field(default_factory=HeadConfig)
    calibrate_bn: bool | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimizerConfig:
    """The optimizer (`kerastricks.optim.list_optimizers()`).

    Args:
        name: `adamw` (default), `adam`, `sgd`, `rmsprop`, `radam`, `ranger`, ...
        weight_decay: decoupled weight decay; never applied to biases and norm weights.
        kwargs: extra keyword arguments for the optimizer.
    """

    name: str = "adamw"
    weight_decay: float = 0.05
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageConfig:
    """One stage of a run: epochs at one image size with one set of trainable groups.

    Args:
        epochs: epochs in this stage.
        image_size: square image size of this stage (the dataset is rebuilt per stage).
        unfreeze: `head` (backbone frozen, BatchNorm in inference mode), `all`, or the number
            of layer groups, counted from the head, that train.
        lr: the head's peak learning rate in this stage.
        schedule: `one_cycle`, `one_cycle_fastai`, `warmup_cosine`, `cyclical` or `constant`.
        schedule_kwargs: extra arguments of the schedule (e.g. `pct_start`, `div_factor`).
        lr_mult: per-group LR multipliers: `{slice: [lo, hi]}`, `{slice: [hi]}`,
            `{layer_decay: 0.75}` or a list; null uses `train.lr_mult`.
        batch_size: per-replica batch size of this stage; null uses `train.batch_size`.
        name: a label shown in progress bars and history.
    """

    epochs: int = 1
    image_size: int = 32
    unfreeze: Literal[UNFREEZE] | int = "all"
    lr: float = 1e-3
    schedule: str = "one_cycle"
    schedule_kwargs: dict[str, Any] = field(default_factory=dict)
    lr_mult: dict[str, Any] | list[float] | None = None
    batch_size: int | None = None
    name: str | None = None


@dataclass
class RecipeConfig:
    """A named recipe that expands into explicit stages (saved expanded in `config.yaml`).

    Args:
        name: `fine_tune` (fastai semantics) or `progressive` (growing image sizes).
        epochs: epochs after the frozen stage (`fine_tune`) or in all (`progressive`).
        image_size: the final image size.
        freeze_epochs: `fine_tune`: epochs with the backbone frozen.
        base_lr: `fine_tune`: the frozen stage's LR; the unfrozen stages use base_lr/2.
        lr_mult: `fine_tune`: the early groups train at base_lr/2/lr_mult (fastai: 100).
        fractions: `progressive`: image size per stage as a fraction of the final size.
        lr: `progressive`: peak LR of every stage.
    """

    name: Literal[RECIPES] = "fine_tune"
    epochs: int = 1
    image_size: int = 32
    freeze_epochs: int = 1
    base_lr: float = 2e-3
    lr_mult: float = 100.0
    fractions: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0])
    lr: float = 1e-3


@dataclass
class TrainConfig:
    """How the model is trained.

    Args:
        batch_size: per-replica batch size; the global batch is this times the replicas.
        optimizer: the optimizer.
        label_smoothing: label smoothing in the loss (fastai/timm default 0.1).
        loss: `auto` (cross-entropy for classes, MSE for regression), `focal`, or for
            regression `mse`, `mae`, `huber`.
        focal_gamma: focusing parameter of the focal loss.
        focal_alpha: class weight of the focal loss (null: off).
        lr_mult: default per-group LR multipliers of every stage.
        groups: number of layer groups (null: the backbone family's natural groups).
        stages: the stages, in order.
        recipe: a named recipe that replaces `stages` (`fine_tune`, `progressive`).
        strategy: `auto`, `tpu`, `mirrored`, `multi_worker`, `default`.
        precision: `auto` (bfloat16 on TPU, float16 on GPU, float32 on CPU), `float32`,
            `mixed_float16`, `mixed_bfloat16`.
        jit_compile: `auto` (on for TPU, off elsewhere), true or false.
        steps_per_execution: training steps per call into the device (matters on TPU).
        steps_per_epoch: cap on steps per epoch (null: one pass over the training folds).
        validation_steps: cap on validation steps (null: the whole held-out fold).
        scale_lr: multiply every LR by the number of replicas: Goyal et al.'s linear scaling
            rule with the config's LRs meant for one replica's batch (the global batch is
            `batch_size` x replicas, so 8 replicas train at 8 x `lr`); off by default.
        verbose: Keras progress bar mode (1 bar, 2 one line per epoch, 0 silent).
        explain: write a Grad-CAM grid of validation images at the end of every stage
            (`plots/gradcam_<stage>.png`).
        ema: EMA of the weights with this decay (e.g. 0.999; timm `ModelEmaV2`); validation,
            best and last weights are the averaged model's. Null: off.
        swa: stochastic weight averaging from this epoch (1-based int) or fraction of the run
            (Lightning semantics), BatchNorm statistics recomputed on training data. Null: off.
        accumulate_steps: gradient accumulation: each update averages this many micro-batches
            of `batch_size` (effective batch = batch_size x replicas x accumulate_steps).
    """

    batch_size: int = 64
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    label_smoothing: float = 0.1
    loss: Literal[LOSSES] = "auto"
    focal_gamma: float = 2.0
    focal_alpha: float | None = None
    lr_mult: dict[str, Any] | list[float] | None = None
    groups: int | None = None
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig()])
    recipe: RecipeConfig | None = None
    strategy: Literal[STRATEGIES] = "auto"
    precision: Literal[PRECISIONS] = "auto"
    jit_compile: str | bool = "auto"
    steps_per_execution: int = 1
    steps_per_epoch: int | None = None
    validation_steps: int | None = None
    scale_lr: bool = False
    verbose: int = 1
    explain: bool = False
    ema: float | None = None
    swa: int | float | None = None
    accumulate_steps: int = 1


@dataclass
class CVConfig:
    """K-fold cross-validation (`kerastricks cv`).

    Args:
        folds: the folds to train, each validated on itself; null trains every fold in the
            records.
    """

    folds: list[int] | None = None


@dataclass
class TTAConfig:
    """Test-time augmentation for validation and prediction.

    Args:
        transforms: named transforms averaged over (`identity`, `hflip`, `vflip`, `rot90`,
            `rot180`, `rot270`, `scale<F>` such as `scale1.15`).
        beta: fastai's blend: final = (1 - beta) * mean(augmented) + beta * plain; null
            averages every transform equally.
    """

    transforms: list[str] = field(default_factory=lambda: ["identity"])
    beta: float | None = None


@dataclass
class PredictConfig:
    """Prediction files.

    Args:
        weights: `best` or `last` checkpoint of each fold.
        id_column: name of the id column in the submission.
        target_column: name of the prediction column in the submission.
        target: what the submission holds: `class_name`, `index` or `probabilities`
            (one column per class).
        sample_submission: a CSV whose `id_column` gives the order of the submission's rows
            (every id must be predicted); null: the order of the CSV the test records were
            written from (their `folds.csv`), else the records' order.
    """

    weights: Literal[PREDICT_WEIGHTS] = "best"
    id_column: str = "id"
    target_column: str = "label"
    target: Literal[PREDICT_TARGETS] = "class_name"
    sample_submission: str | None = None


@dataclass
class PseudoConfig:
    """Pseudo-label rounds: confident predictions on `data.unlabeled` join the training folds.

    Args:
        rounds: number of rounds after the first (labelled-only) one.
        threshold: keep samples whose top probability is at least this (null: 0.95 when
            `top_k` is null too).
        top_k: instead of a threshold, keep the k most confident samples per class (give
            one of the two).
        soft: keep the predicted distribution (soft labels) instead of the argmax.
        weight: sample weight of pseudo-labelled samples.
        mode: `per_fold` (default): fold k's pseudo-labels come only from the previous
            round's fold-k model, which never saw fold k's labels, so the CV score stays
            honest. `pooled`: every fold trains on the whole ensemble's pseudo-labels; those
            models saw fold k's labels, so fold k's CV score is optimistic (it leaks).
    """

    rounds: int = 0
    threshold: float | None = None
    top_k: int | None = None
    soft: bool = False
    weight: float = 1.0
    mode: Literal[PSEUDO_MODES] = "per_fold"


@dataclass
class Config:
    """A whole run: data, model, augmentation and training.

    Args:
        name: the run's name; the run folder is `<output>/<name>/` (`train`),
            `<output>/<name>-cv/` (`cv`) or `<output>/<name>-pseudo/` (`pseudo-label`).
        seed: global seed (data order, augmentation, initialisation).
        output: the folder that holds run folders.
        data: where the records are.
        model: backbone and head.
        augment: augmentations by name, in order: `[{name: RandomFlip, mode: horizontal}, ...]`.
        train: optimizer, loss, stages, strategy, precision.
        cv: k-fold cross-validation.
        tta: test-time augmentation.
        predict: prediction and submission files.
        pseudo: pseudo-label rounds.
    """

    name: str = "run"
    seed: int = 42
    output: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: list[dict[str, Any]] = field(default_factory=list)
    train: TrainConfig = field(default_factory=TrainConfig)
    cv: CVConfig = field(default_factory=CVConfig)
    tta: TTAConfig = field(default_factory=TTAConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
