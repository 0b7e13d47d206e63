""" Bad data, bad options and bad API arguments, table-driven (issue 10): every case exits 2 (CLI) or raises
ValueError/TypeError/KeyError (API) with one line that names the problem, and the CLI writes nothing. """
import json

import h5py
import numpy as np
import pytest
import torch

from minilatent import synthetic, datafiles, metrics
from minilatent.circuits import Circuit, CircuitConfig
from minilatent.lfads import LFADS, LFADSConfig
from minilatent.sparks import SPARKS, SPARKSConfig
from minilatent.trainer import Trainer, TrainerConfig
from conftest import cli, write_h5

TINY_NOBATCH = ["--epochs", "1", "--samples", "1", "--gen-dim", "4", "--fac-dim", "2", "--ic-enc-dim", "4"]
TINY = ["--epochs", "1", "--samples", "1", "--gen-dim", "4", "--fac-dim", "2", "--ic-enc-dim", "4", "--batch-size", "8"]
rng = np.random.default_rng(0)
X = rng.poisson(1.0, (6, 10, 4)).astype(np.float32)          # (trials, bins, neurons) counts
TRUTH = np.ones_like(X)




def assert_one_line(code, err, msg, expect=2):
    assert code == expect, err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert msg in err, err


# -----------------------------------------------------------------------------
# bad data: checked before anything is written

BAD_DATA = [
    ("all_zero", dict(train_data=X * 0, valid_data=X), "holds no spikes (all zeros)"),
    ("valid_zero", dict(train_data=X, valid_data=X * 0), "valid_encod_data: holds no spikes"),
    ("huge_counts", dict(train_data=np.where(X > 2, 1e9, X).astype(np.float32), valid_data=X), "counts above 10000"),
    ("truth_shape", dict(train_data=X, valid_data=X, train_truth=TRUTH[:, :, :3], valid_truth=TRUTH), "train_truth: expected the shape"),
    ("truth_length", dict(train_data=X, valid_data=X, train_truth=TRUTH, valid_truth=TRUTH[:, :8]), "valid_truth: expected the shape"),
    ("truth_nan", dict(train_data=X, valid_data=X, train_truth=TRUTH * np.nan, valid_truth=TRUTH), "train_truth: contains NaN"),
    ("truth_text", dict(train_data=X, valid_data=X, train_truth=np.array([b"a"] * 6), valid_truth=TRUTH), "train_truth"),
    ("ext_short", dict(train_data=X, valid_data=X, train_ext_input=np.ones((6, 5, 2)), valid_ext_input=np.ones((6, 10, 2))),
     "train_ext_input: expected shape (6, >= 10 bins"),
    ("ext_dims", dict(train_data=X, valid_data=X, train_ext_input=np.ones((6, 10, 2)), valid_ext_input=np.ones((6, 10, 3))),
     "train_ext_input has 2 inputs but valid_ext_input has 3"),
    ("ext_only_train", dict(train_data=X, valid_data=X, train_ext_input=np.ones((6, 10, 2))), "valid_ext_input is missing"),
    ("ext_nan", dict(train_data=X, valid_data=X, train_ext_input=np.full((6, 10, 2), np.nan), valid_ext_input=np.ones((6, 10, 2))),
     "train_ext_input: contains NaN"),
    ("cf_array", dict(train_data=X, valid_data=X, train_truth=TRUTH, valid_truth=TRUTH, conversion_factor=np.ones(3)),
     "conversion_factor must be one positive number, got an array"),
    ("cf_string", dict(train_data=X, valid_data=X, train_truth=TRUTH, valid_truth=TRUTH, conversion_factor=b"100"),
     "conversion_factor must be one positive number"),
    ("cf_zero", dict(train_data=X, valid_data=X, conversion_factor=0.0), "conversion_factor must be > 0"),
    ("mixed_layouts", dict(train_encod_data=X, valid_data=X), "mixes lfads-torch keys (train_encod_data) with original"),
    ("dt_zero", dict(train_data=X, valid_data=X, dt=0.0), "dt must be > 0"),
    ("dt_negative", dict(train_data=X, valid_data=X, dt=-0.01), "dt must be > 0"),
    ("dt_nan", dict(train_data=X, valid_data=X, dt=np.nan), "dt must be > 0"),
    ("no_keys", dict(spikes=X), "found none of the data keys"),
    ("one_trial_dim", dict(train_data=X[0], valid_data=X), "expected 3 dims"),
    ("empty", dict(train_data=X[:0], valid_data=X), "is empty"),
    ("inf", dict(train_data=np.where(X > 2, np.inf, X), valid_data=X), "NaN or infinite"),
    ("recon_fewer_trials", dict(train_encod_data=X, train_recon_data=X[:4], valid_encod_data=X), "6 trials but train_recon_data has 4"),
    ("bins_differ", dict(train_data=X, valid_data=X[:, :8]), "10 time bins but valid_encod_data has 8"),
]


