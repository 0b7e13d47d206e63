""" Metrics and baselines (bits/spike, co-bps, R2, circular and pulse-timing scores), the notebook-00 helpers and the NLB evaluation (smoothing and PSTH baselines, PSTH R2, velocity decoding), against direct NumPy loops, closed forms and known truths. """
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


# -----------------------------------------------------------------------------
# the Neural Latents Benchmark's evaluation: smoothing baseline, PSTH R^2, velocity decoding


def sklearn_r2_loop(pred, true):
    """ sklearn's r2_score(true, pred) with multioutput='uniform_average', written out: per output column,
    1 - SSE / SST (1 if the truth is constant and matched, 0 if constant and missed), then the mean """
    scores = []
    for j in range(true.shape[1]):
        t, p = list(true[:, j]), list(pred[:, j])
        mean = sum(t) / len(t)
        sse = sum((a - b) ** 2 for a, b in zip(t, p))
        sst = sum((a - mean) ** 2 for a in t)
        scores.append(1 - sse / sst if sst > 0 else (1.0 if sse == 0 else 0.0))
    return sum(scores) / len(scores)


def glm_data(rng, n=20000):
    X = rng.normal(size=(n, 3))
    W, b = np.array([[0.5, -0.3], [-0.4, 0.2], [0.3, 0.6]]), np.array([0.2, -0.5])
    return X, W, b, rng.poisson(np.exp(X @ W + b)).astype(float)


def test_poisson_glm_closed_form_known_truth_and_penalty_limits():
    rng = np.random.default_rng(0)
    # one binary feature and no penalty: the fitted rates are each group's mean count (the MLE, in closed form)
    x = (rng.random(400) < 0.3).astype(float)[:, None]
    y = rng.poisson(np.where(x[:, 0] > 0, 3.0, 0.7)).astype(float)
    W, b = metrics.fit_poisson_glm(x, y, 0.0)
    assert math.exp(b[0]) == pytest.approx(y[x[:, 0] == 0].mean(), rel=1e-8)
    assert math.exp(b[0] + W[0, 0]) == pytest.approx(y[x[:, 0] == 1].mean(), rel=1e-8)
    # counts drawn from a known GLM give back its weights
    X, W_true, b_true, Y = glm_data(rng)
    W, b = metrics.fit_poisson_glm(X, Y, 0.0)
    np.testing.assert_allclose(W, W_true, atol=0.03)
    np.testing.assert_allclose(b, b_true, atol=0.03)
    # with a penalty: sklearn's objective is at its minimum (the gradient, written out here, vanishes)
    alpha = 0.05
    W, b = metrics.fit_poisson_glm(X, Y, alpha)
    mu = np.exp(X @ W + b)
    np.testing.assert_allclose(X.T @ (mu - Y) / len(X) + alpha * W, 0.0, atol=1e-8)
    np.testing.assert_allclose((mu - Y).mean(0), 0.0, atol=1e-8)          # the intercept is not penalised
    assert (np.abs(W) < np.abs(metrics.fit_poisson_glm(X, Y, 0.0)[0])).all()
    # a huge penalty leaves the mean-rate model
    W, b = metrics.fit_poisson_glm(X, Y, 1e8)
    assert np.abs(W).max() < 1e-6 and np.exp(b) == pytest.approx(Y.mean(0), rel=1e-6)
    # a silent neuron: rates at the 1e-9 floor, no error
    W, b = metrics.fit_poisson_glm(X[:200], np.zeros(200), 0.01)
    assert metrics.poisson_glm_rates(X[:200], W, b).max() <= 1e-8


def test_smoothing_features_and_folds_are_the_recipe():
    x = np.random.default_rng(1).poisson(1.5, size=(3, 12, 4)).astype(float)
    # NLB: log(Gaussian-smoothed counts + 1e-4); std in ms over the bin width in ms
    np.testing.assert_allclose(metrics.smoothed_log_rates(x, 75.0, 0.05), np.log(smooth_loop(x, 1.5) + 1e-4),
                               rtol=1e-10)
    folds = metrics.trial_folds(23, 5, seed=3)
    assert len(folds) == 5 and sorted(np.concatenate(folds).tolist()) == list(range(23))
    assert {len(f) for f in folds} == {4, 5}
    assert all((a == b).all() for a, b in zip(folds, metrics.trial_folds(23, 5, seed=3)))
    with pytest.raises(ValueError, match="n_folds"):
        metrics.trial_folds(4, 5)


