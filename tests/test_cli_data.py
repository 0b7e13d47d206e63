""" The command line on other people's data: held-out neurons (co-bps) and NWB recordings. """
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from minilatent import synthetic, datafiles, metrics


def run_cli(*args):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "minilatent", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.fixture(scope="module")
def small_h5(tmp_path_factory):
    p = tmp_path_factory.mktemp("data") / "small.h5"
    datafiles.save_h5(p, synthetic.make_lorenz(n_conditions=8, trials_per_condition=5, n_valid_per_condition=1, n_bins=20,
                                               seed=0))
    return p


def test_heldout_neurons_are_predicted_scored_with_co_bps_and_written(small_h5, tmp_path):
    out = tmp_path / "run"
    r = run_cli("train", "lfads", small_h5, "--out", out, "--epochs", 2, "--samples", 2, "--gen-dim", 8,
                "--heldout-neurons", 6, "--seed", 3)
    assert r.returncode == 0, r.stderr
    assert "valid bits/spike (held-in neurons)" in r.stdout and "co-bps" in r.stdout
    ref = datafiles.split_heldout(datafiles.load_h5(small_h5), 6, seed=3)
    with h5py.File(out / "lfads_output.h5") as f:
        np.testing.assert_array_equal(f["heldout_idx"][()], ref["heldout_idx"])
        assert f["valid_encod_data"].shape == (8, 20, 24) and f["valid_output_params"].shape == (8, 20, 30)
        rates = f["valid_output_params"][()]
    co = metrics.co_bps(rates, ref["valid_recon_data"], 24)
    assert f"co-bps {co:.4f}" in r.stdout                      # the printed figure is NLB's, on the written rates


@pytest.mark.parametrize("args,msg", [
    (("--heldout-neurons", 30), "--heldout-neurons must be between 1 and 29"),
    (("--align", "move_onset_time"), "--align and --window apply to NWB recordings"),
])
def test_bad_heldout_and_nwb_options_exit_2_with_one_line(small_h5, tmp_path, args, msg):
    out = tmp_path / "bad"
    r = run_cli("train", "lfads", small_h5, "--out", out, "--epochs", 1, *args)
    assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not out.exists()


pynwb = pytest.importorskip("pynwb")


def test_an_nwb_recording_trains_from_the_command_line(tmp_path):
    from test_nwb import make_session, write_nwb
    units_us, starts_us, lengths_us, move_us, trials = make_session(np.random.default_rng(0), n_units=6, n_trials=16)
    path = write_nwb(tmp_path / "rec.nwb", [u / 1e6 for u in units_us], trials, ("move_onset_time", "split", "cond"))
    out = tmp_path / "run"
    r = run_cli("train", "lfads", path, "--out", out, "--epochs", 1, "--samples", 2, "--gen-dim", 8,
                "--bin-ms", 20, "--align", "move_onset_time", "--window", -100, 240)
    assert r.returncode == 0, r.stderr
    ref = datafiles.load_nwb(path, bin_ms=20, align="move_onset_time", window=(-100, 240), split_column="split")
    with h5py.File(out / "lfads_output.h5") as f:
        np.testing.assert_array_equal(f["train_encod_data"][()], ref["train_encod_data"])
        assert f["valid_output_params"].shape == ref["valid_encod_data"].shape == (4, 17, 6)

    bad = run_cli("train", "lfads", path, "--out", tmp_path / "bad", "--epochs", 1, "--align", "go_time",
                  "--window", 0, 100)
    assert bad.returncode == 2 and "align column 'go_time' is not in the trials table" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