@pytest.mark.parametrize("name,arrays,msg", BAD_DATA, ids=[c[0] for c in BAD_DATA])
def test_bad_data_exits_2_before_anything_is_written(tmp_path, capsys, name, arrays, msg):
    p = write_h5(tmp_path / f"{name}.h5", **arrays)
    out = tmp_path / "out"
    code, _, err = cli(capsys, ["train", "lfads", str(p), "--out", str(out), *TINY])
    assert_one_line(code, err, msg)
    assert not out.exists()


BAD_DATA_OPTIONS = [   # data that only some options refuse
    ("gamma_zero", dict(train_data=X, valid_data=X), ["--recon", "gamma"], "Gamma likelihood needs data > 0"),
    ("ci_lag", dict(train_data=X, valid_data=X), ["--co-dim", "1", "--ci-lag", "1000"], "--ci-lag must be < the 10 time bins"),
    ("hz_without_dt", dict(train_data=X, valid_data=X, train_truth=TRUTH, valid_truth=TRUTH), ["--truth-units", "hz"],
     "needs the bin width, but the data hold no 'dt'"),
    ("gaussian_zero", dict(train_data=X * 0.0, valid_data=X - 1), ["--recon", "gaussian"], "train_recon_data is all zeros"),
]


@pytest.mark.parametrize("name,arrays,extra,msg", BAD_DATA_OPTIONS, ids=[c[0] for c in BAD_DATA_OPTIONS])
def test_data_an_option_cannot_take_exits_2(tmp_path, capsys, name, arrays, extra, msg):
    p = write_h5(tmp_path / f"{name}.h5", **arrays)
    out = tmp_path / "out"
    code, _, err = cli(capsys, ["train", "lfads", str(p), "--out", str(out), *TINY, *extra])
    assert_one_line(code, err, msg)
    assert not out.exists()


def test_sparks_bad_data_exits_2(tmp_path, capsys):
    for name, arrays, extra, msg in [
        ("tau_p", dict(train_data=(X > 0).astype(np.float32), valid_data=(X > 0).astype(np.float32)), ["--tau-p", "50"],
         "--tau-p must be <= the 10 time bins"),
        ("target_nan", dict(train_data=(X > 0) * 1.0, valid_data=(X > 0) * 1.0, train_latents=np.full((6, 10, 2), np.nan),
                            valid_latents=np.ones((6, 10, 2))), [], "train_latents: contains NaN"),
        ("no_target", dict(train_data=(X > 0) * 1.0, valid_data=(X > 0) * 1.0), ["--target", "pos"], "missing key 'train_pos'"),
    ]:
        p = write_h5(tmp_path / f"{name}.h5", **arrays)
        code, _, err = cli(capsys, ["train", "sparks", str(p), "--out", str(tmp_path / name), "--epochs", "1", *extra])
        assert_one_line(code, err, msg)
        assert not (tmp_path / name).exists()


# -----------------------------------------------------------------------------
# bad options: exit 2, one line naming the option and the allowed range