def heldout_glm_data(seed=0, B=90, T=30, n_in=25, n_out=6):
    """ held-out neurons that are exact Poisson GLMs of the held-in neurons' log rates """
    rng = np.random.default_rng(seed)
    t = np.arange(T)[None, :, None]
    phase, freq = rng.uniform(0, 2 * np.pi, size=(B, 1, 2)), np.array([0.15, 0.27])
    lat = np.sin(freq * t + phase)                                      # (B, T, 2) smooth latents
    log_in = lat @ rng.normal(size=(2, n_in)) * 0.6 + 0.8               # held-in log rates, ~2 counts per bin
    log_out = log_in @ (rng.normal(size=(n_in, n_out)) * 0.15)          # the exact GLM (linear in log rates)
    log_out += 0.3 - log_out.mean((0, 1))                               # ~1.5 counts per bin
    r_in, r_out = np.exp(log_in), np.exp(log_out)
    return r_in, r_out, rng.poisson(r_in).astype(float), rng.poisson(r_out).astype(float), lat


def test_smoothing_baseline_approaches_the_true_rates_and_never_sees_eval_trials():
    r_in, r_out, x_in, x_out, _ = heldout_glm_data()
    tr, ev = slice(0, 70), slice(70, None)
    kw = dict(dt=0.01, widths_ms=(20, 40, 80), alphas=(1e-3, 1e-1), n_folds=3)
    got = metrics.smoothing_baseline(x_in[tr], x_out[tr], x_in[ev], **kw)
    assert got["rates"].shape == x_out[ev].shape and got["heldin_rates"].shape == x_in[ev].shape
    assert len(got["cv"]) == 6 and got["width_ms"] in (20, 40, 80) and got["alpha"] in (1e-3, 1e-1)
    best = max(got["cv"], key=lambda r: r["cv_co_bps"])
    assert (got["width_ms"], got["alpha"], got["cv_co_bps"]) == (best["width_ms"], best["alpha"], best["cv_co_bps"])
    truth = metrics.bits_per_spike(r_out[ev], x_out[ev])
    base = metrics.bits_per_spike(got["rates"], x_out[ev])
    assert truth > 0.1 and 0.85 * truth < base <= truth + 0.02
    # the CV table, recomputed from the training trials alone, fold by fold
    row = got["cv"][0]
    F = metrics.smoothed_log_rates(x_in[tr], row["width_ms"], 0.01)
    for test, score in zip(metrics.trial_folds(70, 3, seed=0), row["fold_co_bps"]):
        fit = np.setdiff1d(np.arange(70), test)
        W, b = metrics.fit_poisson_glm(F[fit].reshape(-1, 25), x_out[tr][fit].reshape(-1, 6), row["alpha"])
        assert metrics.bits_per_spike(metrics.poisson_glm_rates(F[test], W, b), x_out[tr][test]) == \
            pytest.approx(score, rel=1e-5)
    # other eval trials change nothing that was chosen
    other = metrics.smoothing_baseline(x_in[tr], x_out[tr], np.random.default_rng(9).poisson(5.0, x_in[ev].shape), **kw)
    assert (other["width_ms"], other["alpha"]) == (got["width_ms"], got["alpha"]) and other["cv"] == got["cv"]
    with pytest.raises(ValueError, match=r"eval_heldin: expected shape \(\?, 30, 25\)"):
        metrics.smoothing_baseline(x_in[tr], x_out[tr], x_in[ev, :, :24], **kw)
    with pytest.raises(ValueError, match=r"train_heldout: expected shape \(70, 30, \?\)"):
        metrics.smoothing_baseline(x_in[tr], x_out[:60], x_in[ev], **kw)


