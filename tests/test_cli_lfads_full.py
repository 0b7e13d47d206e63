""" The command line with the full model: controller outputs, several sessions, other likelihoods. """
import h5py
import numpy as np
import pytest

from minilatent import synthetic, datafiles
from minilatent.__main__ import main
from conftest import write_h5

SMALL = dict(n_conditions=6, trials_per_condition=5, n_valid_per_condition=1, n_bins=20, seed=0)
FAST = ["--epochs", "1", "--samples", "2", "--gen-dim", "8", "--fac-dim", "4", "--ci-enc-dim", "8", "--con-dim", "8"]


@pytest.fixture(scope="module")
def two_sessions(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sessions")
    paths = []
    for name, d in zip(("monkey_a", "monkey_b"), synthetic.make_lorenz_sessions(neurons=(7, 11), **SMALL)):
        paths.append(folder / f"{name}.h5")
        datafiles.save_h5(paths[-1], d)
    return paths


def test_two_sessions_with_a_controller_write_one_output_file_per_session(two_sessions, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "lfads", *map(str, two_sessions), "--out", str(out), "--co-dim", "2", "--co-prior-tau", "2",
                 *FAST])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "2 sessions, read-in dim 4" in stdout and "initialised by PCR" in stdout
    assert "monkey_a: valid bits/spike" in stdout and "monkey_b: valid bits/spike" in stdout
    for name, n in (("monkey_a", 7), ("monkey_b", 11)):
        with h5py.File(out / f"lfads_output_{name}.h5") as f:
            for split, trials in (("train", 24), ("valid", 6)):
                assert f[f"{split}_output_params"].shape == (trials, 20, n)
                assert f[f"{split}_factors"].shape == (trials, 20, 4)
                for k in ("co_means", "co_stds", "gen_inputs"):
                    assert f[f"{split}_{k}"].shape == (trials, 20, 2), k
                assert (f[f"{split}_co_stds"][()] > 0).all()
            assert f["train_encod_data"].shape[2] == n            # a copy of that session's input
    assert not (out / "lfads_output.h5").exists()


def test_gaussian_likelihood_on_continuous_data(tmp_path, capsys):
    p = tmp_path / "gauss.h5"
    datafiles.save_h5(p, synthetic.make_lorenz_gaussian(n_channels=6, **SMALL))
    code = main(["train", "lfads", str(p), "--out", str(tmp_path / "bad"), *FAST])
    assert code == 2 and ">= 0" in capsys.readouterr().err     # the Poisson default refuses signed data
    out = tmp_path / "run"
    code = main(["train", "lfads", str(p), "--out", str(out), "--recon", "gaussian", "--cd-rate", "0", *FAST])
    stdout = capsys.readouterr().out
    assert code == 0 and "gaussian NLL per entry" in stdout and "valid rate R2" in stdout
    with h5py.File(out / "lfads_output.h5") as f:
        assert f["valid_output_params"].shape == (6, 20, 6)
        assert (f["valid_output_params"][()] < 0).any()          # means of signed data, not rates
        assert "valid_co_means" not in f                         # no controller, no inferred inputs


GOOD = np.ones((6, 10, 4), np.float32)


@pytest.mark.parametrize("files,extra,msg", [
    ([dict(train_data=GOOD - 2, valid_data=GOOD)], ["--recon", "gamma"], "spike counts must be >= 0"),
    ([dict(train_data=GOOD * 0.5, valid_data=GOOD * 0)], ["--recon", "gamma"], "Gamma likelihood needs data > 0"),
    ([dict(train_data=GOOD, valid_data=GOOD)], ["--recon", "zig", "--zig-loc", "2"], "zig_loc=2"),
    ([dict(train_data=GOOD, valid_data=GOOD), dict(train_data=GOOD[:, :8], valid_data=GOOD[:, :8])], [],
     "same number of time bins: s0 has 10, s1 has 8"),
    ([dict(train_data=GOOD, valid_data=GOOD), dict(train_data=GOOD, valid_data=-GOOD)], [], "s1.h5: valid_encod_data"),
    ([dict(train_data=GOOD, valid_data=GOOD)], ["--cd-rate", "1.5"], "--cd-rate must be in [0, 1), got 1.5"),
    ([dict(train_data=GOOD, valid_data=GOOD)], ["--co-dim", "-1"], "--co-dim must be in [0, 256], got -1"),
    ([dict(train_data=GOOD, valid_data=GOOD)], ["--co-dim", "1", "--co-prior-tau", "0"], "--co-prior-tau must be > 0"),
    ([dict(train_data=GOOD, valid_data=GOOD)] * 2, ["--read-in-dim", "0"], "--read-in-dim must be in [1, 4096], got 0"),
    ([dict(train_data=GOOD, valid_data=GOOD)], ["--ramp-epochs", "-1"], "--ramp-epochs must be >= 0"),
])
def test_bad_input_exits_2_with_one_line_and_leaves_no_result(tmp_path, capsys, files, extra, msg):
    paths = [str(write_h5(tmp_path / f"s{i}.h5", **arrays)) for i, arrays in enumerate(files)]
    out = tmp_path / "out"
    code = main(["train", "lfads", *paths, "--out", str(out), "--epochs", "1", *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and msg in err, err
    assert not out.exists()
