""" Synthetic data with known truth: the generators (Lorenz, chaotic RNN, the suite, rotation, ring and bistable circuits). """
import math
import os

import h5py
import numpy as np
import pytest
import torch

from minilatent import synthetic, datafiles, metrics
from minilatent.circuits import ring_bump



@pytest.mark.parametrize("rate", [1.0, 20.0])
def test_lorenz_rate_has_the_mean_rate_it_was_asked_for(rate):
    d = synthetic.make_lorenz_rate(n_neurons=20, n_trials=200, n_bins=50, mean_rate_hz=rate, seed=3)
    truth = np.concatenate([d["train_truth"], d["valid_truth"]])
    assert truth.mean() == pytest.approx(rate, rel=1e-4)                  # exact by construction
    counts = np.concatenate([d["train_encod_data"], d["valid_encod_data"]])
    se = np.sqrt(rate * 0.01 / counts.size)                               # Poisson: the count mean's std error
    assert abs(counts.mean() - rate * 0.01) < 5 * se
    assert d["train_encod_data"].shape == (160, 50, 20) and d["valid_encod_data"].shape == (40, 50, 20)
    # the rates are the model's: log rate is affine in the true latents
    z = d["train_latents"].reshape(-1, 3)
    logr = np.log(d["train_truth"].reshape(-1, 20))
    A = np.c_[z, np.ones(len(z))]
    resid = logr - A @ np.linalg.lstsq(A, logr, rcond=None)[0]
    assert np.abs(resid).max() < 1e-3


def test_chaotic_rnn_rate_hits_its_rate_and_counts_are_poisson_of_the_truth():
    d = synthetic.make_chaotic_rnn_rate(n_neurons=30, n_trials=200, n_bins=60, mean_rate_hz=4.0, seed=2)
    truth = np.concatenate([d["train_truth"], d["valid_truth"]])
    assert truth.mean() == pytest.approx(4.0, rel=1e-4)
    x, r = d["train_encod_data"].astype(np.float64), d["train_truth"].astype(np.float64) * 0.01
    assert abs(x.sum() - r.sum()) < 5 * np.sqrt(r.sum())
    assert d["train_encod_data"].shape == (160, 60, 30)


def test_suite_spans_the_ranges_of_the_issue():
    rates, neurons, trials, bins = [], [], [], []
    for name, (fn, kw) in synthetic.SUITE.items():
        rates.append(kw["mean_rate_hz"]); neurons.append(kw["n_neurons"])
        trials.append(kw["n_trials"]); bins.append(kw["n_bins"])
        assert all(1.0 <= r <= 20.0 for r in rates) and 20 <= kw["n_neurons"] <= 200
        assert 200 <= kw["n_trials"] <= 2000 and 50 <= kw["n_bins"] <= 200
    assert (min(rates), max(rates)) == (1.0, 20.0) and (min(neurons), max(neurons)) == (20, 200)
    assert (min(trials), max(trials)) == (200, 2000) and (min(bins), max(bins)) == (50, 200)
    assert {fn.__name__ for fn, _ in synthetic.SUITE.values()} == {"make_lorenz_rate", "make_chaotic_rnn_rate"}


def test_public_like_dataset_is_in_the_original_layout_with_truth_in_hz(tmp_path):
    d = synthetic.make_suite("lorenz_sparse")
    assert "conversion_factor" not in d and "train_encod_data" not in d
    assert d["train_data"].shape == (640, 100, 60) and d["valid_data"].shape == (160, 100, 60)
    assert d["train_truth"].mean() == pytest.approx(1.8, rel=0.02)        # Hz, as the public file has it
    datafiles.save_h5(tmp_path / "f.h5", d)
    back = datafiles.load_h5(tmp_path / "f.h5")
    np.testing.assert_array_equal(back["valid_encod_data"], d["valid_data"])
    assert metrics.bits_per_spike(d["valid_truth"] * 0.01, d["valid_data"]) == pytest.approx(0.95, abs=0.02)
    with pytest.raises(KeyError, match="unknown suite dataset"):
        synthetic.make_suite("nope")