BAD_OPTIONS = [
    (["--batch-size", "0"], "--batch-size must be in [1, 1000000], got 0"),
    (["--batch-size", "-1"], "--batch-size must be in [1, "),
    (["--batch-size", "2.5"], "--batch-size must be an integer"),
    (["--lr", "-1"], "--lr must be in (0, 10], got -1"),
    (["--lr", "nan"], "--lr must be in (0, 10], got nan"),
    (["--lr", "0"], "--lr must be in (0, 10]"),
    (["--lr", "fast"], "--lr must be a number"),
    (["--con-dim", "0"], "--con-dim must be in [1, 4096], got 0"),
    (["--ci-enc-dim", "0"], "--ci-enc-dim must be in [1, 4096]"),
    (["--gen-dim", "0"], "--gen-dim must be in [1, 4096]"),
    (["--fac-dim", "-3"], "--fac-dim must be in [1, 1024]"),
    (["--seed", str(2 ** 70)], "--seed must be in [0, 4294967295]"),
    (["--seed", "-1"], "--seed must be in [0, "),
    (["--max-seconds", "nan"], "--max-seconds must be in (0, "),
    (["--max-seconds", "0"], "--max-seconds must be in (0, "),
    (["--max-seconds", "inf"], "--max-seconds must be in (0, "),
    (["--epochs", "0"], "--epochs must be in [1, "),
    (["--zig-loc", "-1"], "--zig-loc must be >= 0, got -1"),
    (["--kl-co-scale", "-1"], "--kl-co-scale must be >= 0, got -1"),
    (["--co-prior-tau", "0"], "--co-prior-tau must be > 0, got 0"),
    (["--cd-rate", "1"], "--cd-rate must be in [0, 1), got 1"),
    (["--dropout", "-0.1"], "--dropout must be in [0, 1)"),
    (["--samples", "-1"], "--samples must be in [0, "),
    (["--ramp-epochs", "-2"], "--ramp-epochs must be >= 0"),
    (["--co-dim", "-1"], "--co-dim must be in [0, 256]"),
    (["--recon", "binomial"], "invalid choice: 'binomial'"),
    (["--truth-units", "khz"], "invalid choice: 'khz'"),
    (["--resume", "--overwrite"], "not allowed with argument"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
]


@pytest.mark.parametrize("extra,msg", BAD_OPTIONS, ids=[" ".join(c[0])[:30] for c in BAD_OPTIONS])
def test_bad_lfads_option_exits_2_naming_it(tmp_path, capsys, extra, msg):
    out = tmp_path / "out"
    code, _, err = cli(capsys, ["train", "lfads", "--out", str(out), *extra])
    assert_one_line(code, err, msg)
    assert not out.exists()


BAD_COMMANDS = [
    ([], "missing required argument(s): COMMAND"),
    (["train"], "missing required argument(s): MODEL"),
    (["train", "lfads"], "missing required argument(s): --out"),
    (["train", "gpt", "--out", "x"], "invalid choice: 'gpt'"),
    (["train", "sparks", "--out", "x", "--tau-p", "0"], "--tau-p must be in [1, 10000], got 0"),
    (["train", "sparks", "--out", "x", "--embed-dim", "0"], "--embed-dim must be in [1, "),
    (["train", "sparks", "--out", "x", "--latent-dim", "-1"], "--latent-dim must be in [1, "),
    (["train", "sparks", "--out", "x", "--lr", "0"], "--lr must be in (0, 10]"),
    (["train", "sparks", "--out", "x", "--resume", "--overwrite"], "not allowed with argument"),
]


@pytest.mark.parametrize("argv,msg", BAD_COMMANDS, ids=[" ".join(c[0])[:30] or "empty" for c in BAD_COMMANDS])
def test_bad_command_lines_exit_2_in_one_line_without_internal_names(capsys, argv, msg):
    code, _, err = cli(capsys, argv)
    assert_one_line(code, err, msg)
    assert "cmd" not in err.split("(see")[0]


@pytest.mark.parametrize("argv", [[], ["train"], ["train", "lfads"], ["train", "sparks"], ["make-eg-data"]])
def test_help_at_every_level_has_a_description_examples_and_defaults(capsys, argv):
    code, text, _ = cli(capsys, [*argv, "--help"])
    assert code == 0
    assert "examples:" in text and text.count("python -m minilatent") >= 3
    if argv[:1] == ["train"] and len(argv) == 2:
        from minilatent.lfads import LFADSConfig
        assert "--resume" in text and "--overwrite" in text and "run folders:" in text
        if argv[1] == "lfads":   # the flags' defaults are the config's or the command line's stated ones
            from minilatent.__main__ import LFADS_CLI_DEFAULTS
            assert f"(default: {LFADSConfig().kl_co_scale})" in text and f"(default: {LFADS_CLI_DEFAULTS['gen_dim']})" in text
            assert "a tenth of the training trials, at least 16 and at most 64" in " ".join(text.split())
        else:
            assert "(default: 32)" in text


def test_cli_defaults_come_from_the_configs():
    from minilatent.__main__ import build_parser, LFADS_MODEL_OPTIONS, LFADS_CLI_DEFAULTS, LFADS_CLI_LR
    args = build_parser().parse_args(["train", "lfads", "--out", "x"])
    cfg = LFADSConfig()
    from minilatent.run import SMALL_DATA, SMALL_DATA_TRIALS, lfads_data_defaults
    for _, field, _, _ in LFADS_MODEL_OPTIONS:   # the config's, except the few the command line states itself
        if field in SMALL_DATA:                  # left to the data: the defaults above 300 trials, SMALL_DATA below
            assert getattr(args, field) is None, field
            assert lfads_data_defaults(SMALL_DATA_TRIALS)[field] == LFADS_CLI_DEFAULTS.get(field, getattr(cfg, field))
            assert lfads_data_defaults(SMALL_DATA_TRIALS - 1)[field] == SMALL_DATA[field]
        else:
            assert getattr(args, field) == LFADS_CLI_DEFAULTS.get(field, getattr(cfg, field)), field
    assert lfads_data_defaults(1040) == {"dropout": 0.1, "cd_rate": 0.5}
    assert lfads_data_defaults(149) == {"dropout": 0.3, "cd_rate": 0.3}
    assert (args.gen_dim, args.fac_dim, args.lr) == (128, 40, 3e-3) and args.lr == LFADS_CLI_LR
    assert args.kl_co_scale == cfg.kl_co_scale == 1e-4
    assert args.batch_size is None                # chosen from the data: lfads_batch_size
    assert args.epochs is None and args.ramp_epochs == cfg.kl_ramp_epochs   # resolved by main(): see below
    sp = build_parser().parse_args(["train", "sparks", "--out", "x"])
    from minilatent.__main__ import SPARKS_MODEL_OPTIONS, SPARKS_CLI_BATCH
    for _, field, _, _ in SPARKS_MODEL_OPTIONS:
        assert getattr(sp, field) == getattr(SPARKSConfig(), field), field
    assert (sp.batch_size, sp.lr) == (SPARKS_CLI_BATCH, 3e-3) == (5, 3e-3)   # chosen on the rotation benchmark


def test_epochs_default_is_the_trainers_unless_max_seconds_alone_sets_the_budget(tmp_path, capsys):
    path = tmp_path / "d.h5"
    datafiles.save_h5(path, synthetic.make_lorenz_rate(n_neurons=6, n_trials=60, n_bins=12, seed=0))
    tiny = ["--samples", "1", "--gen-dim", "4", "--fac-dim", "2", "--ic-enc-dim", "4"]
    code, out, _ = cli(capsys, ["train", "lfads", str(path), "--out", str(tmp_path / "a"), "--max-seconds", "2", *tiny])
    assert code == 0
    assert "budget: 2 s" in out and "(time budget)" in out       # no epoch limit: the clock ended it
    run = json.load(open(tmp_path / "a" / "run.json"))                # no sentinel: the budget as given
    assert run["options"]["epochs"] is None and run["budget"] == {"epochs": None, "max_seconds": 2.0}
    assert run["epochs_trained"] >= 1 and run["stop_reason"] == "time budget"
    code, out, _ = cli(capsys, ["train", "lfads", str(path), "--out", str(tmp_path / "b"), "--epochs", "2", "--max-seconds", "60", *tiny])
    assert code == 0
    assert "budget: 2 epochs or 60 s" in out


def test_cli_batch_size_is_a_tenth_of_the_training_trials_within_bounds(tmp_path, capsys):
    from minilatent.run import lfads_batch_size, SMALL_DATA
    assert [lfads_batch_size(n) for n in (5, 160, 199, 200, 640, 1040, 100000)] == [16, 16, 19, 20, 64, 64, 64]
    path = tmp_path / "d.h5"
    datafiles.save_h5(path, synthetic.make_lorenz_rate(n_neurons=6, n_trials=300, n_bins=12, seed=0))  # 240 training trials -> 24
    code, out, _ = cli(capsys, ["train", "lfads", str(path), "--out", str(tmp_path / "run"), *TINY_NOBATCH])
    assert code == 0
    assert ("chosen for this data: (240 training trials) batch size 24; dropout 0.3, cd-rate 0.3 (fewer than 300 "
            "training trials); --batch-size, --dropout, --cd-rate override") in out and set(SMALL_DATA) == {"dropout", "cd_rate"}
    options = json.load(open(tmp_path / "run" / "run.json"))["options"]       # the values used, not None
    assert (options["batch_size"], options["dropout"], options["cd_rate"]) == (24, 0.3, 0.3)
    # an option given is kept and not listed; with 300 training trials or more the other defaults stand
    code, out, _ = cli(capsys, ["train", "lfads", str(path), "--out", str(tmp_path / "run2"), *TINY_NOBATCH,
                                "--dropout", "0.2"])
    assert code == 0 and "; cd-rate 0.3 (fewer" in out and "--dropout" not in out.split("chosen")[1].split("\n")[0]
    assert json.load(open(tmp_path / "run2" / "run.json"))["options"]["dropout"] == 0.2
    big = tmp_path / "big.h5"
    datafiles.save_h5(big, synthetic.make_lorenz_rate(n_neurons=6, n_trials=400, n_bins=12, seed=0))   # 320 training
    code, out, _ = cli(capsys, ["train", "lfads", str(big), "--out", str(tmp_path / "run3"), *TINY_NOBATCH])
    assert code == 0 and "chosen for this data: (320 training trials) batch size 32; --batch-size override" in out
    options = json.load(open(tmp_path / "run3" / "run.json"))["options"]
    assert (options["dropout"], options["cd_rate"]) == (0.1, 0.5)


@pytest.mark.parametrize("out,msg", [
    ("", "--out: empty path"),
    ("/proc/minilatent_run", "inside a system folder (/proc)"),
    ("/proc", "inside a system folder (/proc)"),
])
def test_unwritable_out_exits_2(capsys, out, msg):
    code, _, err = cli(capsys, ["train", "lfads", "--out", out, *TINY])
    assert_one_line(code, err, msg)


def test_out_that_is_a_dangling_link_or_a_file_exits_2(tmp_path, capsys):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "missing")
    code, _, err = cli(capsys, ["train", "lfads", "--out", str(link), *TINY])
    assert_one_line(code, err, "is a symbolic link to a missing target")
    f = tmp_path / "file"
    f.write_text("x")
    code, _, err = cli(capsys, ["train", "lfads", "--out", str(f), *TINY])
    assert_one_line(code, err, "exists and is not a directory")
    code, _, err = cli(capsys, ["train", "lfads", "--out", str(f / "sub"), *TINY])
    assert_one_line(code, err, "is not a directory")


