""" The command line end to end: `train lfads` (output layout, resume, the full model, several sessions, other
likelihoods, held-out neurons, NWB recordings) and `train sparks`. Every call goes through conftest's `cli`. """
import h5py
import numpy as np
import pytest

from minilatent import synthetic, datafiles, metrics
from conftest import cli, run_process, write_h5


@pytest.fixture(scope="module")
def small_h5(tmp_path_factory):
    p = tmp_path_factory.mktemp("data") / "small.h5"
    datafiles.save_h5(p, synthetic.make_lorenz(n_conditions=8, trials_per_condition=5, n_valid_per_condition=1, n_bins=20,
                                               seed=0))
    return p


def test_train_lfads_writes_lfads_torch_output_layout(small_h5, tmp_path, capsys):
    out = tmp_path / "run"
    r = cli(capsys, ["train", "lfads", small_h5, "--out", out, "--epochs", 2, "--samples", 3, "--gen-dim", 8, "--fac-dim", 20])
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
    r = cli(capsys, ["train", "lfads", small_h5, "--out", out, "--epochs", 3, "--samples", 2, "--gen-dim", 8, "--fac-dim", 20, "--resume"])
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
    code, _, err = cli(capsys, ["train", "lfads", str(p), "--out", str(out), "--epochs", "1"])
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and msg in err, err
    assert not out.exists()


def test_bad_input_from_a_real_process_has_no_traceback(tmp_path):
    out = tmp_path / "out"
    r = run_process("train", "lfads", tmp_path / "does_not_exist.h5", "--out", out)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: no such data file: {tmp_path / 'does_not_exist.h5'}"]
    assert "Traceback" not in r.stderr and not out.exists()
    r = run_process("train", "lfads", "--out", out, "--epochs", "0")
    assert r.returncode == 2 and "--epochs must be in [1, " in r.stderr and not out.exists()


def test_heldout_neurons_are_predicted_scored_with_co_bps_and_written(small_h5, tmp_path, capsys):
    out = tmp_path / "run"
    r = cli(capsys, ["train", "lfads", small_h5, "--out", out, "--epochs", 2, "--samples", 2, "--gen-dim", 8,
                "--heldout-neurons", 6, "--seed", 3])
    assert r.returncode == 0, r.stderr
    assert "valid bits/spike (held-in neurons)" in r.stdout and "co-bps" in r.stdout
    ref = datafiles.split_heldout(datafiles.load_h5(small_h5), 6, seed=3)
    with h5py.File(out / "lfads_output.h5") as f:
        np.testing.assert_array_equal(f["heldout_idx"][()], ref["heldout_idx"])
        assert f["valid_encod_data"].shape == (8, 20, 24) and f["valid_output_params"].shape == (8, 20, 30)
        rates = f["valid_output_params"][()]
    co = metrics.co_bps(rates, ref["valid_recon_data"], 24)
    assert f"co-bps {co:.4f}" in r.stdout                      # the printed figure is NLB's, on the written rates
    # the evaluation contract: metrics.json beside the outputs, the baselines on the same neurons and trials, and
    # a last line per baseline saying whether LFADS beat it
    ev = __import__("json").load(open(out / "metrics.json"))
    assert ev["co_bps"] == pytest.approx(co, abs=1e-9) and ev["n_heldout"] == 6 and ev["n_valid_trials"] == 8
    assert {"smoothing_co_bps", "smoothing_width_ms", "smoothing_alpha", "psth_r2", "psth_baseline_co_bps"} <= set(ev)
    assert "vel_r2_factors" not in ev                          # the file has no *_behavior
    assert f"LFADS co-bps {co:.4f} vs smoothing {ev['smoothing_co_bps']:.4f}" in r.stdout
    assert __import__("json").load(open(out / "run.json"))["evaluation"] == "metrics.json"