def nlb_psth_r2_loop(rates, spikes, cond, sigma, ref_spikes, ref_cond):
    """ nlb_tools' _make_psth + eval_psth as loops: each eval trial's target is the mean of the smoothed spikes of
    every other trial (eval and reference) of its condition; a trial alone in its condition is skipped; R^2 per
    neuron over the kept trials' bins, mean over neurons """
    pool = [(smooth_loop(spikes[i:i + 1], sigma)[0], cond[i], ("eval", i)) for i in range(len(spikes))]
    pool += [(smooth_loop(ref_spikes[j:j + 1], sigma)[0], ref_cond[j], ("ref", j)) for j in range(len(ref_spikes))]
    targets, preds = [], []
    for i in range(len(spikes)):
        others = [s for s, c, who in pool if c == cond[i] and who != ("eval", i)]
        if others:
            targets.append(sum(others) / len(others))
            preds.append(rates[i])
    return sklearn_r2_loop(np.concatenate(preds), np.concatenate(targets))


def test_psth_r2_is_nlb_tools_definition():
    rng = np.random.default_rng(3)
    B, T, N = 11, 9, 4
    x, ref = rng.poisson(1.2, size=(B, T, N)).astype(float), rng.poisson(1.2, size=(7, T, N)).astype(float)
    cond, ref_cond = np.array([0, 0, 1, 1, 1, 2, 2, 0, 1, 3, 2]), np.array([0, 1, 2, 2, 0, 1, 1])  # 3: alone
    x[:, :, 3] = 0.0
    ref[:, :, 3] = 0.0                                                  # a silent neuron: R^2 0 unless matched
    rates = rng.uniform(0.2, 2.0, size=(B, T, N))
    got = metrics.psth_r2(rates, x, cond, 1.3, ref, ref_cond)
    assert got == pytest.approx(nlb_psth_r2_loop(rates, x, cond, 1.3, ref, ref_cond), rel=1e-10)
    # without reference trials the pool is the eval trials alone; without smoothing the counts themselves
    assert metrics.psth_r2(rates, x, cond, None) == pytest.approx(
        nlb_psth_r2_loop(rates, x, cond, 1e-3, ref[:0], ref_cond[:0]), rel=1e-10)
    # condition-averaged variant: model PSTH against the PSTH over (conditions x bins)
    sx = smooth_loop(np.concatenate([x, ref]), 1.3)
    allc = np.concatenate([cond, ref_cond])
    conds = np.unique(cond)
    want = sklearn_r2_loop(np.concatenate([rates[cond == c].mean(0) for c in conds]),
                           np.concatenate([sx[allc == c].mean(0) for c in conds]))
    assert metrics.psth_r2(rates, x, cond, 1.3, ref, ref_cond, average_rates=True) == pytest.approx(want, rel=1e-10)
    with pytest.raises(ValueError, match="cond_idx has 10 entries for 11 trials"):
        metrics.psth_r2(rates, x, cond[:10], 1.3)
    with pytest.raises(ValueError, match=r"spikes: expected shape \(11, 9, 4\)"):
        metrics.psth_r2(rates, x[:, :8], cond, 1.3)


def test_psth_baseline_predicts_condition_means():
    rng = np.random.default_rng(4)
    x = rng.poisson(2.0, size=(8, 6, 3)).astype(float)
    tc, ec = np.array([0, 0, 1, 1, 1, 2, 2, 2]), np.array([1, 0, 5])
    plain = metrics.psth_baseline(x, tc, ec[:2], prior_trials=0)
    np.testing.assert_allclose(plain, metrics.condition_average(x, tc, ec[:2]))
    got = metrics.psth_baseline(x, tc, ec)                              # one pseudo-trial of the overall mean
    np.testing.assert_allclose(got[0], (x[tc == 1].sum(0) + x.mean(0)) / 4)
    np.testing.assert_allclose(got[2], x.mean(0))                       # condition 5: never trained on
    np.testing.assert_allclose(metrics.psth_baseline(x, tc, ec, sigma_bins=1.0, prior_trials=0.5)[1],
                               (smooth_loop(x, 1.0)[tc == 0].sum(0) + 0.5 * smooth_loop(x, 1.0).mean(0)) / 2.5)
    with pytest.raises(ValueError, match=r"conditions \[5\] have no training trials"):
        metrics.psth_baseline(x, tc, ec, prior_trials=0)


