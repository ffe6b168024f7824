"""The command line under hostile but realistic use: no lost files, no hangs, one-line answers to mistakes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from flowkit.models import LLFlow, LLFlowConfig
from flowkit.models.llflow.cli import SOURCE_KEY, main
from flowkit.models.llflow.data import read_image, write_image
from flowkit.models.llflow.train import save_model

TOY = LLFlowConfig(encoder_channels=8, encoder_blocks=2, growth_channels=4, stack_blocks=(1,),
                   steps_per_level=1, hidden_channels=8)


@pytest.fixture
def checkpoint(toy_checkpoint) -> Path:
    return toy_checkpoint


def _image(path: Path, seed: int = 0) -> Path:
    write_image(path, torch.rand(3, 16, 24, generator=torch.Generator().manual_seed(seed)) * 0.3)
    return path


def _run(argv, capsys) -> tuple[int, str]:
    status = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, err


def test_an_unrelated_file_in_the_output_folder_is_never_replaced(tmp_path, checkpoint, capsys):
    photos = tmp_path / "photos"
    source = _image(photos / "holiday.jpg")
    unrelated = photos / "holiday.png"
    unrelated.write_bytes(b"my own holiday picture")
    status, err = _run(["enhance", source, "-o", photos, "--checkpoint", checkpoint], capsys)
    assert status == 1 and "is not flowkit's output" in err and "--overwrite" in err
    assert unrelated.read_bytes() == b"my own holiday picture"
    status, _ = _run(["enhance", source, "-o", photos, "--checkpoint", checkpoint, "--overwrite"], capsys)
    assert status == 0 and read_image(unrelated).shape == (3, 16, 24)


def test_flowkits_own_earlier_output_for_the_same_input_is_replaced(tmp_path, checkpoint, capsys):
    source = _image(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    assert _run(["enhance", source, "-o", out, "--checkpoint", checkpoint], capsys)[0] == 0
    from PIL import Image

    with Image.open(out / "a.png") as image:
        assert image.text[SOURCE_KEY] == str(source.resolve())
    assert _run(["enhance", source, "-o", out, "--checkpoint", checkpoint], capsys)[0] == 0
    # The same name from another input is not flowkit's output for *that* input.
    other = _image(tmp_path / "elsewhere" / "a.png", seed=1)
    status, err = _run(["enhance", other, "-o", out, "--checkpoint", checkpoint], capsys)
    assert status == 1 and "not flowkit's output" in err


@pytest.mark.parametrize("names", [("a/x.png", "b/x.png"), ("a/x.png", "a/x.jpg")])
def test_inputs_that_would_share_an_output_are_refused_before_any_work(tmp_path, checkpoint, capsys, names):
    inputs = [_image(tmp_path / name, seed=i) for i, name in enumerate(names)]
    status, err = _run(["enhance", *inputs, "-o", tmp_path / "out", "--checkpoint", checkpoint], capsys)
    assert status == 2 and "would both be written to" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_special_files_are_skipped_and_the_batch_goes_on(tmp_path, checkpoint, capsys):
    folder = tmp_path / "in"
    _image(folder / "good.png")
    os.mkfifo(folder / "pipe.png")  # reading it would block forever
    (folder / "loop.png").symlink_to(folder / "loop.png")
    (folder / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    status, err = _run(["enhance", folder, "-o", tmp_path / "out", "--checkpoint", checkpoint], capsys)
    assert status == 0 and (tmp_path / "out" / "good.png").exists()
    for name in ("pipe.png", "loop.png", "dangling.png"):
        assert f"{name}: not a regular file" in err
    status, err = _run(["enhance", folder / "pipe.png", folder / "good.png", "-o", tmp_path / "o2",
                        "--checkpoint", checkpoint], capsys)
    assert status == 1 and "pipe.png: not a regular file" in err and (tmp_path / "o2" / "good.png").exists()


@pytest.mark.parametrize("argv, message", [
    (["--tile", "12"], "--tile must be 0 (off) or a multiple of 8"),
    (["--tile", "-8"], "argument --tile: expected an integer >= 0, got -8"),
    (["--overlap", "-1"], "argument --overlap: expected an integer >= 0"),
    (["--samples", "0"], "argument --samples: expected a positive integer, got 0"),
    (["--temperature", "nan"], "argument --temperature: expected a finite number >= 0"),
    (["--samples", "2", "--temperature", "0"], "--samples > 1 needs --temperature > 0"),
    (["--average", "2", "--temperature", "0"], "--average > 1 needs --temperature > 0"),
    (["--average", "0"], "argument --average: expected a positive integer, got 0"),
])
def test_bad_enhance_options_are_one_line(tmp_path, capsys, argv, message):
    source = _image(tmp_path / "a.png")
    try:
        status = main(["enhance", str(source), "-o", str(tmp_path / "out"), *argv])
    except SystemExit as exit_info:  # argparse's own one-line error (after the usage line)
        status = exit_info.code
    err = capsys.readouterr().err
    assert status == 2 and message in err and "Traceback" not in err


def test_devices_outputs_and_checkpoints_are_checked_up_front(tmp_path, checkpoint, capsys):
    source = _image(tmp_path / "a.png")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    if not torch.cuda.is_available():
        status, err = _run(["enhance", source, "-o", tmp_path / "o", "--device", "cuda"], capsys)
        assert status == 2 and "--device cuda: no CUDA device" in err
    status, err = _run(["enhance", source, "-o", a_file, "--checkpoint", checkpoint], capsys)
    assert status == 2 and "is a file, expected a folder" in err
    status, err = _run(["enhance", source, "-o", tmp_path / "o", "--checkpoint", checkpoint, "--official"], capsys)
    assert status == 2 and "is a flowkit checkpoint, not a reference one" in err
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    status, err = _run(["enhance", source, "-o", tmp_path / "o", "--checkpoint", empty], capsys)
    assert status == 2 and "empty.pt is empty" in err


def test_unsafe_loading_advice_never_reaches_the_user(tmp_path, capsys):
    import pickle

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as handle:
        pickle.dump(Payload(), handle, protocol=2)
    source = _image(tmp_path / "a.png")
    status, err = _run(["enhance", source, "-o", tmp_path / "o", "--checkpoint", evil], capsys)
    assert status == 2 and "evil.pt is not a flowkit or LLFlow reference checkpoint" in err
    assert "weights_only" not in err and "code ran" not in err
    with pytest.raises(ValueError, match="evil.pt is not a flowkit") as info:
        LLFlow.from_official(evil)
    assert "weights_only=False" not in str(info.value)


def test_a_checkpoint_with_non_finite_weights_is_refused(tmp_path, capsys):
    model = LLFlow(TOY)
    with torch.no_grad():
        model.encoder.conv_first.weight[0, 0, 0, 0] = float("nan")
    path = save_model(model, tmp_path / "nan.pt")
    status, err = _run(["enhance", _image(tmp_path / "a.png"), "-o", tmp_path / "o", "--checkpoint", path], capsys)
    assert status == 2 and "non-finite values" in err and "encoder.conv_first.weight" in err


def test_train_options_and_resume_files_are_validated(tmp_path, micro_config, checkpoint, capsys):
    config = micro_config(2, tmp_path / "run")
    status, err = _run(["train", "--config", config, "--resume", checkpoint, "--no-progress"], capsys)
    assert status == 2 and "is not a training checkpoint" in err
    with pytest.raises(SystemExit):
        main(["train", "--config", str(config), "--iterations", "0"])
    assert "expected a positive integer, got 0" in capsys.readouterr().err
    # A checkpoint of another model config does not resume this one.
    assert _run(["train", "--config", config, "--no-progress"], capsys)[0] == 0
    other = tmp_path / "other.toml"
    other.write_text(config.read_text().replace("hidden_channels = 8", "hidden_channels = 12"))
    status, err = _run(["train", "--config", other, "--resume", tmp_path / "run" / "last.pt", "--no-progress"],
                       capsys)
    assert status == 2 and "another model config (differs in ['hidden_channels'])" in err
    bad = tmp_path / "bad.toml"
    bad.write_text(config.read_text().replace("iterations = 2", "iterations = 'two'"))
    status, err = _run(["train", "--config", bad], capsys)
    assert status == 2 and "bad.toml: [run] iterations must be an integer, got 'two'" in err


def test_stale_temporary_checkpoints_are_removed_when_a_run_starts(tmp_path, micro_config, capsys):
    run = tmp_path / "run"
    run.mkdir()
    stale = run / ".last.pt.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert _run(["train", "--config", micro_config(1, run), "--no-progress"], capsys)[0] == 0
    assert not stale.exists() and (run / "last.pt").exists()


def test_sigint_writes_a_checkpoint_of_the_current_step_and_exits_with_one_line(tmp_path, micro_config):
    config = micro_config(100000, tmp_path / "run")
    # A shell's background job starts with SIGINT ignored; give the child the default, as a terminal does.
    process = subprocess.Popen([sys.executable, "-m", "flowkit", "train", "--config", str(config), "--no-progress"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=Path(__file__).resolve().parents[3],
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log = tmp_path / "run" / "log.csv"
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and process.poll() is None:  # until training steps are logged
            if log.exists() and len(log.read_text().splitlines()) > 2:
                break
            time.sleep(0.2)
        assert process.poll() is None, process.communicate()[1]
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "Traceback" not in err and "interrupted at step" in err and "--resume" in err
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    logged = [line for line in log.read_text().splitlines() if line.endswith(",train")]
    assert state["step"] >= int(logged[-1].split(",")[0]) >= 1
    assert [p.name for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")] == []


def _tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, check=False)
    return done.returncode == 0


def test_a_full_disk_keeps_earlier_outputs_and_names_the_file(tmp_path, checkpoint, capsys):
    disk = tmp_path / "disk"
    if not _tmpfs(disk, "64k"):
        pytest.skip("needs root and a mountable tmpfs to make a small full disk")
    try:
        source = _image(tmp_path / "a.png")
        assert _run(["enhance", source, "-o", disk, "--checkpoint", checkpoint], capsys)[0] == 0
        before = (disk / "a.png").read_bytes()
        (disk / "filler").write_bytes(b"\0" * (64 * 1024 - len(before) - 4096))
        big = tmp_path / "big"
        big.mkdir()
        write_image(big / "a.png", torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(3)) * 0.3)
        status, err = _run(["enhance", big / "a.png", "-o", disk, "--checkpoint", checkpoint, "--overwrite"], capsys)
        assert status == 1 and "a.png" in err and "No space left on device" in err
        assert (disk / "a.png").read_bytes() == before
        assert [p.name for p in disk.iterdir() if p.name.endswith(".tmp")] == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)


TRAIN_ON_PAIRS = """
[model]
preset = "tiny"
encoder_channels = 48
growth_channels = 16
hidden_channels = 96
steps_per_level = 1

