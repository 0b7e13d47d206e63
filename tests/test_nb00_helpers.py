""" Tests for the notebook-00 helpers (smoothing, binning, Fano factor, the baseline table, the
spikes-and-rates viewer) against direct NumPy loops and closed-form Poisson facts. """

import math

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

from minilatent import synthetic, metrics
from minilatent import widgets as W


def smooth_loop(x, sigma, exclude_center=False):
    """ the textbook definition, one output bin at a time """
    B, T, N = x.shape
    out = np.zeros((B, T, N))
    half = math.ceil(4 * sigma)
    for t in range(T):
        w = np.array([math.exp(-0.5 * ((t - s) / sigma) ** 2) if abs(t - s) <= half and not (exclude_center and s == t)
                      else 0.0 for s in range(T)])
        out[:, t, :] = np.tensordot(w, x, axes=([0], [1])) / w.sum()
    return out


@pytest.mark.parametrize("sigma", [0.7, 3.0, 30.0])   # 30 bins: a kernel longer than the trial
@pytest.mark.parametrize("exclude_center", [False, True])
def test_gaussian_smooth_matches_loop(sigma, exclude_center):
    x = np.random.default_rng(0).poisson(0.5, size=(3, 40, 2)).astype(np.float32)
    got = metrics.gaussian_smooth(x, sigma, exclude_center=exclude_center)
    assert got.shape == x.shape
    np.testing.assert_allclose(got, smooth_loop(x, sigma, exclude_center), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("exclude_center", [False, True])
def test_gaussian_smooth_in_blocks_matches_loop(monkeypatch, exclude_center):
    """ long recordings are smoothed a block of bins at a time; the blocks must join seamlessly """
    monkeypatch.setattr(metrics, "_SMOOTH_BLOCK", 7)
    x = np.random.default_rng(6).poisson(0.5, size=(2, 45, 3)).astype(np.float32)
    for sigma in (0.8, 2.5, 20.0):
        np.testing.assert_allclose(metrics.gaussian_smooth(x, sigma, exclude_center=exclude_center),
                                   smooth_loop(x, sigma, exclude_center), rtol=1e-10, atol=1e-12)


def test_gaussian_smooth_constant_and_leave_out():
    x = np.full((1, 25, 1), 3.0)
    np.testing.assert_allclose(metrics.gaussian_smooth(x, 4.0), 3.0)     # edges not biased low
    y = np.zeros((1, 25, 1)); y[0, 12, 0] = 1.0
    assert metrics.gaussian_smooth(y, 2.0, exclude_center=True)[0, 12, 0] == 0.0  # a bin never predicts itself
    with pytest.raises(ValueError, match="sigma_bins"):
        metrics.gaussian_smooth(x, 0.0)
    with pytest.raises(ValueError, match="trials, time, neurons"):
        metrics.gaussian_smooth(x[0], 2.0)
    with pytest.raises(ValueError, match="no weight"):
        metrics.gaussian_smooth(x, 0.01, exclude_center=True)


def test_rebin_matches_loop_and_rejects_bad_factor():
    x = np.random.default_rng(1).poisson(1.0, size=(2, 23, 3))
    got = metrics.rebin(x, 5)
    assert got.shape == (2, 4, 3)
    for b in range(2):
        for k in range(4):
            np.testing.assert_array_equal(got[b, k], x[b, 5 * k:5 * k + 5].sum(0))
    np.testing.assert_array_equal(metrics.rebin(x, 1), x)
    for bad in (0, 2.5, 24):
        with pytest.raises(ValueError, match="factor"):
            metrics.rebin(x, bad)


def test_fano_factor_direct_and_poisson_theory():
    c = np.array([[1, 0], [3, 0], [2, 0], [6, 0]], float)
    f = metrics.fano_factor(c, axis=0)
    assert f[0] == pytest.approx(np.var(c[:, 0], ddof=1) / c[:, 0].mean()) and np.isnan(f[1])
    # Poisson counts: Fano factor 1 within a few standard errors (SE ~ sqrt(2 / (n - 1)))
    n = 20000
    counts = np.random.default_rng(2).poisson(3.7, size=n)
    assert abs(metrics.fano_factor(counts) - 1.0) < 4 * math.sqrt(2 / (n - 1))
    # regular counts have Fano factor 0; a rate that varies across trials pushes it above 1
    assert metrics.fano_factor(np.full(10, 4.0)) == 0.0
    rng = np.random.default_rng(3)
    assert metrics.fano_factor(rng.poisson(rng.gamma(2.0, 2.0, size=n))) > 1.5
    with pytest.raises(ValueError, match="at least 2"):
        metrics.fano_factor(np.ones((1, 3)))


def test_baseline_scores_against_direct_computation():
    d = synthetic.make_lorenz(n_conditions=6, trials_per_condition=6, n_valid_per_condition=2, n_neurons=5,
                              n_bins=40, base_rate=20.0, seed=4)
    got = metrics.baseline_scores(d, smooth_sigmas=(2, 5), psth_sigmas=(1, 3))
    x, truth = d["valid_recon_data"], metrics.true_rates(d, "valid")
    r2 = {s: metrics.r2_score(metrics.gaussian_smooth(x, s), truth, per_column=True) for s in (2, 5)}
    s_best = max(r2, key=lambda s: r2[s].mean())
    assert got["smoothing"]["sigma_r2"] == s_best
    assert got["smoothing"]["r2"] == pytest.approx(r2[s_best].mean())
    assert got["smoothing"]["r2_median"] == pytest.approx(np.median(r2[s_best]))
    bps = max(metrics.bits_per_spike(metrics.gaussian_smooth(x, s, exclude_center=True), x) for s in (2, 5))
    assert got["smoothing"]["bps"] == pytest.approx(bps)
    psth = {s: metrics.condition_average(d["train_recon_data"], d["train_cond_idx"], d["valid_cond_idx"], s)
            for s in (1, 3)}
    assert got["psth"]["r2"] == pytest.approx(max(metrics.rate_r2(p, truth) for p in psth.values()))
    assert got["psth"]["bps"] == pytest.approx(max(metrics.bits_per_spike(p, x) for p in psth.values()))
    assert got["truth"]["r2"] == 1.0 and got["truth"]["bps"] == pytest.approx(metrics.bits_per_spike(truth, x))
    # without truth or conditions: only what can be computed, R^2 is NaN
    bare = {k: v for k, v in d.items() if "truth" not in k and "cond_idx" not in k}
    got2 = metrics.baseline_scores(bare, smooth_sigmas=(2, 5))
    assert set(got2) == {"smoothing"} and np.isnan(got2["smoothing"]["r2"])
    assert got2["smoothing"]["bps"] == pytest.approx(bps)


def test_plot_rate_estimates_draws_up_to_t():
    rng = np.random.default_rng(5)
    rates = rng.uniform(0.1, 1.0, size=(30, 4))
    spikes = rng.poisson(rates)
    est = rates * 0.5
    fig, ax = plt.subplots()
    W.plot_rate_estimates(spikes, 9, rates, {"smoothed": est}, neurons=[2], ax=ax)
    lines = [l for l in ax.lines if l.get_label() in ("true rate", "smoothed")]
    assert len(lines) == 2
    scale = max(rates[:, 2].max(), est[:, 2].max())
    np.testing.assert_allclose(lines[0].get_ydata(), 0.85 * rates[:10, 2] / scale)
    np.testing.assert_allclose(lines[1].get_ydata(), 0.85 * est[:10, 2] / scale)
    with pytest.raises(ValueError, match="outside"):
        W.plot_rate_estimates(spikes, 30, rates)
    with pytest.raises(ValueError, match="'bad' has shape"):
        W.plot_rate_estimates(spikes, 3, rates, {"bad": est[:5]})
    fig2 = W.plot_spikes_latents_frame(4, spikes, rates, {"smoothed": est}, latents=rng.normal(size=(30, 3)))
    assert len(fig2.axes) == 2
    plt.close("all")