def lagged_linear_data(seed=0, B=40, T=20, F=6, lag=2):
    rng = np.random.default_rng(seed)
    f = np.cumsum(rng.normal(size=(B, T, F)), axis=1)
    vel = np.full((B, T, 2), np.nan)
    vel[:, lag:] = f[:, :T - lag] @ rng.normal(size=(F, 2)) + np.array([1.0, -2.0])   # behaviour at t + lag
    vel[:, :lag] = rng.normal(size=(B, lag, 2))                         # bins before: unrelated
    return f, vel


def test_velocity_decoding_finds_the_true_lag_and_scores_r2_as_nlb():
    f, vel = lagged_linear_data()
    got = metrics.velocity_decoding(f[:30], vel[:30], f[30:], vel[30:], lags=(0, 1, 2, 3, 4), alphas=(1e-3, 1.0, 100.0),
                                    n_folds=4)
    assert got["lag"] == 2 and got["r2"] > 0.9999 and got["pred"].shape == (10, 18, 2)
    assert len(got["cv"]) == 15 and got["alpha"] == 1e-3
    # R^2: per output over the eval bins that have a partner, then the mean over outputs (sklearn 'uniform_average')
    pred, true = got["pred"].reshape(-1, 2), vel[30:, 2:].reshape(-1, 2)
    assert got["r2"] == pytest.approx(sklearn_r2_loop(pred, true), rel=1e-12)
    assert got["r2_per_output"] == pytest.approx([sklearn_r2_loop(pred[:, [j]], true[:, [j]]) for j in (0, 1)])
    # noise features decode nothing on held-out trials
    noise = np.random.default_rng(5).normal(size=f.shape)
    assert metrics.velocity_decoding(noise[:30], vel[:30], noise[30:], vel[30:], lags=(0, 2))["r2"] < 0.1
    # eval trials play no part in the choice
    rng = np.random.default_rng(6)
    other = metrics.velocity_decoding(f[:30], vel[:30], rng.normal(size=(10, 20, 6)), rng.normal(size=(10, 20, 2)),
                                      lags=(0, 1, 2, 3, 4), alphas=(1e-3, 1.0, 100.0), n_folds=4)
    assert (other["lag"], other["alpha"], other["cv"]) == (got["lag"], got["alpha"], got["cv"])
    # NaN behaviour bins are dropped, as nlb_tools does
    v2 = vel.copy()
    v2[31, 5:9] = np.nan
    assert np.isfinite(metrics.velocity_decoding(f[:30], vel[:30], f[30:], v2[30:], lags=(2,))["r2"])
    with pytest.raises(ValueError, match=r"eval_vel: expected shape \(10, 20, 2\)"):
        metrics.velocity_decoding(f[:30], vel[:30], f[30:], vel[30:, :19])
    with pytest.raises(ValueError, match="lags must lie in"):
        metrics.velocity_decoding(f[:30], vel[:30], f[30:], vel[30:], lags=(20,))


def nlb_dataset(seed=0):
    r_in, r_out, x_in, x_out, lat = heldout_glm_data(seed, B=60, T=24, n_in=15, n_out=5)
    cond = np.arange(60) % 4
    x = np.concatenate([x_in, x_out], axis=2)
    fp = np.random.default_rng(seed).poisson(1.0, size=(60, 4, 20)).astype(float)   # 4 forward bins
    recon = np.concatenate([x, fp], axis=1)
    vel = np.concatenate([np.zeros((60, 1, 2)), lat[:, :-1]], axis=1)    # the latents one bin later
    d = {"dt": 0.01}
    for split, s in (("train", slice(0, 45)), ("valid", slice(45, None))):
        d.update({f"{split}_encod_data": x_in[s], f"{split}_recon_data": recon[s], f"{split}_cond_idx": cond[s],
                  f"{split}_behavior": vel[s]})
    rates = np.concatenate([np.concatenate([r_in, r_out], axis=2), np.ones((60, 4, 20))], axis=1)
    return d, rates, lat