def test_the_validation_trials_held_out_spikes_play_no_part_in_what_the_run_keeps(small_h5, tmp_path, capsys):
    # co-bps scores the held-out neurons of the validation trials, so the epoch kept (early stopping, best weights)
    # must be chosen without them: two files that differ only there give the same kept epoch and the same rates,
    # and only the score changes. (Before, the validation total loss, held-out neurons included, chose the epoch.)
    data = datafiles.split_heldout(datafiles.load_h5(small_h5), 6, seed=3)
    other = dict(data, valid_recon_data=data["valid_recon_data"].copy())
    held = other["valid_recon_data"][..., 24:]
    held[:] = np.random.default_rng(0).poisson(4.0 * held.mean() + 1.0, held.shape)   # other spikes, other rates
    runs = []
    for name, d in (("a", data), ("b", other)):
        path = tmp_path / f"{name}.h5"
        datafiles.save_h5(path, d)
        r = cli(capsys, ["train", "lfads", path, "--out", tmp_path / name, "--epochs", 120, "--samples", 0,
                         "--gen-dim", 32, "--dropout", 0, "--cd-rate", 0, "--lr", 0.01, "--seed", 1])   # overfits by ~80
        assert r.returncode == 0, r.stderr
        assert "validation trials (held-in neurons: what chooses the epoch to keep)" in r.stdout
        with h5py.File(tmp_path / name / "lfads_output.h5") as f:
            runs.append((f["valid_output_params"][()], __import__("json").load(open(tmp_path / name / "run.json"))))
    (rates_a, run_a), (rates_b, run_b) = runs
    np.testing.assert_array_equal(rates_a, rates_b)
    assert run_a["kept_epoch"] == run_b["kept_epoch"] < 120          # a choice was made, and made alike
    assert metrics.co_bps(rates_a, data["valid_recon_data"], 24) != metrics.co_bps(rates_b, other["valid_recon_data"], 24)


def test_resuming_a_held_out_run_that_chose_its_epoch_the_old_way_is_refused_in_one_line(small_h5, tmp_path, capsys):
    import torch
    out = tmp_path / "run"
    args = ["train", "lfads", small_h5, "--out", out, "--samples", 0, "--gen-dim", 8, "--heldout-neurons", 6]
    assert cli(capsys, args + ["--epochs", 2]).returncode == 0
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ck["trainer_cfg"]["monitor"] == "recon_heldin"
    ck["trainer_cfg"]["monitor"] = "loss"                        # as a run of the previous version wrote it
    torch.save(ck, out / "checkpoint.pt")
    before = (out / "lfads_output.h5").read_bytes()
    r = cli(capsys, args + ["--epochs", 3, "--resume"])
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "chose its epoch by the validation loss, this version by recon_heldin; start again with --overwrite" in r.stderr
    assert (out / "lfads_output.h5").read_bytes() == before      # nothing written


@pytest.mark.parametrize("args,msg", [
    (("--heldout-neurons", 30), "--heldout-neurons must be between 1 and 29"),
    (("--align", "move_onset_time"), "--align and --window apply to NWB recordings"),
])
def test_bad_heldout_and_nwb_options_exit_2_with_one_line(small_h5, tmp_path, capsys, args, msg):
    out = tmp_path / "bad"
    r = cli(capsys, ["train", "lfads", small_h5, "--out", out, "--epochs", 1, *args])
    assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not out.exists()


def test_an_nwb_recording_trains_from_the_command_line(tmp_path, capsys):
    pytest.importorskip("pynwb")
    from test_nwb import make_session, write_nwb
    units_us, starts_us, lengths_us, move_us, trials = make_session(np.random.default_rng(0), n_units=6, n_trials=16)
    path = write_nwb(tmp_path / "rec.nwb", [u / 1e6 for u in units_us], trials, ("move_onset_time", "split", "cond"))
    out = tmp_path / "run"
    r = cli(capsys, ["train", "lfads", path, "--out", out, "--epochs", 1, "--samples", 2, "--gen-dim", 8,
                "--bin-ms", 20, "--align", "move_onset_time", "--window", -100, 240])
    assert r.returncode == 0, r.stderr
    ref = datafiles.load_nwb(path, bin_ms=20, align="move_onset_time", window=(-100, 240), split_column="split")
    with h5py.File(out / "lfads_output.h5") as f:
        np.testing.assert_array_equal(f["train_encod_data"][()], ref["train_encod_data"])
        assert f["valid_output_params"].shape == ref["valid_encod_data"].shape == (4, 17, 6)

    bad = cli(capsys, ["train", "lfads", path, "--out", tmp_path / "bad", "--epochs", 1, "--align", "go_time",
                  "--window", 0, 100])
    assert bad.returncode == 2 and "align column 'go_time' is not in the trials table" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()


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
    code, stdout, _ = cli(capsys, ["train", "lfads", *two_sessions, "--out", out, "--co-dim", "2", "--co-prior-tau", "2",
                                   *FAST])
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
    code, _, err = cli(capsys, ["train", "lfads", str(p), "--out", str(tmp_path / "bad"), *FAST])
    assert code == 2 and ">= 0" in err     # the Poisson default refuses signed data
    out = tmp_path / "run"
    code, stdout, _ = cli(capsys, ["train", "lfads", str(p), "--out", str(out), "--recon", "gaussian", "--cd-rate", "0", *FAST])
    assert code == 0 and "gaussian NLL per entry" in stdout and "valid rate R2" in stdout
    with h5py.File(out / "lfads_output.h5") as f:
        assert f["valid_output_params"].shape == (6, 20, 6)
        assert (f["valid_output_params"][()] < 0).any()          # means of signed data, not rates
        assert "valid_co_means" not in f                         # no controller, no inferred inputs


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
def test_bad_full_model_input_exits_2_with_one_line_and_leaves_no_result(tmp_path, capsys, files, extra, msg):
    paths = [str(write_h5(tmp_path / f"s{i}.h5", **arrays)) for i, arrays in enumerate(files)]
    out = tmp_path / "out"
    code, _, err = cli(capsys, ["train", "lfads", *paths, "--out", str(out), "--epochs", "1", *extra])
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and msg in err, err
    assert not out.exists()