# -----------------------------------------------------------------------------
# the Python API: constructors and public methods name the argument

def small_lfads(**kw):
    return LFADS(LFADSConfig(n_neurons=4, ic_enc_dim=4, ic_dim=4, gen_dim=4, fac_dim=2, ci_enc_dim=4, con_dim=4, **kw))


def circuit():
    return Circuit(CircuitConfig(sizes=(20, 20), K=5, gain=0.5))


API = [
    (lambda: LFADSConfig(co_dim=1, con_dim=0), ValueError, "LFADSConfig.con_dim must be >= 1"),
    (lambda: LFADSConfig(ci_enc_dim=0), ValueError, "LFADSConfig.ci_enc_dim must be >= 1"),
    (lambda: LFADSConfig(n_neurons=2.5), TypeError, "LFADSConfig.n_neurons must be an integer"),
    (lambda: LFADSConfig(ic_prior_var=0), ValueError, "LFADSConfig.ic_prior_var must be > 0"),
    (lambda: LFADSConfig(co_prior_tau=0), ValueError, "LFADSConfig.co_prior_tau must be > 0"),
    (lambda: LFADSConfig(kl_co_scale=-1), ValueError, "LFADSConfig.kl_co_scale must be >= 0"),
    (lambda: LFADSConfig(cell_clip=-1), ValueError, "LFADSConfig.cell_clip must be > 0"),
    (lambda: LFADSConfig(dropout=float("nan")), TypeError, "LFADSConfig.dropout must be a finite number"),
    (lambda: LFADSConfig(gen_dim=True), TypeError, "LFADSConfig.gen_dim must be an integer"),
    (lambda: LFADSConfig(n_neurons=10, n_recon=5), ValueError, "n_recon must be 0 or >= n_neurons"),
    (lambda: LFADSConfig(kl_ramp_epochs=-1), ValueError, "kl_ramp_epochs must be >= 0"),
    (lambda: LFADSConfig(session_neurons=(5, 2.5), read_in_dim=3), TypeError, "session_neurons must hold integers"),
    (lambda: LFADSConfig(n_neurons="30"), TypeError, "LFADSConfig.n_neurons must be an integer"),
    (lambda: small_lfads().posterior_average(np.ones((3, 5, 4), np.float32)), TypeError, "expected a torch.Tensor"),
    (lambda: circuit().simulate(-1.0), ValueError, "shorter than one step"),
    (lambda: small_lfads()(torch.ones(3, 0, 4)), ValueError, "empty (3 trials, 0 bins)"),
    (lambda: small_lfads()(torch.ones(3, 5, 4), n_steps=0), ValueError, "n_steps must be an integer >= 1"),
    (lambda: small_lfads().posterior_average(torch.ones(3, 5, 4), n_steps=-2), ValueError, "n_steps must be"),
    (lambda: small_lfads().posterior_average(torch.ones(3, 5, 4), n_samples=-1), ValueError, "n_samples must be"),
    (lambda: small_lfads().compute_losses(torch.ones(0, 5, 4)), ValueError, "empty (0 trials"),
    (lambda: small_lfads().posterior_average(torch.full((3, 5, 4), float("nan"))), ValueError, "encod_data: contains NaN"),
    (lambda: circuit().simulate(0.01, stimulus=torch.ones(40)), ValueError, "stimulus must be (n_steps=10, N=40)"),
    (lambda: circuit().simulate(0.01, stimulus=torch.full((10, 40), float("nan"))), ValueError, "stimulus contains NaN"),
    (lambda: circuit().simulate(float("inf")), ValueError, "duration must be a finite number"),
    (lambda: circuit().simulate(0.01, record_every=0), ValueError, "record_every must be an integer in [1, 10]"),
    (lambda: circuit().simulate(0.01, record_every=11), ValueError, "record_every must be an integer in [1, 10]"),
    (lambda: circuit().simulate(0.01, noise=-1.0), ValueError, "noise must be a finite number >= 0"),
    (lambda: SPARKSConfig(tau_p=2.5), TypeError, "SPARKSConfig.tau_p must be an integer"),
    (lambda: SPARKSConfig(n_neurons=[3.5]), TypeError, "SPARKSConfig.n_neurons must hold integers"),
    (lambda: SPARKSConfig(beta=float("inf")), TypeError, "SPARKSConfig.beta must be a finite number"),
    (lambda: SPARKS(SPARKSConfig(n_neurons=4)).predict(torch.ones(2, 5, 4), n_samples=-1), ValueError, "n_samples"),
    (lambda: SPARKS(SPARKSConfig(n_neurons=4)).add_session(2.5), ValueError, "n_neurons must be an integer >= 1"),
    (lambda: TrainerConfig and Trainer(small_lfads(), torch.ones(4, 5, 4), batch_size=0), ValueError, "batch_size must be"),
    (lambda: Trainer(small_lfads(), torch.ones(4, 5, 4), lr=float("nan")), ValueError, "TrainerConfig.lr must be"),
    (lambda: Trainer(small_lfads(), torch.ones(4, 5, 4), lr_schedule="linear"), ValueError, "lr_schedule"),
    (lambda: Trainer(small_lfads(), torch.ones(4, 5, 4), max_seconds=float("nan")), ValueError, "max_seconds"),
    (lambda: metrics.true_rates({"train_truth": np.ones((2, 3, 4))}, "train"), KeyError, "conversion_factor"),
    (lambda: datafiles.truth_conversion({"train_truth": 1}, "khz"), ValueError, "units must be one of"),
]


