"""Datasets from circuits with a known truth (notebook 07): seeded, consistent with the circuit's theory, savable."""
import math

import numpy as np
import pytest
import torch

from minilatent import synthetic, datafiles, metrics
from minilatent.circuits import ring_bump


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


def test_circular_metrics():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 2 * np.pi, 200)
    assert abs(metrics.circular_correlation(a, a + 1.3) - 1) < 1e-12
    assert abs(metrics.circular_correlation(a, 2.0 - a) + 1) < 1e-12
    assert abs(metrics.circular_correlation(a, rng.uniform(0, 2 * np.pi, 200))) < 0.15
    np.testing.assert_allclose(metrics.circular_distance([0.1, 6.2, np.pi], [6.2, 0.1, -np.pi]),
                               np.degrees([0.1 + 2 * np.pi - 6.2] * 2 + [0.0]), atol=1e-9)
    # a decoder from features that are an affine image of (cos, sin) recovers the phase exactly
    M = rng.normal(size=(2, 5))
    f = np.stack([np.cos(a), np.sin(a)], 1) @ M + 0.3
    W = metrics.fit_phase_decoder(f, a)
    assert metrics.circular_distance(metrics.decode_phase(f, W), a).max() < 1e-8
    with pytest.raises(ValueError, match="angles"):
        metrics.circular_correlation([0.1, 0.2], [0.3, 0.4])