# -----------------------------------------------------------------------------
# the command line: python -m minilatent train sparks


@pytest.fixture(scope="module")
def rotation_h5(tmp_path_factory):
    from minilatent import synthetic, datafiles
    p = tmp_path_factory.mktemp("data") / "rot.h5"
    datafiles.save_h5(p, synthetic.make_rotation(n_trials=14, n_valid=4, n_neurons=8, n_bins=20, seed=0))
    return p


def test_cli_train_sparks_writes_outputs(rotation_h5, tmp_path, capsys):
    import h5py
    out = tmp_path / "run"
    assert cli(capsys, ["train", "sparks", str(rotation_h5), "--out", str(out), "--epochs", "2", "--embed-dim", "4"]).code == 0
    for f in ("sparks_output.h5", "metrics.csv", "loss.png", "decoding.png", "checkpoint.pt"):
        assert (out / f).exists(), f
    with h5py.File(out / "sparks_output.h5") as f:
        assert f["valid_mu"].shape == (4, 20, 8) and f["valid_prediction"].shape == (4, 20, 1, 2)
    assert len((out / "metrics.csv").read_text().splitlines()) == 3


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    counts = np.full((4, 6, 3), 2.0, np.float32)
    for name, arrays, msg in [
        ("counts.h5", dict(train_data=counts, valid_data=counts), "needs binary spikes"),
        ("target.h5", dict(train_data=counts / 2, valid_data=counts / 2, train_latents=np.zeros((4, 5, 2))),
         "train_latents: expected shape"),
        ("missing.h5", dict(train_encod_data=counts), "missing key 'valid_encod_data'"),
    ]:
        p = write_h5(tmp_path / name, **arrays)
        out = tmp_path / ("out_" + name)
        code, _, err = cli(capsys, ["train", "sparks", str(p), "--out", str(out), "--epochs", "1"])
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and msg in err, err
        assert not out.exists()
    code, _, err = cli(capsys, ["train", "sparks", "--out", str(tmp_path / "o"), "--epochs", "0"])
    assert code == 2 and "--epochs must be in [1, " in err