def test_lorenz_follows_the_recipe(lorenz):
    d = lorenz
    assert d["train_encod_data"].shape == (24, 40, 30) and d["valid_encod_data"].shape == (6, 40, 30)
    assert d["train_latents"].shape == (24, 40, 3)
    # counts are whole, non-negative; truth / conversion_factor = counts per bin and matches the log-linear read-out
    x = d["train_encod_data"]
    assert (x >= 0).all() and (x == np.round(x)).all()
    rates = metrics.true_rates(d, "train")
    W = d["readout_weights"]
    expected = np.exp(d["train_latents"] @ W + math.log(5.0 * 0.01))
    np.testing.assert_allclose(rates, expected, rtol=1e-5)
    # trials of a condition share their rates; the split keeps the last trial of each condition for validation
    c = d["train_cond_idx"]
    assert np.array_equal(rates[c == 2][0], rates[c == 2][1])
    assert sorted(set(d["valid_cond_idx"])) == list(range(6))


def test_lorenz_integrator_against_hand_euler_step():
    x0 = np.array([[1.0, 2.0, 20.0]])
    out = synthetic.lorenz_trajectories(x0, 1, dt=0.006, burn_in=0)
    x, y, z = x0[0]
    exp = x0[0] + 0.006 * np.array([10 * (y - x), x * (28 - z) - y, x * y - 8 / 3 * z])
    np.testing.assert_allclose(out[0, 0], exp)


def test_chaotic_rnn_with_inputs_has_one_pulse_per_trial_in_the_middle_half():
    d = synthetic.make_chaotic_rnn(n_conditions=5, trials_per_condition=4, n_valid_per_condition=1, n_neurons=20,
                                   with_inputs=True, seed=0)
    u = d["train_inputs"][..., 0]
    assert ((u > 0).sum(1) == 1).all()
    t = u.argmax(1)
    assert (t >= 25).all() and (t < 75).all()
    r = metrics.true_rates(d, "train")
    assert r.min() >= 0 and r.max() <= 30 * 0.01 + 1e-6
    # the pulse changes the trajectory: same condition, different pulse times, different rates after the pulse
    c = d["train_cond_idx"]
    a, b = np.nonzero(c == 0)[0][:2]
    assert not np.allclose(r[a], r[b])


def test_eg_data_regenerates_bit_for_bit(tmp_path):
    paths = synthetic.make_eg_data(tmp_path)
    assert paths, "no example datasets are defined"
    for p in paths:
        shipped = os.path.join(datafiles.EG_DATA, os.path.basename(p))
        assert os.path.exists(shipped), f"{shipped} is missing: run `python -m minilatent make-eg-data`"
        with h5py.File(p) as new, h5py.File(shipped) as old:
            assert sorted(new.keys()) == sorted(old.keys()), p
            for k in new.keys():
                a, b = new[k][()], old[k][()]
                assert a.dtype == b.dtype and np.array_equal(a, b), f"{os.path.basename(p)}:{k} differs"


def test_make_lorenz_sessions_share_latents_but_not_neurons():
    s = synthetic.make_lorenz_sessions(neurons=(4, 6), n_conditions=3, trials_per_condition=2, n_valid_per_condition=1,
                                       n_bins=15, seed=2)
    np.testing.assert_array_equal(s[0]["train_latents"], s[1]["train_latents"])
    assert s[0]["train_encod_data"].shape[2] == 4 and s[1]["train_encod_data"].shape[2] == 6
    for d in s:   # the truth is exp(W z + b) of that session's own read-out
        W = d["readout_weights"]
        np.testing.assert_allclose(np.log(metrics.true_rates(d, "train")), d["train_latents"] @ W + math.log(0.05),
                                   rtol=1e-4, atol=1e-4)


