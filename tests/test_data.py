import math
import os

import h5py
import numpy as np
import pytest

from minilatent import synthetic, datafiles, metrics
from conftest import write_h5


@pytest.fixture(scope="module")
def lorenz():
    return synthetic.make_lorenz(n_conditions=6, trials_per_condition=5, n_valid_per_condition=1, n_bins=40, seed=3)


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


def test_h5_round_trip_lfads_torch_layout(tmp_path, lorenz):
    p = tmp_path / "x.h5"
    datafiles.save_h5(p, lorenz)
    back = datafiles.load_h5(p)
    for k, v in lorenz.items():
        np.testing.assert_array_equal(np.asarray(back[k]), np.asarray(v), err_msg=k)
    with h5py.File(p) as f:  # what lfads-torch reads
        for k in datafiles.DATA_KEYS:
            assert f[k].ndim == 3


def test_h5_reads_original_lfads_layout(tmp_path, lorenz):
    p = tmp_path / "orig.h5"
    with h5py.File(p, "w") as f:
        f["train_data"] = lorenz["train_encod_data"].astype(np.int64)
        f["valid_data"] = lorenz["valid_encod_data"].astype(np.int64)
        f["train_truth"] = lorenz["train_truth"]
        f["valid_truth"] = lorenz["valid_truth"]
        f["conversion_factor"] = 100.0
    d = datafiles.load_h5(p)
    np.testing.assert_array_equal(d["train_encod_data"], lorenz["train_encod_data"])
    np.testing.assert_array_equal(d["valid_recon_data"], lorenz["valid_encod_data"])
    assert d["train_encod_data"].dtype == np.float32
    np.testing.assert_allclose(metrics.true_rates(d, "valid"), metrics.true_rates(lorenz, "valid"))


GOOD = np.ones((4, 10, 3), np.float32)


@pytest.mark.parametrize("arrays,exc,msg", [
    (dict(train_encod_data=GOOD), KeyError, "valid_encod_data"),
    (dict(something=GOOD), KeyError, "train_encod_data"),
    (dict(train_data=GOOD[0], valid_data=GOOD), ValueError, "train_encod_data: expected 3 dims"),
    (dict(train_data=np.where(np.arange(3) == 1, np.nan, GOOD), valid_data=GOOD), ValueError, "NaN"),
    (dict(train_data=GOOD, valid_data=-GOOD), ValueError, "must be >= 0"),
    (dict(train_data=GOOD * 0.5, valid_data=GOOD), ValueError, "whole numbers"),
    (dict(train_data=GOOD, valid_data=np.ones((4, 10, 5))), ValueError, "3 neurons but valid_encod_data has 5"),
    (dict(train_data=GOOD.astype("S1"), valid_data=GOOD), ValueError, "dtype"),
    (dict(train_data=GOOD, valid_data=GOOD, train_truth=np.ones((2, 10, 3))), ValueError, "train_truth"),
])
def test_bad_files_give_clear_errors(tmp_path, arrays, exc, msg):
    with pytest.raises(exc, match=msg):
        datafiles.load_h5(write_h5(tmp_path / "bad.h5", **arrays))


def test_missing_and_non_hdf5_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such data file"):
        datafiles.load_h5(tmp_path / "nope.h5")
    p = tmp_path / "text.h5"
    p.write_text("hello")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        datafiles.load_h5(p)


def test_save_is_atomic_and_keeps_the_old_file_on_failure(tmp_path, lorenz):
    p = tmp_path / "keep.h5"
    datafiles.save_h5(p, lorenz)
    before = p.read_bytes()
    with pytest.raises(Exception):
        datafiles.save_h5(p, {"bad": object()})
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["keep.h5"]


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


# --- metrics ---------------------------------------------------------------


def test_r2_and_latent_r2():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(10, 20, 4))
    assert metrics.rate_r2(true, true) == 1.0
    each_mean = np.broadcast_to(true.reshape(-1, 4).mean(0), true.shape)
    assert metrics.rate_r2(each_mean, true) == pytest.approx(0.0, abs=1e-12)
    # latents that are an exact affine map of the factors are recovered on held-out trials
    f = rng.normal(size=(30, 20, 5))
    A, b = rng.normal(size=(5, 3)), rng.normal(size=3)
    np.testing.assert_allclose(metrics.latent_r2(f, f @ A + b), 1.0, atol=1e-10)


def test_bits_per_spike_against_direct_computation():
    rng = np.random.default_rng(1)
    rates = rng.uniform(0.05, 2.0, size=(6, 15, 4))
    x = rng.poisson(rates).astype(float)
    nll = lambda r: sum(r.flat[i] - x.flat[i] * math.log(r.flat[i]) + math.lgamma(x.flat[i] + 1) for i in range(x.size))
    null = np.broadcast_to(x.reshape(-1, 4).mean(0), x.shape)
    expected = (nll(null) - nll(rates)) / (x.sum() * math.log(2))
    assert metrics.bits_per_spike(rates, x) == pytest.approx(expected, rel=1e-10)
    assert metrics.bits_per_spike(null, x) == pytest.approx(0.0, abs=1e-12)
    assert metrics.bits_per_spike(rates, x) > 0