@pytest.mark.parametrize("make,exc,msg", API, ids=[f"api{i}" for i in range(len(API))])
def test_api_raises_a_named_error(make, exc, msg):
    with pytest.raises(exc) as e:
        make()
    assert msg in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_float64_input_is_cast_and_gives_the_float32_result():
    torch.manual_seed(0)
    m = small_lfads().eval()
    x = torch.poisson(torch.ones(3, 6, 4))
    a = m(x)["params"]
    b = m(x.double())["params"]
    assert b.dtype == torch.float32 and torch.equal(a, b)
    assert torch.isfinite(m.compute_losses((x.double(), x.double()))["loss"])
    s = SPARKS(SPARKSConfig(n_neurons=4, n_outputs=1, embed_dim=4, latent_dim=2, tau_p=2)).eval()
    xs = (x > 1).float()
    assert np.array_equal(s.predict(xs)["now"], s.predict(xs.double())["now"])


def test_add_session_leaves_the_model_untouched_when_it_refuses():
    m = SPARKS(SPARKSConfig(n_neurons=[5], n_outputs=[2], joint_decoder=True, embed_dim=4, latent_dim=2, tau_p=2))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    cfg_before = (list(m.cfg.n_neurons), list(m.cfg.n_outputs))
    with pytest.raises(ValueError, match="joint decoder"):
        m.add_session(7, n_outputs=3)            # a joint decoder cannot predict 3 outputs
    assert (list(m.cfg.n_neurons), list(m.cfg.n_outputs)) == cfg_before and m.n_sessions == 1
    after = m.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert m.add_session(7, n_outputs=2) == 1 and m.cfg.n_neurons == [5, 7]     # an acceptable one still works