def test_gaussian_lorenz_is_signed_continuous_and_loads_back(tmp_path):
    d = synthetic.make_lorenz_gaussian(n_channels=5, n_conditions=4, trials_per_condition=3, n_valid_per_condition=1,
                                       n_bins=20, noise_std=0.3, seed=0)
    x, mean = d["train_encod_data"], metrics.true_rates(d, "train")
    assert (x < 0).any() and not np.array_equal(x, np.round(x))
    assert np.std(x - mean) == pytest.approx(0.3, rel=0.1)
    np.testing.assert_allclose(mean, d["train_latents"] @ d["readout_weights"], rtol=1e-5, atol=1e-5)
    p = tmp_path / "g.h5"
    datafiles.save_h5(p, d)
    with pytest.raises(ValueError, match=">= 0"):
        datafiles.load_h5(p)
    back = datafiles.load_h5(p, counts=False, nonnegative=False)
    np.testing.assert_array_equal(back["train_encod_data"], x)


def test_rotation_examples_carry_their_truth():
    # (that they regenerate bit for bit is tests/test_synthetic.py::test_eg_data_regenerates_bit_for_bit)
    from minilatent import synthetic, datafiles
    assert {"rotation", "rotation_session0", "rotation_session1"} <= set(synthetic.EXAMPLES)
    d = datafiles.load_h5(datafiles.eg_path("rotation"))
    truth = synthetic.rotation_truth(d, "valid")                  # rebuilt from phases and tuning
    assert truth.shape == d["valid_encod_data"].shape and 0 < truth.min() and truth.max() < 1
    # the spikes follow the truth: mean firing matches the mean probability
    assert abs(d["train_encod_data"].mean() - synthetic.rotation_truth(d, "train").mean()) < 0.005


@pytest.fixture(scope="module")
def ring():
    torch.set_num_threads(1)
    return synthetic.make_ring_trials(n_trials=120, n_valid=30, seed=3)


@pytest.fixture(scope="module")
def bistable():
    return synthetic.make_bistable_trials(n_trials=120, n_valid=30, seed=3)


def test_ring_layout_and_seed(ring):
    assert ring["train_encod_data"].shape == (90, 50, 60) and ring["valid_encod_data"].shape == (30, 50, 60)
    x = ring["train_encod_data"]
    assert np.all(x == np.round(x)) and x.min() >= 0
    again = synthetic.make_ring_trials(n_trials=120, n_valid=30, seed=3)
    for k in ring:
        np.testing.assert_array_equal(np.asarray(ring[k]), np.asarray(again[k]), err_msg=k)
    other = synthetic.make_ring_trials(n_trials=120, n_valid=30, seed=4)
    assert not np.array_equal(other["train_encod_data"], x)


def test_ring_truth_is_the_bump(ring):
    # the true rates of the recorded neurons peak at the bump phase: their population vector (over the recorded
    # neurons' own, unevenly spaced angles, hence a small bias) points at the stored phase, and the bump has the
    # theory's width (J1 = 4: 90 deg half-width)
    hz = ring["valid_truth"] - 2.0                                          # minus base_rate
    pv = metrics.ring_phase(hz, ring["neuron_angles"])
    err = np.degrees(np.abs(np.angle(np.exp(1j * (pv - ring["valid_phase"])))))
    assert np.median(err) < 10 and np.quantile(err, 0.99) < 30
    W = metrics.fit_phase_decoder(ring["train_truth"], ring["train_phase"])  # a linear read-out of the true rates
    assert np.median(metrics.circular_distance(metrics.decode_phase(ring["valid_truth"], W), ring["valid_phase"])) < 3
    frac_active = (hz[:, 0] > 0.1 * hz[:, 0].max(-1, keepdims=True)).mean()  # first bin: the theory's bump
                                                                              # (the noise lifts the rest a little)
    assert abs(frac_active - 2 * ring_bump(-2.0, 4.0, 1.0)[0] / (2 * math.pi)) < 0.1
    lat = ring["valid_latents"]
    np.testing.assert_allclose(np.arctan2(lat[..., 1], lat[..., 0]) % (2 * np.pi), ring["valid_phase"], atol=1e-4)
    # counts per bin = truth / conversion_factor on average
    ratio = ring["train_encod_data"].mean() / (ring["train_truth"] / ring["conversion_factor"]).mean()
    assert abs(ratio - 1) < 0.03