def nlb_bits_per_spike(rates, spikes, floor=None):
    """ nlb_tools' evaluation.bits_per_spike as a plain loop: bins with a NaN count are skipped, a rate of exactly 0
    becomes 1e-9, the null is each neuron's mean count over its observed bins. floor=1e-9 instead raises every rate
    below 1e-9 to 1e-9 (what minilatent did before: the loop shows that the test tells the two apart). """
    B, T, N = spikes.shape
    bins = [(b, t, n) for b in range(B) for t in range(T) for n in range(N) if not math.isnan(spikes[b, t, n])]
    mean = [np.mean([spikes[b, t, n] for b, t, m in bins if m == n]) for n in range(N)]

    def nll(rate):
        total = 0.0
        for b, t, n in bins:
            r, x = rate(b, t, n), spikes[b, t, n]
            r = max(r, floor) if floor else (1e-9 if r == 0 else r)
            total += r - x * math.log(r) + math.lgamma(x + 1)
        return total
    n_spikes = sum(spikes[i] for i in bins)
    return (nll(lambda b, t, n: mean[n]) - nll(lambda b, t, n: rates[b, t, n])) / n_spikes / math.log(2)


def test_bits_per_spike_is_nlb_tools_on_tiny_and_zero_rates_and_missing_counts():
    rng = np.random.default_rng(2)
    rates = rng.uniform(0.05, 2.0, size=(3, 8, 4))
    x = rng.poisson(rates).astype(float)
    x[:, :, 3] = 0.0                                   # a silent neuron: its null rate is 0, scored as 1e-9
    x[0, 0, 0], rates[0, 0, 0] = 1.0, 1e-12            # a spike the model called nearly impossible
    x[0, 1, 0], rates[0, 1, 0] = 0.0, 1e-30            # no spike where the model said so
    x[0, 2, 1], rates[0, 2, 1] = 2.0, 0.0              # a zero rate: 1e-9, as nlb_tools
    x[1, 3, 2], rates[1, 3, 2] = 1.0, 5e-10
    x[2, 4, 1], rates[2, 4, 1] = np.nan, np.nan        # an unobserved bin (NLB files): left out, whatever the rate
    x[2, 5, 0] = np.nan
    want = nlb_bits_per_spike(rates, x)
    assert metrics.bits_per_spike(rates, x) == pytest.approx(want, rel=1e-12)
    assert abs(nlb_bits_per_spike(rates, x, floor=1e-9) - want) > 0.05     # clipping tiny rates would differ
    # the same on the held-out regions, and on float32 rates up to float32 rounding
    assert metrics.regional_bits_per_spike(rates, x, 4, 8)["bps"] == pytest.approx(want, rel=1e-12)
    r32 = rates.astype(np.float32)
    assert metrics.bits_per_spike(r32, x) == pytest.approx(nlb_bits_per_spike(r32.astype(float), x), rel=1e-12)
    # what nlb_tools asserts against, a ValueError here
    for bad, match in ((-1e-3, ">= 0"), (np.nan, "NaN"), (np.inf, "infinite")):
        r = rates.copy()
        r[1, 1, 1] = bad
        with pytest.raises(ValueError, match=match):
            metrics.bits_per_spike(r, x)
    with pytest.raises(ValueError, match="do not match"):
        metrics.bits_per_spike(rates[:, :4], x)

def test_baselines():
    x = np.zeros((2, 50, 1))
    x[:, 25, 0] = 1.0
    s = metrics.gaussian_smooth(x, 3.0)
    assert s[0, :, 0].sum() == pytest.approx(1.0, rel=1e-3) and s[0, 25, 0] == s[0, :, 0].max()
    assert s[0, 25, 0] == pytest.approx(1 / (3.0 * math.sqrt(2 * math.pi)), rel=1e-3)
    # a kernel wider than the trial keeps the shape, and a constant rate stays constant at the edges
    wide = metrics.gaussian_smooth(np.full((2, 10, 3), 0.7), 40.0)
    assert wide.shape == (2, 10, 3) and np.allclose(wide, 0.7)
    train = np.stack([np.full((5, 2), c + 1.0) for c in (0, 1, 0, 1)])
    pred = metrics.condition_average(train, [0, 1, 0, 1], [1, 0])
    assert (pred[0] == 2.0).all() and (pred[1] == 1.0).all()
    with pytest.raises(ValueError, match="no training trials"):
        metrics.condition_average(train, [0, 1, 0, 1], [2])
