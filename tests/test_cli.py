import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from minilatent import synthetic, datafiles
from minilatent.__main__ import main
from conftest import write_h5


@pytest.fixture(scope="module")
def small_h5(tmp_path_factory):
    p = tmp_path_factory.mktemp("data") / "small.h5"
    datafiles.save_h5(p, synthetic.make_lorenz(n_conditions=8, trials_per_condition=5, n_valid_per_condition=1, n_bins=20,
                                               seed=0))
    return p


def run_cli(*args):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "minilatent", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


def test_train_lfads_writes_lfads_torch_output_layout(small_h5, tmp_path):
    out = tmp_path / "run"
    r = run_cli("train", "lfads", small_h5, "--out", out, "--epochs", 2, "--samples", 3, "--gen-dim", 8, "--fac-dim", 20)
    assert r.returncode == 0, r.stderr
    assert "valid rate R2" in r.stdout and "bits/spike" in r.stdout and "epoch    2" in r.stdout
    for f in ("lfads_output.h5", "metrics.csv", "loss.png", "rates.png", "checkpoint.pt"):
        assert (out / f).exists(), f
    src = datafiles.load_h5(small_h5)
    with h5py.File(out / "lfads_output.h5") as f:
        for split, n in (("train", 32), ("valid", 8)):
            assert f[f"{split}_output_params"].shape == (n, 20, 30)   # rates, counts per bin
            assert f[f"{split}_factors"].shape == (n, 20, 20)
            assert f[f"{split}_gen_states"].shape == (n, 20, 8)
            assert f[f"{split}_gen_init"].shape == (n, 8)
            assert f[f"{split}_ic_mean"].shape == f[f"{split}_ic_std"].shape == (n, 64)
            assert (f[f"{split}_output_params"][()] > 0).all()
        # a copy of the input comes along, as lfads-torch writes it
        np.testing.assert_array_equal(f["train_encod_data"][()], src["train_encod_data"])
    lines = (out / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,step,seconds") and len(lines) == 3

    # --resume continues from the checkpoint
    r = run_cli("train", "lfads", small_h5, "--out", out, "--epochs", 3, "--samples", 2, "--gen-dim", 8, "--fac-dim", 20, "--resume")
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stdout and "epoch    3" in r.stdout and "epoch    1 " not in r.stdout


GOOD = np.ones((6, 10, 4), np.float32)


@pytest.mark.parametrize("name,arrays,msg", [
    ("missing_key.h5", dict(train_encod_data=GOOD), "missing key 'valid_encod_data'"),
    ("two_d.h5", dict(train_data=GOOD[:, :, 0], valid_data=GOOD), "expected 3 dims"),
    ("nan.h5", dict(train_data=GOOD * np.nan, valid_data=GOOD), "NaN"),
    ("negative.h5", dict(train_data=GOOD, valid_data=-GOOD), ">= 0"),
    ("fractional.h5", dict(train_data=GOOD / 3, valid_data=GOOD), "whole numbers"),
    ("neurons.h5", dict(train_data=GOOD, valid_data=np.ones((6, 10, 3))), "4 neurons but valid_encod_data has 3"),
    ("dtype.h5", dict(train_data=GOOD.astype(complex), valid_data=GOOD), "dtype"),
])
def test_bad_input_exits_2_with_one_line_and_leaves_no_result(tmp_path, capsys, name, arrays, msg):
    p = write_h5(tmp_path / name, **arrays)
    out = tmp_path / "out"
    code = main(["train", "lfads", str(p), "--out", str(out), "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and msg in err, err
    assert not out.exists()


def test_bad_input_from_a_real_process_has_no_traceback(tmp_path):
    out = tmp_path / "out"
    r = run_cli("train", "lfads", tmp_path / "does_not_exist.h5", "--out", out)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: no such data file: {tmp_path / 'does_not_exist.h5'}"]
    assert "Traceback" not in r.stderr and not out.exists()
    r = run_cli("train", "lfads", "--out", out, "--epochs", "0")
    assert r.returncode == 2 and "--epochs must be in [1, " in r.stderr and not out.exists()