def test_nlb_evaluation_reports_the_contract_and_its_lines():
    import json
    d, rates, lat = nlb_dataset()
    kw = dict(widths_ms=(20, 50), glm_alphas=(1e-2,), ridge_alphas=(1e-2, 10.0), lags_ms=(0, 10, 20), n_folds=3)
    ev = metrics.nlb_evaluation(d, rates[45:], lat[:45], lat[45:], **kw)
    json.dumps(ev)                                                       # plain floats and ints
    for k in ("co_bps", "fp_bps", "smoothing_co_bps", "smoothing_width_ms", "smoothing_alpha", "psth_r2",
              "psth_baseline_co_bps", "psth_baseline_psth_r2", "smoothing_psth_r2", "vel_r2_factors",
              "vel_r2_smoothed", "vel_lag_factors", "vel_width_smoothed_ms"):
        assert k in ev, k
    va = d["valid_recon_data"]
    assert ev["co_bps"] == pytest.approx(metrics.co_bps(rates[45:], va, 15, 24))
    sm = metrics.smoothing_baseline(d["train_encod_data"], d["train_recon_data"][:, :24, 15:], d["valid_encod_data"],
                                    0.01, (20, 50), (1e-2,), 3)
    assert ev["smoothing_co_bps"] == pytest.approx(metrics.bits_per_spike(sm["rates"], va[:, :24, 15:]))
    assert ev["co_bps"] > ev["smoothing_co_bps"] > 0                     # the truth beats the baseline
    assert ev["psth_r2"] == pytest.approx(metrics.psth_r2(rates[45:, :24], va[:, :24], d["valid_cond_idx"], 3.0,
                                                          d["train_recon_data"][:, :24], d["train_cond_idx"]))
    assert ev["vel_r2_factors"] > 0.999 and ev["vel_lag_factors"] == 1   # the behaviour is the factors one bin on
    lines = metrics.evaluation_lines(ev)
    assert lines[0].startswith(f"LFADS co-bps {ev['co_bps']:.4f} vs smoothing {ev['smoothing_co_bps']:.4f}")
    assert "beats it" in lines[0] and any("velocity R^2 from factors" in s for s in lines)
    # without conditions, behaviour or forward bins: only what applies
    bare = {k: (v[:, :24] if k.endswith("recon_data") else v) for k, v in d.items()
            if "cond_idx" not in k and "behavior" not in k}
    ev2 = metrics.nlb_evaluation(bare, rates[45:, :24], **kw)
    assert not any(k.startswith(("psth", "vel", "fp")) for k in ev2) and ev2["smoothing_co_bps"] == ev["smoothing_co_bps"]
    assert len(metrics.evaluation_lines(ev2)) == 1
    with pytest.raises(ValueError, match="missing key 'dt'"):
        metrics.nlb_evaluation({k: v for k, v in d.items() if k != "dt"}, rates[45:], **kw)
    with pytest.raises(ValueError, match=r"valid_rates: expected shape \(15, 28, 20\)"):
        metrics.nlb_evaluation(d, rates[45:, :24], **kw)
    # a baseline computed beforehand is used as given (its search is not repeated) and checked for shape
    ev3 = metrics.nlb_evaluation(d, rates[45:], lat[:45], lat[45:], **{**kw, "widths_ms": (90,)}, smoothing=sm)
    assert {k: ev3[k] for k in ev if k.startswith("smoothing")} == {k: ev[k] for k in ev if k.startswith("smoothing")}
    with pytest.raises(ValueError, match="smoothing must be smoothing_baseline's result"):
        metrics.nlb_evaluation(d, rates[45:], smoothing={**sm, "rates": sm["rates"][:3]}, **kw)
