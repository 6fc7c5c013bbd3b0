"""What `--resume` may change: stages not started, the epochs of the stage in progress,
evaluation and output settings; everything else is refused naming the key. And which kind of
run a folder holds."""

import json
import os

import pytest

import kerastricks  # noqa: F401
from kerastricks.config import ConfigError, from_dict
from kerastricks.train.resume import check_run_kind, resume_config, run_kind, write_run_kind

TWO_STAGES = [
    {"name": "frozen", "epochs": 2, "image_size": 16, "unfreeze": "head", "lr": 1e-3},
    {"name": "all", "epochs": 3, "image_size": 24, "lr": 5e-4},
]


def config(**overrides):
    raw = {"name": "r", "train": {"batch_size": 64, "stages": TWO_STAGES}}
    for path, value in overrides.items():
        node = raw
        *parents, last = path.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return from_dict(raw)


def test_an_unchanged_config_resumes_as_saved():
    merged, changes = resume_config(config(), config(), epochs_done=3)
    assert changes == []
    assert [s.batch_size for s in merged.train.stages] == [64, 64]


def test_a_smaller_batch_after_a_crash_applies_to_the_stages_not_started():
    # Killed (out of memory) in the first epoch of stage 1: stage 0 trained at 64.
    merged, changes = resume_config(config(), config(train__batch_size=16), epochs_done=2)
    assert [s.batch_size for s in merged.train.stages] == [64, 16]
    assert merged.train.batch_size == 16
    assert any("train.batch_size: 64 -> 16" in c for c in changes)
    assert not any(c.startswith("train.stages.1") for c in changes), "only the default moved"


def test_a_batch_change_inside_a_started_stage_is_refused():
    stages = [dict(TWO_STAGES[0]), {**TWO_STAGES[1], "batch_size": 16}]
    given = config(train__stages=stages)
    with pytest.raises(ConfigError, match=r"train\.stages\.1\.batch_size.*1 epoch\(s\) done"):
        resume_config(config(), given, epochs_done=3)


def test_epochs_of_a_finished_stage_are_refused_with_the_way_to_train_more():
    stages = [dict(TWO_STAGES[0]), {**TWO_STAGES[1], "epochs": 12}]
    with pytest.raises(ConfigError) as error:
        resume_config(config(), config(train__stages=stages), epochs_done=5)
    message = str(error.value)
    assert "train.stages.1.epochs" in message and "finished" in message
    assert "train.stages.2" in message, "says how to append a stage"


def test_epochs_of_the_stage_in_progress_may_grow():
    stages = [dict(TWO_STAGES[0]), {**TWO_STAGES[1], "epochs": 6}]
    merged, changes = resume_config(config(), config(train__stages=stages), epochs_done=3)
    assert [s.epochs for s in merged.train.stages] == [2, 6]
    assert any("train.stages.1.epochs: 3 -> 6" in c for c in changes)
    # ... but not below what it has already trained.
    shorter = [dict(TWO_STAGES[0]), {**TWO_STAGES[1], "epochs": 1}]
    with pytest.raises(ConfigError, match=r"train\.stages\.1\.epochs"):
        resume_config(config(), config(train__stages=shorter), epochs_done=4)


def test_stages_not_started_change_and_new_stages_append():
    stages = [dict(TWO_STAGES[0]), {**TWO_STAGES[1], "lr": 1e-4, "image_size": 32}]
    stages.append({"name": "more", "epochs": 2, "image_size": 32, "lr": 1e-5})
    merged, changes = resume_config(config(), config(train__stages=stages), epochs_done=2)
    assert [(s.image_size, s.lr) for s in merged.train.stages] == [
        (16, 1e-3),
        (32, 1e-4),
        (32, 1e-5),
    ]
    assert "train.stages.1: changed" in changes and "train.stages.2: added" in changes


def test_a_trained_stage_cannot_be_removed():
    with pytest.raises(ConfigError, match=r"train\.stages\.1.*cannot be removed"):
        resume_config(config(), config(train__stages=TWO_STAGES[:1]), epochs_done=3)


def test_evaluation_and_output_settings_apply():
    given = config(tta__transforms=["identity", "hflip"], train__verbose=0, predict__target="index")
    merged, changes = resume_config(config(), given, epochs_done=5)
    assert merged.tta.transforms == ["identity", "hflip"]
    assert merged.train.verbose == 0 and merged.predict.target == "index"
    assert len(changes) == 3


@pytest.mark.parametrize(
    "key, value",
    [
        ("train__optimizer__weight_decay", 0.01),
        ("model__backbone", "resnet34"),
        ("train__label_smoothing", 0.0),
        ("seed", 7),
        ("augment", [{"name": "RandomFlip"}]),
    ],
)
def test_settings_the_weights_depend_on_are_refused_naming_the_key(key, value):
    path = key.replace("__", ".")
    with pytest.raises(ConfigError, match=rf"{path}: .* was trained with"):
        resume_config(config(), config(**{key: value}), epochs_done=1)


def test_locked_training_refuses_even_stages_not_started():
    # A finished CV fold trained with the old stages: the other folds must train alike.
    with pytest.raises(ConfigError, match=r"train\.batch_size: .* folds trained with 64"):
        resume_config(config(), config(train__batch_size=16), training_locked=True)
    later = [dict(TWO_STAGES[0]), {**TWO_STAGES[1], "lr": 1e-4}]
    with pytest.raises(ConfigError, match=r"train\.stages\.1\.lr"):
        resume_config(config(), config(train__stages=later), training_locked=True)
    merged, _ = resume_config(config(), config(cv__folds=[0, 1]), training_locked=True)
    assert merged.cv.folds == [0, 1]


def test_pseudo_selection_is_locked_once_a_pseudo_set_exists():
    given = config(pseudo__threshold=0.8, pseudo__rounds=2)
    merged, _ = resume_config(config(), given, pseudo_locked=False)
    assert (merged.pseudo.threshold, merged.pseudo.rounds) == (0.8, 2)
    with pytest.raises(ConfigError, match=r"pseudo\.threshold"):
        resume_config(config(), given, pseudo_locked=True)
    merged, _ = resume_config(config(), config(pseudo__rounds=2), pseudo_locked=True)
    assert merged.pseudo.rounds == 2


def test_resume_refuses_a_folder_of_another_kind(tmp_path):
    run = tmp_path / "cv-run"
    (run / "fold0").mkdir(parents=True)
    (run / "config.yaml").write_text("name: x\n")
    assert run_kind(str(run)) == "cv", "an older folder is recognised by its layout"
    with pytest.raises(ConfigError, match=r"holds a cv run, not a train run.*kerastricks cv"):
        check_run_kind(str(run), "train")
    write_run_kind(str(run), "pseudo-label")
    assert json.load(open(os.path.join(run, "run.json"))) == {"kind": "pseudo-label"}
    with pytest.raises(ConfigError, match="holds a pseudo-label run"):
        check_run_kind(str(run), "cv")
    with pytest.raises(FileNotFoundError, match="no kerastricks run there"):
        check_run_kind(str(tmp_path / "empty"), "train")