def test_a_file_with_training_trials_only_is_split_by_valid_fraction_and_keeps_its_provenance(tmp_path, capsys):
    # one split only: refused with the option that fixes it; with --valid-fraction a seeded fifth of the trials (within
    # each condition) validates; the input's HDF5 attributes and the bin width travel into the outputs
    d = synthetic.make_lorenz(n_conditions=6, trials_per_condition=10, n_valid_per_condition=1, n_bins=12, seed=0)
    arrays = {k: v for k, v in d.items() if not k.startswith("valid_")}
    path = tmp_path / "train_only.h5"
    datafiles.save_h5(path, arrays, attrs={"source": "a lab's rig", "citation": "Someone et al. (2026)"})
    r = cli(capsys, ["train", "lfads", path, "--out", tmp_path / "a", "--epochs", 1, "--samples", 1])
    assert r.returncode == 2 and "--valid-fraction" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    assert not (tmp_path / "a").exists()
    r = cli(capsys, ["train", "lfads", path, "--out", tmp_path / "b", "--epochs", 1, "--samples", 1,
                     "--valid-fraction", "0.2", "--gen-dim", 8, "--fac-dim", 4])
    assert r.returncode == 0, r.stderr
    assert "train (42, 12, 30), valid (12, 12, 30)" in r.stdout and "bins of 10 ms; 30 neurons, none held out" in r.stdout
    with h5py.File(tmp_path / "b" / "lfads_output.h5") as f:
        assert f.attrs["source"] == "a lab's rig" and f.attrs["citation"] == "Someone et al. (2026)"
        assert f.attrs["minilatent_bin_s"] == 0.01
        cond = f["valid_cond_idx"][()]
        assert sorted(np.bincount(cond).tolist()) == [2] * 6          # two of each condition's nine (round(0.2 x 9))
    run = __import__("json").load(open(tmp_path / "b" / "run.json"))
    assert run["bin_s"] == 0.01 and run["options"]["valid_fraction"] == 0.2 and run["options"]["bin_ms"] is None
    r = cli(capsys, ["train", "lfads", d_path(tmp_path, d), "--out", tmp_path / "c", "--epochs", 1,
                     "--valid-fraction", "0.2"])
    assert r.returncode == 2 and "has its own validation trials" in r.stderr, r.stderr


def d_path(tmp_path, d):
    p = tmp_path / "both.h5"
    datafiles.save_h5(p, d)
    return p


def test_a_file_without_dt_says_which_bin_width_was_assumed(tmp_path, capsys):
    d = synthetic.make_lorenz(n_conditions=4, trials_per_condition=5, n_valid_per_condition=1, n_bins=10, seed=1)
    d.pop("dt")
    path = tmp_path / "nodt.h5"
    datafiles.save_h5(path, d)
    r = cli(capsys, ["train", "lfads", path, "--out", tmp_path / "r", "--epochs", 1, "--samples", 1,
                     "--gen-dim", 8, "--fac-dim", 4])
    assert r.returncode == 0, r.stderr
    assert "the file has no dt: bins of 10 ms assumed" in r.stdout
    run = __import__("json").load(open(tmp_path / "r" / "run.json"))
    assert run["bin_s"] == 0.01 and "no dt" in run["bin_note"]
    r = cli(capsys, ["train", "lfads", path, "--out", tmp_path / "s", "--epochs", 1, "--bin-ms", 20])
    assert r.returncode == 2 and "apply to NWB recordings" in r.stderr and "--bin-ms" in r.stderr


def test_train_sparks_on_counts_binarises_when_asked_and_prints_the_ridge_baseline(tmp_path, capsys):
    # counts of several spikes per bin: refused with the option that fixes it; --binarize says how many spikes
    # SPARKS did not see, and the decoded target is scored beside ridge regression from smoothed spikes
    rng = np.random.default_rng(0)
    B, T, N = 30, 12, 8
    phase = rng.uniform(0, 2 * np.pi, (B, 1, 1)) + np.linspace(0, 2 * np.pi, T)[None, :, None]
    y = np.concatenate([np.cos(phase), np.sin(phase)], axis=2).astype(np.float32)          # (B, T, 2)
    x = rng.poisson(1.5 * np.exp(np.cos(phase - np.linspace(0, 2 * np.pi, N)))).astype(np.float32)
    path = tmp_path / "counts.h5"
    datafiles.save_h5(path, {"train_encod_data": x[:24], "valid_encod_data": x[24:], "train_behavior": y[:24],
                             "valid_behavior": y[24:], "dt": np.float64(0.05)})
    r = cli(capsys, ["train", "sparks", path, "--out", tmp_path / "a", "--target", "behavior", "--epochs", 1])
    assert r.returncode == 2 and "--binarize" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    r = cli(capsys, ["train", "sparks", path, "--out", tmp_path / "b", "--target", "behavior", "--epochs", 1,
                     "--binarize"])
    assert r.returncode == 0, r.stderr
    lost = np.maximum(x - 1, 0).sum() / x.sum()
    assert f"--binarize: {100 * lost:.1f} % of the spikes" in r.stdout
    assert "SPARKS decoding R2" in r.stdout and "vs ridge from smoothed spikes" in r.stdout
    run = __import__("json").load(open(tmp_path / "b" / "run.json"))
    assert run["binarised_spikes_lost"] == pytest.approx(lost, abs=1e-6) and "ridge_smoothed_r2" in run["results"]