# -----------------------------------------------------------------------------
# truth in any units (issue 11 item 2)

def lorenz_file(tmp_path, name, units):
    d = synthetic.make_lorenz(n_conditions=6, trials_per_condition=5, n_valid_per_condition=1, n_bins=20, n_neurons=6,
                              seed=1)
    rates = metrics.true_rates(d, "train"), metrics.true_rates(d, "valid")  # counts per bin
    del d["conversion_factor"]
    scale = {"hz": 1 / d["dt"], "counts": 1.0, "odd": 7.0}[units]
    d["train_truth"], d["valid_truth"] = (r * scale for r in rates)
    p = tmp_path / f"{name}.h5"
    datafiles.save_h5(p, d)
    return p, d


@pytest.mark.parametrize("units,factor", [("hz", 100.0), ("counts", 1.0), ("odd", None)])
def test_truth_conversion_infers_evident_units_and_refuses_to_guess(tmp_path, units, factor):
    _, d = lorenz_file(tmp_path, units, units)
    f, note = datafiles.truth_conversion(d)
    assert f == (pytest.approx(factor) if factor else None)
    assert ("not evident" in note) == (factor is None) and "--truth-units" in note
    f, _ = datafiles.truth_conversion(d, "counts")
    assert f == 1.0
    assert datafiles.truth_conversion(d, "hz")[0] == pytest.approx(100.0)


