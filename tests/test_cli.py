"""The `kerastricks` verbs, called in-process through `kerastricks.cli.main`."""

import importlib.util
import os
import subprocess
import sys

import pytest
from PIL import Image

import kerastricks  # noqa: F401
from kerastricks.cli import main
from kerastricks.config import save_config


@pytest.fixture
def config_file(make_config, tmp_path):
    def write(**sections):
        config = make_config(**sections)
        path = str(tmp_path / "config.yaml")
        save_config(config, path)
        return config, path

    return write


def test_bad_key_exits_2_naming_the_key(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  stagez: []\n")
    assert main(["train", str(path)]) == 2
    assert "train.stagez" in capsys.readouterr().err


def test_unknown_backbone_is_reported_before_training(config_file, capsys):
    _, path = config_file(model={"backbone": "resnet1800"})
    assert main(["train", path]) == 2
    error = capsys.readouterr().err
    assert "model.backbone" in error and "resnet18" in error


def test_missing_records_name_the_path(config_file, tmp_path, capsys):
    _, path = config_file(data={"records": str(tmp_path / "nowhere")})
    assert main(["train", path]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_train_then_explain_and_show_batch(config_file, tmp_path, capsys):
    config, path = config_file(
        augment=[{"name": "affine", "rotate": 10, "p": 0.5}], train={"explain": True}
    )
    assert main(["train", path, "--set", "train.stages.0.image_size=32"]) == 0
    out = capsys.readouterr().out
    run_dir = os.path.join(config.output, config.name)
    assert f"run folder: {run_dir}" in out
    assert os.path.exists(os.path.join(run_dir, "plots", "gradcam_stage1.png"))
    grid = str(tmp_path / "cam.png")
    assert main(["explain", path, "--run", run_dir, "--out", grid, "--images", "4"]) == 0
    assert Image.open(grid).size[0] > 100
    batch = str(tmp_path / "batch.png")
    assert main(["show-batch", path, "--out", batch]) == 0
    assert Image.open(batch).size[0] > 100


def test_lr_find_prints_suggestions_and_writes_the_plot(config_file, tmp_path, capsys, monkeypatch):
    import kerastricks.train.build
    from kerastricks.optim import get_lr_multipliers

    built = []
    build_parts = kerastricks.train.build.build_parts

    def spy(*args, **kwargs):
        built.append(build_parts(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(kerastricks.train.build, "build_parts", spy)
    _, path = config_file()
    plot = str(tmp_path / "lr.png")
    assert main(["lr-find", path, "--steps", "12", "--out", plot]) == 0
    # The runner's own build: the model with its layer groups and the multiplier optimizer.
    (parts,) = built
    assert len(parts.groups) > 1
    assert len(get_lr_multipliers(parts.optimizer)) == len(parts.partition.variables)
    out = capsys.readouterr().out
    assert "suggested lr (valley)" in out
    assert os.path.getsize(plot) > 1000
    # Progress: a line per long step, and Keras' progress bar over the sweep's batches.
    assert "building resnet18 at 32px" in out
    assert "sweeping the LR over 12 batches" in out
    assert "/12 [" in out


def test_profile_prints_a_table(capsys):
    assert (
        main(
            [
                "profile",
                "--backbones",
                "resnet18",
                "--image-size",
                "32",
                "--batch-size",
                "4",
                "--steps",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "resnet18" in out and "train_img_per_s" in out
    assert out.count("train_img_per_s") == 1  # the table once, not twice
    assert "profile [1/1] resnet18: building" in out


def test_predict_needs_records(config_file, capsys):
    _, path = config_file()
    assert main(["predict", path, "--run", "nowhere"]) == 2
    assert "--records" in capsys.readouterr().err


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.batch_size=0", "train.batch_size"),
        ("train.stages.0.batch_size=-2", "train.stages.0.batch_size"),
        ("train.accumulate_steps=0", "train.accumulate_steps"),
    ],
)
def test_non_positive_counts_are_refused_naming_the_key(config_file, capsys, override, key):
    _, path = config_file()
    assert main(["train", path, "--set", override]) == 2
    assert f"{key}: expected >= 1" in capsys.readouterr().err


def _fail_if_called(*args, **kwargs):
    raise AssertionError("the expensive work started before the argument check")


def _one_error_line(err: str, verb: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"kerastricks {verb}: error: "), err
    return lines[0]


def test_a_records_error_is_one_line(config_file, tmp_path, capsys):
    # The reader's user errors are TFRecordsErrors: no traceback, what to fix.
    _, path = config_file(data={"keys": {"imagez": "image"}})
    assert main(["show-batch", path, "--out", str(tmp_path / "batch.png")]) == 2
    line = _one_error_line(capsys.readouterr().err, "show-batch")
    assert "Unknown entries ['imagez'] in keys" in line


@pytest.mark.parametrize(
    "verb, extra",
    [("show-batch", []), ("lr-find", []), ("explain", ["--run", "somewhere"])],
)
def test_out_in_a_missing_folder_fails_before_any_work(
    config_file, tmp_path, capsys, monkeypatch, verb, extra
):
    import kerastricks.eval.grad_cam_grid
    import kerastricks.train.lr_find
    import kerastricks.train.show_batch

    monkeypatch.setattr(kerastricks.train.show_batch, "show_batch_for_config", _fail_if_called)
    monkeypatch.setattr(kerastricks.train.lr_find, "lr_find_for_config", _fail_if_called)
    monkeypatch.setattr(kerastricks.eval.grad_cam_grid, "explain_run", _fail_if_called)
    _, path = config_file()
    out = str(tmp_path / "missing_dir" / "x.png")
    assert main([verb, path, "--out", out, *extra]) == 2
    line = _one_error_line(capsys.readouterr().err, verb)
    assert "missing_dir" in line and "does not exist" in line and "mkdir -p" in line


def test_out_naming_a_folder_or_under_a_file_is_refused(config_file, tmp_path, capsys):
    _, path = config_file()
    assert main(["show-batch", path, "--out", str(tmp_path)]) == 2
    assert "is a folder" in _one_error_line(capsys.readouterr().err, "show-batch")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["show-batch", path, "--out", str(blocker / "x.png")]) == 2
    assert "is a file, not a folder" in _one_error_line(capsys.readouterr().err, "show-batch")


@pytest.mark.parametrize("verb", ["show-batch", "lr-find"])
def test_stage_out_of_range_names_the_stages(config_file, tmp_path, capsys, monkeypatch, verb):
    import kerastricks.train.lr_find
    import kerastricks.train.show_batch

    monkeypatch.setattr(kerastricks.train.show_batch, "show_batch_for_config", _fail_if_called)
    monkeypatch.setattr(kerastricks.train.lr_find, "lr_find_for_config", _fail_if_called)
    _, path = config_file()
    out = str(tmp_path / "x.png")
    assert main([verb, path, "--stage", "5", "--out", out]) == 2
    line = _one_error_line(capsys.readouterr().err, verb)
    assert "--stage 5" in line and "1 stage(s)" in line and "-1 for the last" in line


def test_pretrained_weights_without_timm_and_torch_say_what_to_do(config_file, capsys, monkeypatch):
    import kerastricks.train.runner

    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name in ("timm", "torch") else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(kerastricks.train.runner, "train", _fail_if_called)
    _, path = config_file(model={"weights": "pretrained"})
    assert main(["train", path]) == 2
    line = _one_error_line(capsys.readouterr().err, "train")
    assert "model.weights" in line and "timm and PyTorch" in line and ".safetensors" in line


@pytest.mark.parametrize("verb", ["train", "cv", "lr-find"])
def test_output_under_an_existing_file_is_refused(config_file, tmp_path, capsys, monkeypatch, verb):
    import kerastricks.eval
    import kerastricks.train.lr_find
    import kerastricks.train.runner
    import kerastricks.train.show_batch

    monkeypatch.setattr(kerastricks.train.runner, "train", _fail_if_called)
    monkeypatch.setattr(kerastricks.eval, "cross_validate", _fail_if_called)
    monkeypatch.setattr(kerastricks.train.lr_find, "lr_find_for_config", _fail_if_called)
    blocker = tmp_path / "runs_is_a_file"
    blocker.write_text("")
    _, path = config_file(output=str(blocker))
    assert main([verb, path]) == 2
    line = _one_error_line(capsys.readouterr().err, verb)
    assert "output:" in line and "is a file, not a folder" in line and "--set output=" in line


def test_verbose_is_accepted_before_or_after_the_verb():
    from kerastricks.cli import _parser

    parser = _parser()
    assert parser.parse_args(["-v", "train", "c.yaml"]).verbose is True
    assert parser.parse_args(["train", "c.yaml", "--verbose"]).verbose is True
    assert parser.parse_args(["train", "c.yaml"]).verbose is False
    assert parser.parse_args(["profile", "--backbones", "resnet18", "-v"]).verbose is True


def test_startup_lines_are_held_back_and_other_lines_kept(capfd):
    from kerastricks.cli import _startup_logs

    noise = (
        b"WARNING: All log messages before absl::InitializeLog() is called are written to "
        b"STDERR\n"
        b"I0000 00:00:1796175840.154061    4361 port.cc:153] oneDNN custom operations are on.\n"
        b"I0000 00:00:1796175840.154535    4361 cudart_stub.cc:31] Could not find cuda drivers\n"
        b"2024-01-02 03:04:05.123456: I tensorflow/core/util/port.cc:113] oneDNN custom ops\n"
    )
    kept = b"E0000 00:00:1.0 1 some.cc:1] a real error\nsome Python warning\n"
    with _startup_logs(hold_back=True):
        os.write(2, noise + kept)
    assert capfd.readouterr().err == kept.decode()
    with _startup_logs(hold_back=False):  # -v
        os.write(2, noise)
    assert capfd.readouterr().err == noise.decode()


def _run_cli(*argv: str) -> subprocess.CompletedProcess:
    # A fresh interpreter, as the console script runs, without the caller's TF log level.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    code = (
        "import sys\n"
        "from kerastricks.cli import main\n"
        "try:\n"
        f"    code = main({list(argv)!r})\n"
        "except SystemExit as exit:\n"
        "    code = exit.code\n"
        "print('tensorflow loaded:', 'tensorflow' in sys.modules)\n"
        "sys.exit(code)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["profile", "--help"], []])
def test_help_does_not_import_tensorflow(argv):
    result = _run_cli(*argv)
    assert "tensorflow loaded: False" in result.stdout
    assert "oneDNN" not in result.stderr and "cuda" not in result.stderr


def test_failing_config_stderr_has_only_the_error(config_file):
    _, path = config_file(model={"backbone": "resnet1800"})
    result = _run_cli("train", path)
    assert result.returncode == 2
    _one_error_line(result.stderr, "train")
    assert "model.backbone" in result.stderr


def test_config_errors_answer_before_tensorflow_loads(tmp_path):
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, kerastricks.config; print('tensorflow' in sys.modules)",
        ],
        capture_output=True,
        text=True,
    )
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  stagez: []\n")
    result = _run_cli("train", str(path))
    assert result.returncode == 2
    _one_error_line(result.stderr, "train")
    if probe.stdout.strip() == "True":
        pytest.skip("kerastricks.config still imports TensorFlow; the CLI is ready for it")
    assert "tensorflow loaded: False" in result.stdout


def test_a_bug_keeps_its_traceback_and_a_user_error_is_one_line(
    config_file, tmp_path, capsys, monkeypatch
):
    import kerastricks.train.runner

    def internal_bug(*args, **kwargs):
        raise ValueError("an internal bug")

    monkeypatch.setattr(kerastricks.train.runner, "train", internal_bug)
    _, path = config_file()
    with pytest.raises(ValueError, match="an internal bug"):
        main(["train", path])
    monkeypatch.undo()
    # A record folder whose manifest is broken is the user's to fix: one line, exit 2.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text('{"format_version": 1}')
    _, path = config_file(data={"records": str(broken)})
    assert main(["train", path]) == 2
    line = _one_error_line(capsys.readouterr().err, "train")
    assert "manifest.json is invalid: missing" in line