[data]
train_low = "{pairs}/low"
train_high = "{pairs}/high"
patch_size = 16
batch_size = 2

[run]
iterations = {iterations}
val_every = 1000
checkpoint_every = 1
output = "{output}"
"""


def test_a_checkpoint_that_fills_the_disk_is_one_line_and_the_previous_one_survives(tmp_path, capsys):
    from flowkit.models.llflow.data import write_scenes, write_synthetic_pairs
    from flowkit.models.llflow.train import load_checkpoint

    write_scenes(tmp_path / "scenes", 2, 24, 24, seed=1)
    write_synthetic_pairs(tmp_path / "scenes", tmp_path / "pairs", multiple_of=8)

    def config(name: str, iterations: int, output: Path) -> Path:
        path = tmp_path / f"{name}.toml"
        path.write_text(TRAIN_ON_PAIRS.format(pairs=(tmp_path / "pairs").as_posix(), iterations=iterations,
                                              output=output.as_posix()))
        return path

    # The size of one checkpoint of this run (24 MiB: torch.save's large writes come back short
    # on a full disk, which it reports as an "enforce fail"), measured on the ordinary disk.
    assert _run(["train", "--config", config("probe", 1, tmp_path / "probe"), "--no-progress"], capsys)[0] == 0
    size = (tmp_path / "probe" / "last.pt").stat().st_size
    disk = tmp_path / "disk"
    # A disk of 1.5 checkpoints: step 1's checkpoint fits, step 2's fills the disk half-way through.
    if not _tmpfs(disk, str(size * 3 // 2)):
        pytest.skip("needs root and a mountable tmpfs to make a small full disk")
    try:
        status, err = _run(["train", "--config", config("full", 3, disk / "run"), "--no-progress"], capsys)
        last = disk / "run" / "last.pt"
        assert status == 1
        assert err.strip().splitlines()[-1] == f"flowkit train: {last}: No space left on device"
        assert load_checkpoint(last)["step"] == 1
        assert [p.name for p in (disk / "run").iterdir() if p.name.endswith(".tmp")] == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_genuine_internal_error_says_it_is_a_bug(tmp_path, checkpoint, capsys, monkeypatch):
    monkeypatch.setattr("flowkit.models.llflow.cli._enhance", lambda args: 1 / 0)
    status = main(["enhance", "x.png", "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status == 3 and "internal error (a bug in flowkit" in err and "ZeroDivisionError" in err
