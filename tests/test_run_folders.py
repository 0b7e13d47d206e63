""" Run folders, resume and signals of the command line (issue 10): a finished run is never silently
overwritten, a failed or interrupted run never leaves a mix of two runs, --resume refuses changed options
and continues the schedule, and every failure ends in one line that says what is kept. """
import csv
import errno
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from minilatent import synthetic, datafiles
from minilatent.__main__ import LFADS_CLI_LR
from minilatent.lfads import LFADS
from conftest import cli

TINY = ["--samples", "1", "--gen-dim", "4", "--fac-dim", "2", "--ic-enc-dim", "4", "--batch-size", "8"]


@pytest.fixture(scope="module")
def tiny_h5(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    paths = []
    for seed in (0, 1):
        p = folder / f"tiny{seed}.h5"
        datafiles.save_h5(p, synthetic.make_lorenz(n_conditions=4, trials_per_condition=5, n_valid_per_condition=1,
                                                   n_bins=12, n_neurons=5, seed=seed))
        paths.append(str(p))
    return paths




def snapshot(folder):
    """ name -> bytes of every file in folder (not below it) """
    return {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))
            if os.path.isfile(os.path.join(folder, n))}


def one_line(err, *parts):
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    for p in parts:
        assert p in err, err


def metrics(folder):
    with open(os.path.join(folder, "metrics.csv")) as f:
        return list(csv.DictReader(f))


def nan_after(monkeypatch, n_calls):
    """ make LFADS's training loss NaN from the n-th training step on """
    orig, calls = LFADS.training_step, [0]

    def step(self, batch, weights, session=None):
        calls[0] += 1
        out = orig(self, batch, weights, session=session)
        if calls[0] >= n_calls:
            out["loss"] = out["loss"] * float("nan")
        return out
    monkeypatch.setattr(LFADS, "training_step", step)


# -----------------------------------------------------------------------------
# folder rules