@pytest.mark.parametrize("units,extra,factor,said", [
    ("hz", [], 100.0, "read as spikes/s (conversion_factor 100)"),
    ("counts", [], 1.0, "read as counts per bin (conversion_factor 1)"),
    ("odd", [], None, "rate R2 skipped"),
    ("odd", ["--truth-units", "counts"], 1.0, "--truth-units counts"),
])
def test_cli_states_the_truth_units_it_used_and_writes_them(tmp_path, capsys, units, extra, factor, said):
    p, d = lorenz_file(tmp_path, units, units)
    out = tmp_path / "run"
    code, stdout, err = cli(capsys, ["train", "lfads", str(p), "--out", str(out), *TINY, *extra])
    assert code == 0, err
    assert said in stdout
    with h5py.File(out / "lfads_output.h5") as f:
        if factor is None:
            assert "conversion_factor" not in f and "valid rate R2" not in stdout
        else:
            assert f["conversion_factor"][()] == pytest.approx(factor)
            # the printed R2 is the one computed in counts per bin
            r2 = metrics.rate_r2(f["valid_output_params"][()], d["valid_truth"] / factor)
            assert f"valid rate R2 {r2:.4f}" in stdout


def test_out_on_a_read_only_file_system_exits_2(tmp_path, capsys, monkeypatch):
    import os
    from types import SimpleNamespace
    real = os.statvfs
    monkeypatch.setattr(os, "statvfs", lambda p: SimpleNamespace(f_flag=os.ST_RDONLY) if str(p) == str(tmp_path)
                        else real(p))
    code, _, err = cli(capsys, ["train", "lfads", "--out", str(tmp_path / "run"), *TINY])
    assert_one_line(code, err, f"{tmp_path} is on a read-only file system")
    assert not (tmp_path / "run").exists()
