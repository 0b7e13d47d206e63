"""
`python -m minilatent tune lfads`: AutoLFADS-style population-based training on a local Ray (num_cpus=2),
tiny data, a budget of about a minute. Skipped with a reason where Ray Tune is not installed
(pip install 'minilatent[tune]'; .ci/run installs it).
"""
import csv
import glob
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minilatent.__main__ import main
from minilatent import tune as mt
from conftest import cli

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="Ray Tune is not installed: pip install 'minilatent[tune]'")

SMALL = ["--gen-dim", "24", "--fac-dim", "6", "--ic-enc-dim", "24", "--samples", "4", "--batch-size", "16"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from minilatent.synthetic import make_lorenz
    from minilatent.datafiles import save_h5
    p = tmp_path_factory.mktemp("data") / "tiny.h5"
    save_h5(p, make_lorenz(n_conditions=6, trials_per_condition=8, n_valid_per_condition=2, n_neurons=16, seed=0))
    return str(p)


def test_missing_extra_is_one_line_naming_it(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)          # as if Ray were not installed
    out = tmp_path / "never"
    code, _, err = cli(capsys, ["tune", "lfads", tiny, "--out", str(out)])
    assert code == 2
    err = err.strip().splitlines()
    assert len(err) == 1 and "minilatent[tune]" in err[0]
    assert not out.exists()


def _max_epoch(out):
    """ the largest epoch any member has reported (Ray's result.json lines) """
    best = 0
    for f in glob.glob(os.path.join(out, "ray", "_member*", "result.json")):
        for line in open(f).read().splitlines():
            try:                                   # Ray may be writing the last line right now
                best = max(best, int(json.loads(line).get("epoch", 0)))
            except ValueError:
                pass
    return best


@pytest.fixture(scope="module")
def search(tiny, tmp_path_factory):
    """ One search shared by the tests below: 2 members, 4 epochs each, PBT decisions every 2 epochs (a budget in
    epochs, not seconds: a slow machine gets the same search). It is started as a user would, interrupted with
    Ctrl-C once the members are training, then continued with --resume to the end. """
    out = str(tmp_path_factory.mktemp("pbt") / "run")
    argv = ["tune", "lfads", tiny, "--out", out, "--trials", "2", "--max-seconds", "1200", "--max-epochs", "4",
            "--perturbation-interval", "2", "--cpus-per-trial", "0.5"] + SMALL
    p = subprocess.Popen([sys.executable, "-m", "minilatent"] + argv, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None and _max_epoch(out) < 1:
        time.sleep(1)
    if p.poll() is not None:
        err = p.stderr.read()
        if "timed out during startup" in err:   # Ray's raylet has a fixed 30 s start-up deadline
            pytest.skip("Ray could not start here: its raylet missed Ray's 30 s start-up deadline (machine overloaded)")
        pytest.fail(f"the search ended before it was interrupted (exit {p.returncode}): {err[-2000:]}")
    p.send_signal(signal.SIGINT)
    rc = p.wait(timeout=180)
    err = p.stderr.read().strip().splitlines()
    state = {"interrupted_rc": rc, "interrupted_err": err, "epoch_at_interrupt": _max_epoch(out),
             "finished_after_interrupt": os.path.exists(os.path.join(out, "run.json"))}
    state["code"] = main(argv + ["--resume"])
    state["out"] = out
    return state


@needs_ray
def test_interrupted_search_keeps_its_state_and_says_how_to_resume(search):
    assert search["interrupted_rc"] == 130
    assert search["interrupted_err"] and "--resume" in search["interrupted_err"][-1]
    assert not search["finished_after_interrupt"]          # nothing that looks finished was written


@needs_ray
def test_resume_continues_the_search(search):
    assert search["code"] == 0
    assert search["epoch_at_interrupt"] < 4
    # members went on from their checkpoints to --max-epochs (the population stops together, once the last member
    # has reported its 4th epoch: another member may have run on into the next generation meanwhile)
    assert 4 <= _max_epoch(search["out"]) <= 4 + 2


@needs_ray
def test_search_writes_the_files_and_exploits(search):
    code, out = search["code"], search["out"]
    assert code == 0
    for name in ("best_config.json", "trials.csv", "pbt.png", "run.json", "best/lfads_output.h5", "best/checkpoint.pt"):
        assert os.path.exists(os.path.join(out, name)), name
    best = json.load(open(os.path.join(out, "best_config.json")))
    rows = list(csv.DictReader(open(os.path.join(out, "trials.csv"))))
    assert len({r["trial_id"] for r in rows}) == 2
    assert {int(r["epoch"]) for r in rows} >= set(range(1, 5))
    # PBT copied a better member into a worse one at least once, and the copy says whose weights it took
    assert best["exploits"] >= 1
    assert any(r["parent"] for r in rows)
    # every searched value stays inside the documented range
    for r in rows:
        for k, (lo, hi, _, _) in mt.SEARCH_SPACE.items():
            if r.get(k):
                assert lo * (1 - 1e-9) <= float(r[k]) <= hi * (1 + 1e-9), (k, r[k])
    # the best member is the one with the lowest smoothed validation loss among the members' last reports
    last = {}
    for r in rows:
        last[r["trial_id"]] = float(r[mt.METRIC])
    assert best["value"] == pytest.approx(min(last.values()))


@needs_ray
def test_best_output_has_train_lfads_layout(search):
    import h5py
    out = search["out"]
    with h5py.File(os.path.join(out, "best", "lfads_output.h5")) as f:
        rates = f["valid_output_params"][()]
        spikes = f["valid_recon_data"][()]
        assert rates.shape == spikes.shape and np.all(rates > 0)
        for k in ("train_factors", "valid_factors", "valid_ic_mean", "valid_gen_states"):
            assert k in f


@needs_ray
def test_second_search_into_the_folder_is_refused(search, tiny, capsys):
    out = search["out"]
    before = sorted(os.listdir(out))
    code, _, err = cli(capsys, ["tune", "lfads", tiny, "--out", out, "--trials", "2", "--max-seconds", "5"] + SMALL)
    assert code == 2
    err = err.strip().splitlines()
    assert len(err) == 1 and "--resume" in err[0] and "--overwrite" in err[0]
    assert sorted(os.listdir(out)) == before


@needs_ray
def test_resume_refuses_changed_options(search, tiny, capsys):
    out = search["out"]
    code, _, err = cli(capsys, ["tune", "lfads", tiny, "--out", out, "--trials", "4", "--max-seconds", "10",
                                "--perturbation-interval", "2", "--resume", "--gen-dim", "32"] + SMALL[2:])
    assert code == 2
    assert "--gen-dim 32 (stored: 24)" in err and "--trials 4 (stored: 2)" in err     # named as the user types them


@pytest.mark.parametrize("argv, needle", [
    (["--trials", "1"], "--trials"),
    (["--max-seconds", "0"], "--max-seconds"),
    (["--cpus-per-trial", "-1"], "--cpus-per-trial"),
    (["--perturbation-interval", "0"], "--perturbation-interval"),
])
def test_bad_options_exit_2_and_write_nothing(tiny, tmp_path, capsys, argv, needle):
    out = tmp_path / "never"
    code, _, err = cli(capsys, ["tune", "lfads", tiny, "--out", str(out)] + argv)
    assert code == 2
    err = err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert not out.exists()


def test_bad_data_exit_2_before_ray(tmp_path, capsys):
    p = tmp_path / "bad.h5"
    import h5py
    with h5py.File(p, "w") as f:
        f["train_data"] = np.zeros((4, 10, 3))
    out = tmp_path / "never"
    code, _, err = cli(capsys, ["tune", "lfads", str(p), "--out", str(out)])
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_explore_clips_to_the_documented_ranges():
    cfg = {k: hi * 10 for k, (lo, hi, _, _) in mt.SEARCH_SPACE.items()}
    assert mt.clip_config(cfg) == {k: hi for k, (lo, hi, _, _) in mt.SEARCH_SPACE.items()}
    rng = np.random.default_rng(0)
    for _ in range(200):
        c = mt.sample_config(rng, list(mt.SEARCH_SPACE))
        assert all(lo <= c[k] <= hi for k, (lo, hi, _, _) in mt.SEARCH_SPACE.items())