def test_a_finished_run_is_refused_and_overwrite_replaces_it_without_a_mix(tiny_h5, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = cli(capsys, ["train", "lfads", *tiny_h5, "--out", out, "--epochs", 1, *TINY])   # two sessions
    assert code == 0, err
    assert {"lfads_output_tiny0.h5", "lfads_output_tiny1.h5", "run.json", "checkpoint.pt"} <= set(os.listdir(out))
    before = snapshot(out)
    code, _, err = cli(capsys, ["train", "lfads", tiny_h5[0], "--out", out, "--epochs", 1, *TINY])
    assert code == 2
    one_line(err, "already holds a finished run", "--resume", "--overwrite")
    assert snapshot(out) == before
    code, stdout, err = cli(capsys, ["train", "lfads", tiny_h5[0], "--out", out, "--epochs", 1, *TINY, "--overwrite"])
    assert code == 0, err
    assert "works in" in stdout
    files = set(os.listdir(out))
    assert "lfads_output.h5" in files and not any(f.startswith("lfads_output_") for f in files)   # no leftovers
    assert ".staging" not in files and ".lock" not in files
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ck["model_cfg"]["session_neurons"] == [] or ck["model_cfg"]["session_neurons"] == ()


def test_an_unfinished_run_is_refused_without_resume_or_overwrite(tiny_h5, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    nan_after(monkeypatch, 3)                           # 2 steps per epoch: epoch 1 fine, NaN in epoch 2
    code, stdout, err = cli(capsys, ["train", "lfads", tiny_h5[0], "--out", out, "--epochs", 3, *TINY])
    assert code == 1
    one_line(err, "loss became nan in epoch 2", "likely cause", "try --lr", "checkpoint.pt holds epoch 1",
             "no outputs written")
    assert sorted(os.listdir(out)) == ["checkpoint.pt"]          # the last good checkpoint, no outputs, no lock
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1
    monkeypatch.undo()
    code, _, err = cli(capsys, ["train", "lfads", tiny_h5[0], "--out", out, "--epochs", 3, *TINY])
    assert code == 2
    one_line(err, "already holds an unfinished run (checkpoint.pt)")


def test_a_failed_overwrite_leaves_the_previous_run_untouched(tiny_h5, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert cli(capsys, ["train", "lfads", tiny_h5[0], "--out", out, "--epochs", 1, *TINY])[0] == 0
    before = snapshot(out)
    nan_after(monkeypatch, 4)
    code, _, err = cli(capsys, ["train", "lfads", tiny_h5[1], "--out", out, "--epochs", 3, *TINY, "--overwrite"])
    assert code == 1
    one_line(err, "loss became nan in epoch 2", "still holds the previous run, untouched")
    assert snapshot(out) == before


@pytest.mark.parametrize("where", ["outputs", "checkpoint"])
def test_a_full_disk_ends_in_one_line_and_keeps_the_previous_run(tiny_h5, tmp_path, capsys, monkeypatch, where):
    out = tmp_path / "run"
    assert cli(capsys, ["train", "lfads", tiny_h5[0], "--out", out, "--epochs", 1, *TINY])[0] == 0
    before = snapshot(out)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(a[-1] if where == "checkpoint" else a[0]))
    import minilatent.datafiles, minilatent.trainer
    if where == "outputs":
        monkeypatch.setattr(minilatent.datafiles, "atomic_write", full)     # the HDF5 writer
    else:
        monkeypatch.setattr(minilatent.trainer, "save_atomic", full)         # the checkpoint writer
    code, _, err = cli(capsys, ["train", "lfads", tiny_h5[0], "--out", out, "--epochs", 2, *TINY, "--overwrite"])
    assert code == 1
    one_line(err, "No space left on device", "disk full", "still holds the previous run, untouched")
    assert snapshot(out) == before


def test_a_live_lock_refuses_and_a_stale_one_is_taken_over(tiny_h5, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".lock").write_text(f"{sleeper.pid}\n")
        code, _, err = cli(capsys, ["train", "lfads", tiny_h5[0], "--out", out, "--epochs", 1, *TINY])
        assert code == 2
        one_line(err, f"in use by another run (process {sleeper.pid})")
        assert sorted(os.listdir(out)) == [".lock"]
    finally:
        sleeper.kill()
        sleeper.wait()
    # the same lock, its process gone (a killed run), plus the temporary file a kill -9 mid-write leaves
    (out / ".checkpoint.pt.tmp-999999").write_bytes(b"partial")
    code, _, err = cli(capsys, ["train", "lfads", tiny_h5[0], "--out", out, "--epochs", 1, *TINY])
    assert code == 0, err
    files = set(os.listdir(out))
    assert ".lock" not in files and ".checkpoint.pt.tmp-999999" not in files and "run.json" in files


# -----------------------------------------------------------------------------
# resume


def test_resume_after_an_interruption_gives_the_uninterrupted_result(tiny_h5, tmp_path, capsys, monkeypatch):
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    args = ["train", "lfads", tiny_h5[0], "--epochs", 4, *TINY]
    assert cli(capsys, [*args, "--out", straight])[0] == 0
    from minilatent.trainer import Trainer
    orig = Trainer._maybe_checkpoint

    def interrupt(self):
        orig(self)
        if self.epoch == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(Trainer, "_maybe_checkpoint", interrupt)
    code, _, err = cli(capsys, [*args, "--out", broken])
    assert code == 130
    one_line(err, "interrupted (Ctrl-C)", "checkpoint.pt holds epoch 2", "plus --resume")
    monkeypatch.undo()
    code, stdout, err = cli(capsys, [*args, "--out", broken, "--resume"])
    assert code == 0, err
    assert "resumed from" in stdout and "at epoch 2" in stdout
    a = torch.load(straight / "checkpoint.pt", weights_only=True)
    b = torch.load(broken / "checkpoint.pt", weights_only=True)
    for k in a["final_model"]:
        assert torch.equal(a["final_model"][k], b["final_model"][k]), k
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert strip(metrics(straight)) == strip(metrics(broken))


def test_resume_with_a_larger_budget_continues_the_schedule(tiny_h5, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    args = ["train", "lfads", tiny_h5[0], "--out", out, *TINY]
    assert cli(capsys, [*args, "--epochs", 2])[0] == 0
    code, stdout, err = cli(capsys, [*args, "--epochs", 4, "--resume"])        # a finished run, extended
    assert code == 0, err
    lr = [float(r["lr"]) for r in metrics(out)]
    assert len(lr) == 4 and lr[2] == lr[3] == pytest.approx(0.05 * LFADS_CLI_LR)   # continues at the final rate
    # an interrupted 6-epoch run resumed with 10 epochs: the rate keeps falling, never jumps back up
    out2 = tmp_path / "run2"
    from minilatent.trainer import Trainer
    orig = Trainer._maybe_checkpoint

    def interrupt(self):
        orig(self)
        if self.epoch == 3:
            raise KeyboardInterrupt
    monkeypatch.setattr(Trainer, "_maybe_checkpoint", interrupt)
    assert cli(capsys, ["train", "lfads", tiny_h5[0], "--out", out2, *TINY, "--epochs", 6])[0] == 130
    monkeypatch.undo()
    assert cli(capsys, ["train", "lfads", tiny_h5[0], "--out", out2, *TINY, "--epochs", 10, "--resume"])[0] == 0
    lr = [float(r["lr"]) for r in metrics(out2)]
    assert len(lr) == 10 and all(b < a for a, b in zip(lr, lr[1:])) and lr[-1] == pytest.approx(0.05 * LFADS_CLI_LR)


def test_resume_refuses_changed_options_and_other_data_naming_each(tiny_h5, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(capsys, ["train", "lfads", tiny_h5[0], "--out", out, "--epochs", 1, *TINY])[0] == 0
    before = snapshot(out)
    code, _, err = cli(capsys, ["train", "lfads", tiny_h5[0], "--out", out, "--epochs", 2, *TINY, "--resume",
                                "--lr", "0.02", "--batch-size", "4", "--seed", "3", "--gen-dim", "5"])
    assert code == 2
    one_line(err, f"--lr 0.02 (checkpoint: {LFADS_CLI_LR})", "--batch-size 4 (checkpoint: 8)", "--seed 3 (checkpoint: 0)",
             "--gen-dim 5 (checkpoint: 4)")
    code, _, err = cli(capsys, ["train", "lfads", tiny_h5[1], "--out", out, "--epochs", 2, *TINY, "--resume"])
    assert code == 2
    one_line(err, "the data differ from those the checkpoint was trained on")
    assert snapshot(out) == before


@pytest.mark.parametrize("damage,msg", [
    ("truncate", "cannot be read (truncated or corrupt?)"),
    ("garbage", "cannot be read (truncated or corrupt?)"),
    ("sparks", "is from 'train sparks', not 'train lfads'"),
    ("missing", "--resume: no checkpoint at"),
])
def test_resume_from_a_bad_checkpoint_exits_2(tiny_h5, tmp_path, capsys, damage, msg):
    out = tmp_path / "run"
    if damage == "sparks":
        rot = tmp_path / "rot.h5"
        datafiles.save_h5(rot, synthetic.make_rotation(n_trials=8, n_valid=2, n_neurons=5, n_bins=10, seed=0))
        assert cli(capsys, ["train", "sparks", rot, "--out", out, "--epochs", 1, "--embed-dim", 4])[0] == 0
    elif damage != "missing":
        assert cli(capsys, ["train", "lfads", tiny_h5[0], "--out", out, "--epochs", 1, *TINY])[0] == 0
        ck = out / "checkpoint.pt"
        raw = ck.read_bytes()
        ck.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else os.urandom(len(raw)))
    code, _, err = cli(capsys, ["train", "lfads", tiny_h5[0], "--out", out, "--epochs", 2, *TINY, "--resume"])
    assert code == 2
    one_line(err, msg)


def test_sparks_has_resume_and_overwrite(tmp_path, capsys):
    rot = tmp_path / "rot.h5"
    datafiles.save_h5(rot, synthetic.make_rotation(n_trials=8, n_valid=2, n_neurons=5, n_bins=10, seed=0))
    out = tmp_path / "run"
    args = ["train", "sparks", rot, "--out", out, "--embed-dim", 4]
    assert cli(capsys, [*args, "--epochs", 1])[0] == 0
    code, _, err = cli(capsys, [*args, "--epochs", 1])
    assert code == 2
    one_line(err, "already holds a finished run")
    code, stdout, err = cli(capsys, [*args, "--epochs", 2, "--resume"])
    assert code == 0 and "resumed from" in stdout and len(metrics(out)) == 2, err
    code, _, err = cli(capsys, [*args, "--epochs", 2, "--resume", "--latent-dim", 3])
    assert code == 2
    one_line(err, "--latent-dim 3 (checkpoint: 8)")
    code, _, err = cli(capsys, [*args, "--epochs", 1, "--overwrite"])
    assert code == 0 and len(metrics(out)) == 1, err


# -----------------------------------------------------------------------------
# signals, in a real process


def start(tiny, out, *extra):
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "minilatent", "train", "lfads", tiny, "--out", str(out), *TINY,
                             *map(str, extra)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_epoch(p, k, timeout=120):
    t0 = time.time()
    for line in p.stdout:
        if line.startswith(f"epoch {k:4d}"):
            return
        assert time.time() - t0 < timeout
    raise AssertionError("the run ended before epoch %d" % k)


@pytest.mark.parametrize("sig,code,name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C"),
                                           (signal.SIGKILL, -9, None)])
def test_signals_keep_the_checkpoint_and_say_how_to_resume(tiny_h5, tmp_path, capsys, sig, code, name):
    out = tmp_path / "run"
    p = start(tiny_h5[0], out, "--epochs", 100000)
    wait_for_epoch(p, 2)
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert p.returncode == code, err
    if name:
        one_line(err, f"interrupted ({name})", "checkpoint.pt holds epoch", "plus --resume")
        assert ".lock" not in os.listdir(out)
    else:
        assert ".lock" in os.listdir(out)            # kill -9 leaves its lock: the next run takes it over
    assert "checkpoint.pt" in os.listdir(out) and "lfads_output.h5" not in os.listdir(out)
    epoch = torch.load(out / "checkpoint.pt", weights_only=True)["epoch"]
    assert epoch >= 1
    rc, stdout, err = cli(capsys, ["train", "lfads", tiny_h5[0], "--out", out, *TINY, "--epochs", epoch + 1, "--resume"])
    assert rc == 0, err
    assert f"resumed from {out / 'checkpoint.pt'} at epoch {epoch}" in stdout
    assert {"lfads_output.h5", "run.json"} <= set(os.listdir(out)) and ".lock" not in os.listdir(out)


def test_a_full_disk_seen_by_torch_save_is_named_as_such(tiny_h5, tmp_path, capsys, monkeypatch):
    """ torch.save reports ENOSPC as a RuntimeError ('unexpected pos ...', seen on a full tmpfs) """
    from types import SimpleNamespace

    def save(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 36160 vs 36080")
    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(os, "statvfs", lambda p: SimpleNamespace(f_bavail=10, f_frsize=4096, f_flag=0))
    out = tmp_path / "run"
    code, _, err = cli(capsys, ["train", "lfads", tiny_h5[0], "--out", out, "--epochs", 2, *TINY])
    assert code == 1
    one_line(err, f"could not write {out / 'checkpoint.pt'}", "No space left on device", "no checkpoint was saved")
    assert os.listdir(out) == []


def test_two_runs_started_together_into_one_folder_never_mix(tiny_h5, tmp_path):
    out = tmp_path / "run"
    a, b = start(tiny_h5[0], out, "--epochs", 10, "--seed", 1), start(tiny_h5[0], out, "--epochs", 10, "--seed", 2)
    ra, rb = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in (a, b)]
    assert sorted([ra[0], rb[0]]) == [0, 2], (ra, rb)
    loser = ra if ra[0] == 2 else rb
    one_line(loser[2], f"--out {out}")
    assert "in use by another run" in loser[2] or "already holds a finished run" in loser[2]
    winner_seed = 1 if ra[0] == 0 else 2
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    import json
    assert ck["extra"]["options"]["seed"] == winner_seed
    assert json.load(open(out / "run.json"))["options"]["seed"] == winner_seed
    assert not any(f.startswith(".lock") for f in os.listdir(out))
