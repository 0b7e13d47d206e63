""" Metrics and baselines (bits/spike, co-bps, R2, circular and pulse-timing scores) and the notebook-00 helpers, against direct NumPy loops and closed-form Poisson facts. """
import math

import matplotlib
matplotlib.use("Agg")
import numpy as np
import pytest

from minilatent import synthetic, metrics


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


def direct_bps(rates, counts):
    """ bits/spike written out with loops and math.lgamma: the Poisson log-likelihood of the counts under the
    rates minus that under each neuron's mean count, over the total spikes, in bits """
    B, T, N = counts.shape
    gain, spikes = 0.0, 0.0
    for n in range(N):
        mean = counts[:, :, n].mean()
        for b in range(B):
            for t in range(T):
                k = counts[b, t, n]
                ll = lambda lam: k * math.log(lam) - lam - math.lgamma(k + 1) if lam > 0 else (0.0 if k == 0 else -math.inf)
                gain += ll(rates[b, t, n]) - ll(mean)
                spikes += k
    return gain / (spikes * math.log(2))


def test_regional_bits_per_spike_matches_direct_computation():
    rng = np.random.default_rng(0)
    B, T, T_fp, n_in, n_out = 4, 7, 3, 3, 2
    rates = rng.uniform(0.1, 2.0, size=(B, T + T_fp, n_in + n_out))
    counts = rng.poisson(rates).astype(np.float64)
    got = metrics.regional_bits_per_spike(rates, counts, n_heldin=n_in, n_bins=T)
    assert got["bps"] == pytest.approx(direct_bps(rates[:, :T, :n_in], counts[:, :T, :n_in]), rel=1e-10)
    assert got["co_bps"] == pytest.approx(direct_bps(rates[:, :T, n_in:], counts[:, :T, n_in:]), rel=1e-10)
    assert got["fp_bps"] == pytest.approx(direct_bps(rates[:, T:], counts[:, T:]), rel=1e-10)
    assert metrics.co_bps(rates, counts, n_in, T) == got["co_bps"]
    assert metrics.fp_bps(rates, counts, T) == got["fp_bps"]
    # the true rates beat each neuron's mean (positive), a constant wrong rate loses (negative)
    assert got["co_bps"] > 0 and metrics.co_bps(np.full_like(rates, 5.0), counts, n_in, T) < 0


def test_regions_without_neurons_bins_or_spikes_are_nan():
    x = np.ones((2, 5, 3))
    r = np.ones((2, 5, 3))
    out = metrics.regional_bits_per_spike(r, x, n_heldin=3, n_bins=5)
    assert math.isnan(out["co_bps"]) and math.isnan(out["fp_bps"]) and out["bps"] == pytest.approx(0.0, abs=1e-12)
    x[:, :, 2] = 0
    assert math.isnan(metrics.regional_bits_per_spike(r, x, n_heldin=2, n_bins=5)["co_bps"])
    with pytest.raises(ValueError, match="none held out"):
        metrics.co_bps(r, x, n_heldin=3)
    with pytest.raises(ValueError, match="no forward bins"):
        metrics.fp_bps(r, x, n_bins=5)
    with pytest.raises(ValueError, match="same"):
        metrics.regional_bits_per_spike(r[:, :4], x, 2, 4)


def test_heldout_figures_report_only_what_the_data_hold(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.poisson(1.0, size=(6, 8, 5)).astype(np.float32)
    d = {"valid_encod_data": x, "valid_recon_data": x}
    assert metrics.heldout_figures(x, d) == {}
    d2 = {"valid_encod_data": x[..., :3], "valid_recon_data": x}
    got = metrics.heldout_figures(np.ones_like(x), d2)
    assert set(got) == {"bps", "co_bps"} and got["co_bps"] == metrics.co_bps(np.ones_like(x), x, 3)
    d3 = {"valid_encod_data": x[:, :6], "valid_recon_data": x}
    assert set(metrics.heldout_figures(np.ones_like(x), d3)) == {"bps", "fp_bps"}


def test_affine_latent_r2_recovers_an_affine_map_and_scores_noise_low():
    rng = np.random.default_rng(0)
    lat_fit, lat_test = rng.normal(size=(20, 30, 3)), rng.normal(size=(10, 30, 3))
    M, c = rng.normal(size=(3, 5)), rng.normal(size=5)
    r2 = metrics.affine_latent_r2(lat_fit @ M + c, lat_fit, lat_test @ M + c, lat_test)
    np.testing.assert_allclose(r2, 1.0, atol=1e-10)
    noise = metrics.affine_latent_r2(rng.normal(size=(20, 30, 5)), lat_fit, rng.normal(size=(10, 30, 5)), lat_test)
    assert (noise < 0.05).all()


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


# -----------------------------------------------------------------------------
# data helpers


def test_pulse_timing_accuracy_scores_peaks_and_chance():
    rng = np.random.default_rng(0)
    B, T = 200, 60
    t_true = rng.integers(15, 45, size=B)
    true = np.zeros((B, T, 1)); true[np.arange(B), t_true, 0] = 1.0
    u = rng.normal(scale=0.1, size=(B, T, 2)) + 0.5                   # a common offset that must not matter
    shift = rng.integers(-2, 3, size=B)
    u[np.arange(B), t_true + shift, 0] += 3.0
    acc, chance = metrics.pulse_timing_accuracy(u, true, window=3)
    assert acc == 1.0 and chance < 0.35
    acc1, _ = metrics.pulse_timing_accuracy(u, true, window=1)
    assert acc1 == pytest.approx(np.mean(np.abs(shift) <= 1))
    with pytest.raises(ValueError, match="same trials and bins"):
        metrics.pulse_timing_accuracy(u[:, :10], true)