def test_ring_cue_moves_the_bump(ring):
    t = ring["train_cue_time"]
    has = ~np.isnan(t)
    assert 0.3 < has.mean() < 0.7
    ph, ang = ring["train_phase"], ring["train_cue_angle"]
    # 0.2 s after the end of the cue (at the last bin at most) the bump sits near the cue angle
    k = np.minimum(((t[has] + 0.1 + 0.2) / 0.02).astype(int), 49)
    err = np.degrees(np.abs(np.angle(np.exp(1j * (ph[has, :][np.arange(has.sum()), k] - ang[has])))))
    assert np.median(err) < 20
    # without a cue the bump only drifts
    drift = np.degrees(np.abs(np.angle(np.exp(1j * (ph[~has, -1] - ph[~has, 0])))))
    assert np.median(drift) < 20
    # the inputs mark the cue's bins: the first marked bin contains the cue time
    first = ring["train_inputs"][has, :, 0].argmax(1)
    np.testing.assert_array_equal(first, np.floor(t[has] / 0.02 + 1e-6).astype(int))
    assert ring["train_inputs"][~has].sum() == 0


def test_bistable_states_match_theory(bistable):
    fp = bistable["fixed_points"]
    assert fp.shape == (3, 3) and fp[:, 2].sum() == 2
    lat, pulse = bistable["train_latents"], bistable["train_pulse_time"]
    end = lat[:, -1]                                                        # (trials, 2) after 1 s
    stable = fp[fp[:, 2] == 1, :2]
    d = np.abs(end[:, None] - stable[None]).max(-1).min(1)                  # distance to the nearest stable point
    assert np.median(d) < 1e-3 and d.max() < 0.03                          # every trial settles on one of them
                                                                            # (a late pulse is still settling)
    has = ~np.isnan(pulse)
    assert bistable["train_state"][has, -1].all()                           # a pulse ends in the high state
    assert 0.2 < bistable["train_state"][~has, -1].mean() < 0.8             # without one, both states occur
    hz = synthetic.bistable_readout(bistable, lat)
    np.testing.assert_allclose(hz, bistable["train_truth"], rtol=1e-5)
    assert bistable["train_inputs"][~has].sum() == 0 and (bistable["train_inputs"][has].sum((1, 2)) > 0).all()


def test_save_and_load_round_trip(ring, bistable, tmp_path):
    for name, d in (("ring", ring), ("bistable", bistable)):
        p = tmp_path / f"{name}.h5"
        datafiles.save_h5(p, d)
        back = datafiles.load_h5(p)
        for k in ("train_encod_data", "valid_truth", "valid_latents", "conversion_factor"):
            np.testing.assert_allclose(np.asarray(back[k], np.float64), np.asarray(d[k], np.float64), err_msg=k)


@pytest.mark.parametrize("kw", [dict(n_valid=0), dict(n_recorded=500), dict(J1=1.5), dict(dt=0.0153)])
def test_ring_bad_arguments(kw):
    with pytest.raises(ValueError, match=list(kw)[0]):
        synthetic.make_ring_trials(**{"n_trials": 20, "n_valid": 5, **kw})


def test_bistable_bad_arguments():
    with pytest.raises(ValueError, match="two stable"):
        synthetic.make_bistable_trials(n_trials=20, n_valid=5, I=(0.0, -6.0))
    with pytest.raises(ValueError, match="n_recorded"):
        synthetic.make_bistable_trials(n_trials=20, n_valid=5, n_recorded=1)
