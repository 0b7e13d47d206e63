"""
Metrics and baselines: how well a model's rates, factors or inputs match the spikes and the truth, and the
numbers a latent model has to beat. Plain numpy functions of arrays, usable on any model's output; this file
imports nothing else from the package.

  R^2            r2_score, rate_r2 (inferred vs true rates), latent_r2 / affine_latent_r2 (factors -> latents)
  likelihood     poisson_nll, bits_per_spike (NLB's definition), and on held-out neurons and forward bins
                 regional_bits_per_spike, co_bps, fp_bps, heldout_figures
  counts         rebin, fano_factor
  baselines      gaussian_smooth (single trials), condition_average and psths (the PSTH), baseline_scores
  inputs, noise  pulse_timing_accuracy (inferred inputs), noise_leak (how much spike noise an estimate copies)
  phases         ring_phase, circular_distance, circular_correlation, fit_phase_decoder / decode_phase

Rates are in counts per bin, arrays (trials, time, neurons). true_rates reads a dataset's truth in those units.

References:
  Pei et al. (2021) "Neural Latents Benchmark '21: Evaluating latent dynamics models of neural population
    activity": bits/spike, co-bps, fp-bps and the smoothing baseline; bits_per_spike follows nlb_tools'
    evaluation.bits_per_spike (see its docstring for the one place we differ: arithmetic in float64)
  Pandarinath et al. (2018) "Inferring single-trial neural population dynamics using sequential auto-encoders"
    and Sussillo et al. (2016): rate R^2 and latent R^2 through an affine map
  Dayan & Abbott (2001) "Theoretical Neuroscience", ch. 1: binning, PSTHs, Fano factors
  Fisher & Lee (1983) "A correlation coefficient for circular data"
"""

import math

import numpy as np

# -----------------------------------------------------------------------------
# R^2: rates against the true rates, factors against the true latents


def r2_score(pred, true, per_column=False):
    """ 1 - SSE/SST per column (last axis) over all other axes; the mean over columns unless per_column """
    p = np.asarray(pred, dtype=np.float64).reshape(-1, np.shape(pred)[-1])
    t = np.asarray(true, dtype=np.float64).reshape(-1, np.shape(true)[-1])
    if p.shape != t.shape:
        raise ValueError(f"pred and true shapes differ: {np.shape(pred)} vs {np.shape(true)}")
    sse = ((p - t) ** 2).sum(0)
    sst = ((t - t.mean(0)) ** 2).sum(0)
    r2 = 1.0 - sse / np.maximum(sst, 1e-12)
    return r2 if per_column else float(r2.mean())


def rate_r2(pred_rates, true_rates):
    """ R^2 of inferred vs true rates, per neuron over trials x time, averaged over neurons """
    return r2_score(pred_rates, true_rates)


def latent_r2(factors, latents, fit_fraction=0.8):
    """ Affine regression from factors (trials, T, F) to true latents (trials, T, D): fit on the first
    fit_fraction of trials, R^2 per latent dimension on the rest (held-out trials). """
    factors, latents = np.asarray(factors, np.float64), np.asarray(latents, np.float64)
    n_fit = int(round(fit_fraction * factors.shape[0]))
    if not 0 < n_fit < factors.shape[0]:
        raise ValueError(f"need trials both to fit and to test; got {factors.shape[0]} trials with fit_fraction={fit_fraction}")
    X = np.concatenate([factors, np.ones(factors.shape[:2] + (1,))], axis=-1)
    A = X[:n_fit].reshape(-1, X.shape[-1])
    coef, *_ = np.linalg.lstsq(A, latents[:n_fit].reshape(-1, latents.shape[-1]), rcond=None)
    pred = X[n_fit:] @ coef
    return r2_score(pred, latents[n_fit:], per_column=True)


def affine_latent_r2(fit_factors, fit_latents, test_factors, test_latents):
    """ R^2 per latent dimension of an affine map from factors to true latents fit by least squares on one set
    of trials (e.g. the training trials) and evaluated on another (the validation trials). (trials, T, F/D). """
    Xf = np.asarray(fit_factors, np.float64)
    Xt = np.asarray(test_factors, np.float64)
    A = np.concatenate([Xf.reshape(-1, Xf.shape[-1]), np.ones((Xf.shape[0] * Xf.shape[1], 1))], axis=1)
    Y = np.asarray(fit_latents, np.float64).reshape(-1, np.shape(fit_latents)[-1])
    if A.shape[0] != Y.shape[0]:
        raise ValueError(f"affine_latent_r2: fit factors {Xf.shape} and latents {np.shape(fit_latents)} do not match")
    coef, *_ = np.linalg.lstsq(A, Y, rcond=None)
    pred = np.concatenate([Xt, np.ones(Xt.shape[:2] + (1,))], axis=-1) @ coef
    return r2_score(pred, test_latents, per_column=True)


def true_rates(data, split):
    """ the ground-truth rates of a split in counts per bin (truth / conversion_factor) """
    k = f"{split}_truth"
    if k not in data:
        raise KeyError(f"this dataset has no ground truth ('{k}' missing)")
    if "conversion_factor" not in data:
        raise KeyError("conversion_factor: the dataset does not state the truth's units; set data['conversion_factor'] "
                       "(1 for counts per bin, 1/dt for spikes/s) or use datafiles.truth_conversion(data)")
    return np.asarray(data[k], dtype=np.float32) / float(np.asarray(data["conversion_factor"]))


# -----------------------------------------------------------------------------
# the Poisson likelihood and bits per spike (Neural Latents Benchmark)


def log_factorial(x):
    """ log(x!) elementwise; a lookup table for whole numbers (spike counts), lgamma otherwise """
    x = np.asarray(x, np.float64)
    if x.size and np.all(x == np.round(x)) and x.min() >= 0 and x.max() <= 1e6:   # the table stays small
        table = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, int(x.max()) + 2)))])
        return table[x.astype(np.int64)]
    return np.vectorize(math.lgamma, otypes=[np.float64])(x + 1)


def poisson_nll(rates, spikes):
    """ total Poisson negative log-likelihood, sum of r - x log r + log(x!) over the bins, rates r in counts per bin.
    As nlb_tools' neg_log_likelihood: bins whose count is NaN (not observed) are left out, a rate of exactly 0 is
    scored as 1e-9 (log 0 is not a number), and a negative rate is refused; so is a NaN or infinite one. A small
    positive rate is scored as it is: raising it to 1e-9 would forgive a confident miss (a spike where the model
    predicted 1e-12). rates may be of spikes' shape or broadcast to it. """
    x = np.asarray(spikes, np.float64)
    r = np.asarray(rates, np.float64)
    try:
        same = np.broadcast_shapes(r.shape, x.shape) == x.shape
    except ValueError:
        same = False
    if not same:
        raise ValueError(f"poisson_nll: rates of shape {r.shape} do not match spikes of shape {x.shape}")
    r = np.broadcast_to(r, x.shape)
    seen = ~np.isnan(x)
    if not seen.all():                                                # NLB's files mark unobserved bins NaN
        r, x = r[seen], x[seen]
    if not np.isfinite(r).all():
        raise ValueError("poisson_nll: the rates contain NaN or infinite values")
    if (r < 0).any():
        raise ValueError(f"poisson_nll: rates are counts per bin and must be >= 0, found {r.min():g}")
    if (r == 0).any():
        r = np.where(r == 0, 1e-9, r)                                 # exact zeros only, as nlb_tools
    return float((r - x * np.log(r) + log_factorial(x)).sum())


def bits_per_spike(rates, spikes):
    """ Bits per spike, the Neural Latents Benchmark's definition: (NLL_null - NLL_model) / (total spikes * ln 2),
    where the null model predicts each neuron's mean count (over trials and time) at every bin. On neurons the
    model reconstructs from their own spikes this is an in-sample figure; only on held-out neurons is it NLB's
    co-bps (see co_bps). It agrees with nlb_tools' evaluation.bits_per_spike, NaN (unobserved) counts and the
    1e-9 for zero rates included (tests/test_metrics.py checks it against a loop of NLB's formula), except that we
    compute in float64 where nlb_tools keeps the arrays' dtype: on float32 input the two differ by float32 rounding. """
    x = np.asarray(spikes, np.float64)
    n = x.reshape(-1, x.shape[-1])                                    # (trials * time, neurons)
    seen = ~np.isnan(n)
    null = np.where(seen, n, 0.0).sum(0) / np.maximum(seen.sum(0), 1)   # each neuron's mean count, as np.nanmean
    total = np.nansum(x)
    if total == 0:
        raise ValueError("bits_per_spike: the data contain no spikes")
    return (poisson_nll(np.broadcast_to(null, x.shape), x) - poisson_nll(rates, x)) / (total * math.log(2))


# -----------------------------------------------------------------------------
# held-out neurons and forward prediction, the Neural Latents Benchmark way (Pei et al. 2021)
#
# lfads-torch's layout: encod_data (trials, T, N_in) holds the held-in neurons the encoders see; recon_data
# (trials, T + T_fp, N_in + N_out) holds the same neurons first, then the held-out ones, over the same bins
# followed by T_fp forward-prediction bins. The model reconstructs all of recon_data. NLB scores:
#   co-bps  bits/spike of the held-out neurons over the T observed bins (their spikes never reach the model)
#   fp-bps  bits/spike of all neurons over the T_fp forward bins (the future of the trial)
#   bps     bits/spike of the held-in neurons over the T observed bins (in-sample: the model saw these spikes)
# each with the NLB null: every neuron's mean count over the evaluated trials and bins.


def regional_bits_per_spike(rates, recon_data, n_heldin, n_bins):
    """ NLB's three figures from rates and counts over recon_data's layout (see above):
    rates, recon_data (trials, T + T_fp, N_in + N_out) in counts per bin; n_heldin = N_in; n_bins = T.
    Returns {'bps', 'co_bps', 'fp_bps'}; a region with no neurons or bins gives NaN, and so does one without a
    single spike. """
    r, x = np.asarray(rates, np.float64), np.asarray(recon_data, np.float64)
    if r.shape != x.shape or r.ndim != 3:
        raise ValueError(f"regional_bits_per_spike: rates {r.shape} and recon_data {x.shape} must be the same "
                         "(trials, bins, neurons) shape")
    if not (0 < n_heldin <= x.shape[2] and 0 < n_bins <= x.shape[1]):
        raise ValueError(f"regional_bits_per_spike: need 0 < n_heldin <= {x.shape[2]} and 0 < n_bins <= {x.shape[1]}, "
                         f"got n_heldin={n_heldin}, n_bins={n_bins}")

    def bps(sl_t, sl_n):
        xs = x[:, sl_t, sl_n]
        if xs.size == 0 or np.nansum(xs) == 0:
            return float("nan")
        return float(bits_per_spike(r[:, sl_t, sl_n], xs))
    return {"bps": bps(slice(0, n_bins), slice(0, n_heldin)),
            "co_bps": bps(slice(0, n_bins), slice(n_heldin, None)),
            "fp_bps": bps(slice(n_bins, None), slice(None))}


def co_bps(rates, recon_data, n_heldin, n_bins=None):
    """ NLB co-bps: bits/spike of the held-out neurons (recon_data's channels from n_heldin on) over the first
    n_bins bins (default: all). rates and recon_data (trials, bins, neurons), counts per bin. """
    n_bins = np.shape(recon_data)[1] if n_bins is None else n_bins
    if np.shape(recon_data)[2] <= n_heldin:
        raise ValueError(f"co_bps: recon_data has {np.shape(recon_data)[2]} neurons, none held out after n_heldin={n_heldin}")
    return regional_bits_per_spike(rates, recon_data, n_heldin, n_bins)["co_bps"]


def fp_bps(rates, recon_data, n_bins):
    """ NLB fp-bps: bits/spike of all neurons over the forward-prediction bins (from bin n_bins on) """
    if np.shape(recon_data)[1] <= n_bins:
        raise ValueError(f"fp_bps: recon_data has {np.shape(recon_data)[1]} bins, no forward bins after n_bins={n_bins}")
    return regional_bits_per_spike(rates, recon_data, np.shape(recon_data)[2], n_bins)["fp_bps"]


def heldout_figures(rates, data, split="valid"):
    """ NLB's figures for a split of a dataset with held-out neurons and/or forward bins (see
    regional_bits_per_spike): {'bps' (held-in, in-sample), 'co_bps', 'fp_bps'} with only the ones that apply;
    {} when recon_data has neither more neurons nor more bins than encod_data. """
    e, r = np.shape(data[f"{split}_encod_data"]), np.shape(data[f"{split}_recon_data"])
    if r[1:] == e[1:]:
        return {}
    out = regional_bits_per_spike(rates, data[f"{split}_recon_data"], e[2], e[1])
    return {k: v for k, v in out.items() if (k != "co_bps" or r[2] > e[2]) and (k != "fp_bps" or r[1] > e[1])}


# -----------------------------------------------------------------------------
# spike counts (notebook 00): binning and count variability


def rebin(spikes, factor):
    """ sum counts over consecutive groups of `factor` time bins: (B, T, N) -> (B, T // factor, N);
    a trailing remainder of fewer than `factor` bins is dropped. """
    x = np.asarray(spikes)
    if x.ndim != 3:
        raise ValueError(f"rebin: expected spikes of shape (trials, time, neurons), got {x.shape}")
    if int(factor) != factor or factor < 1 or factor > x.shape[1]:
        raise ValueError(f"rebin: factor must be a whole number in [1, {x.shape[1]}] (the trial's bins), got {factor}")
    factor = int(factor)
    B, T, N = x.shape
    T2 = T // factor
    return x[:, : T2 * factor].reshape(B, T2, factor, N).sum(2)        # (B, T2, N)


def fano_factor(counts, axis=0):
    """ variance / mean of counts along `axis` (variance with ddof=1); NaN where the mean is 0.
    1 for Poisson counts, < 1 for regular (e.g. refractory) spiking, > 1 when the rate itself varies. """
    c = np.asarray(counts, np.float64)
    if c.shape[axis] < 2:
        raise ValueError(f"fano_factor: need at least 2 samples along axis {axis}, got shape {c.shape}")
    m = c.mean(axis)
    v = c.var(axis, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(m > 0, v / np.where(m > 0, m, 1.0), np.nan)


# -----------------------------------------------------------------------------
# baselines: what a latent model has to beat (single-trial smoothing, the PSTH)


_SMOOTH_BLOCK = 1024   # most output bins per weight matrix in gaussian_smooth: memory stays flat for long recordings


def gaussian_smooth(spikes, sigma_bins, exclude_center=False):
    """ smooth each trial and neuron along time with a Gaussian kernel of std sigma_bins (same length out).
    The weights are normalised by the kernel mass that falls inside the trial, so the edges are not biased
    low. exclude_center=True gives the kernel no weight at the bin itself: each bin is predicted from its
    neighbours only, which is what an honest (held-out) likelihood such as bits_per_spike needs. """
    x = np.asarray(spikes, np.float64)
    if x.ndim != 3:
        raise ValueError(f"gaussian_smooth: expected spikes of shape (trials, time, neurons), got {x.shape}")
    if not (np.isfinite(sigma_bins) and sigma_bins > 0):
        raise ValueError(f"gaussian_smooth: sigma_bins must be a positive number, got {sigma_bins}")
    T = x.shape[1]
    half = math.ceil(4 * sigma_bins)                                  # the kernel is cut at 4 sigma
    out = np.empty_like(x)
    block = min(_SMOOTH_BLOCK, max(64, 2 * half))                     # ~ the kernel's width: little work on zeros
    weights = {}                                                      # interior blocks share one matrix
    for a in range(0, T, block):                                      # one block of output bins at a time
        b = min(a + block, T)
        lo, hi = max(0, a - half), min(T, b + half)                   # the input bins the block can see
        key = (a - lo, b - a, hi - b)
        if key not in weights:
            lag = np.arange(a, b)[:, None] - np.arange(lo, hi)[None, :]   # (out bins, in bins)
            K = np.exp(-0.5 * (lag / sigma_bins) ** 2) * (np.abs(lag) <= half)
            if exclude_center:
                K[lag == 0] = 0.0
            mass = K.sum(1, keepdims=True)
            if not (mass > 0).all():
                raise ValueError(f"gaussian_smooth: with exclude_center=True the kernel (sigma_bins={sigma_bins}) gives "
                                 f"no weight to any other bin of a {T}-bin trial; use a wider kernel or longer trials")
            weights[key] = K / mass                                   # rows sum to 1
        out[:, a:b] = weights[key] @ x[:, lo:hi]                      # (b-a, hi-lo) @ (B, hi-lo, N)
    return out


def condition_average(train_spikes, train_cond_idx, test_cond_idx, smooth_sigma_bins=None):
    """ The PSTH baseline: predict each test trial by the mean of the *training* trials of its condition
    (optionally smoothed in time). Returns (test trials, T, N). """
    x = np.asarray(train_spikes, np.float64)
    train_cond_idx, test_cond_idx = np.asarray(train_cond_idx), np.asarray(test_cond_idx)
    missing = set(np.unique(test_cond_idx)) - set(np.unique(train_cond_idx))
    if missing:
        raise ValueError(f"conditions {sorted(missing)[:5]} have no training trials to average")
    psth = {c: x[train_cond_idx == c].mean(0) for c in np.unique(test_cond_idx)}
    out = np.stack([psth[c] for c in test_cond_idx])
    return gaussian_smooth(out, smooth_sigma_bins) if smooth_sigma_bins else out


def psths(data, split="train"):
    """ condition-averaged responses (C, T, N) of a split, conditions in sorted order of `{split}_cond_idx`
    (what LFADS.init_pcr aligns across sessions). """
    x = np.asarray(data[f"{split}_recon_data"], np.float64)
    cond = np.asarray(data[f"{split}_cond_idx"])
    return np.stack([x[cond == c].mean(0) for c in np.unique(cond)])


SMOOTH_SIGMAS = (2, 4, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50)   # kernel widths (bins) tried for single trials
PSTH_SIGMAS = (1, 2, 3, 4, 6, 8, 10, 12, 15)                       # kernel widths (bins) tried for the PSTH


def baseline_scores(data, split="valid", smooth_sigmas=SMOOTH_SIGMAS, psth_sigmas=PSTH_SIGMAS):
    """ The numbers a latent model has to beat on `split`: rate R^2 (mean and median over neurons; needs
    `{split}_truth`) and bits per spike of
      'smoothing'  single-trial Gaussian smoothing. R^2 at the width with the best mean R^2 (an oracle
                   choice, generous to the baseline); bits/spike with the bin itself left out of the kernel
                   (smoothing a bin's own spike into its prediction is not a prediction), best width;
      'psth'       the smoothed condition average of the train trials (needs `*_cond_idx`), best widths;
      'truth'      the true rates: the ceiling.
    Returns {name: {'r2', 'r2_median', 'bps', 'sigma_r2', 'sigma_bps'}} (R^2 is NaN without truth). """
    x = np.asarray(data[f"{split}_recon_data"], np.float64)
    truth = true_rates(data, split) if f"{split}_truth" in data else None

    def r2s(pred):
        if truth is None:
            return np.nan, np.nan
        per = r2_score(pred, truth, per_column=True)
        return float(per.mean()), float(np.median(per))

    def best(make, sigmas, bps_make=None):
        r2 = [r2s(make(s)) for s in sigmas]
        bps = [bits_per_spike((bps_make or make)(s), x) for s in sigmas]
        i = int(np.nanargmax([r[0] for r in r2])) if truth is not None else 0
        j = int(np.argmax(bps))
        return {"r2": r2[i][0], "r2_median": r2[i][1], "bps": float(bps[j]),
                "sigma_r2": sigmas[i] if truth is not None else np.nan, "sigma_bps": sigmas[j]}

    out = {"smoothing": best(lambda s: gaussian_smooth(x, s), tuple(smooth_sigmas),
                             lambda s: gaussian_smooth(x, s, exclude_center=True))}
    if "train_cond_idx" in data and f"{split}_cond_idx" in data:
        tr, ci, cs = data["train_recon_data"], data["train_cond_idx"], data[f"{split}_cond_idx"]
        out["psth"] = best(lambda s: condition_average(tr, ci, cs, s), tuple(psth_sigmas))
    if truth is not None:
        r2, r2m = r2s(truth)
        out["truth"] = {"r2": r2, "r2_median": r2m, "bps": float(bits_per_spike(truth, x)),
                        "sigma_r2": np.nan, "sigma_bps": np.nan}
    return out


# -----------------------------------------------------------------------------
# inferred inputs and copied noise (notebook 02)


def pulse_timing_accuracy(inferred_inputs, true_inputs, window=3, n_shuffles=20, seed=0):
    """ How well inferred inputs find the times of true input pulses (one pulse per trial at most).
    For each trial with a pulse, the peak of the inferred input is argmax_t ||u_t - mean over trials of u_t||
    (removing the across-trial mean at each bin discards any time-locked component common to all trials,
    which carries no trial-specific timing); the trial counts as a hit if the peak lies within +-window bins
    of the true pulse. Returns (accuracy, chance): chance is the accuracy against the true pulse times
    shuffled across trials (mean over n_shuffles permutations): what a peak unrelated to the pulse scores.
    inferred_inputs (trials, T, co); true_inputs (trials, T, I). """
    u = np.asarray(inferred_inputs, np.float64)
    p = np.abs(np.asarray(true_inputs, np.float64)).sum(-1)           # (trials, T)
    if u.ndim != 3 or p.shape != u.shape[:2]:
        raise ValueError(f"pulse_timing_accuracy: inferred {u.shape} and true {np.shape(true_inputs)} inputs must be "
                         "(trials, T, dims) with the same trials and bins")
    has = p.max(1) > 0
    if not has.any():
        raise ValueError("pulse_timing_accuracy: no trial has a true pulse")
    peak = np.linalg.norm(u - u.mean(0, keepdims=True), axis=-1).argmax(1)[has]
    true_t = p.argmax(1)[has]
    acc = float(np.mean(np.abs(peak - true_t) <= window))
    rng = np.random.default_rng(seed)
    chance = float(np.mean([np.mean(np.abs(peak - rng.permutation(true_t)) <= window) for _ in range(n_shuffles)]))
    return acc, chance


def noise_leak(inferred_rates, spikes, true_rates):
    """ How much of the Poisson noise an estimate copies: the regression coefficient of the estimate's error
    on the spike noise, sum((r_hat - r)(x - r)) / sum((x - r)^2), on the spikes the model was given.
    0: the estimate ignores the noise (what a rate estimate should do); 1: it copies the spikes
    (identity overfitting, which coordinated dropout prevents). """
    r_hat, x, r = (np.asarray(a, np.float64) for a in (inferred_rates, spikes, true_rates))
    if not r_hat.shape == x.shape == r.shape:
        raise ValueError(f"noise_leak: shapes differ: {r_hat.shape}, {x.shape}, {r.shape}")
    noise = x - r
    return float(((r_hat - r) * noise).sum() / max((noise ** 2).sum(), 1e-12))


# -----------------------------------------------------------------------------
# phases on a ring (notebooks 03, 07): the bump's position, circular statistics, linear phase decoders


def ring_phase(rates, angles=None):
    """ the bump's position on the ring: the angle of the first Fourier mode of rates (..., N) -> (...) in [0, 2 pi) """
    r = np.asarray(rates, np.float64)
    th = np.arange(r.shape[-1]) * 2 * np.pi / r.shape[-1] if angles is None else np.asarray(angles, np.float64)
    return np.mod(np.angle((r * np.exp(1j * th)).sum(-1)), 2 * np.pi)


def circular_distance(a, b):
    """ |a - b| on the circle, in degrees in [0, 180], for angles a, b in radians (broadcast) """
    d = np.angle(np.exp(1j * (np.asarray(a, np.float64) - np.asarray(b, np.float64))))
    return np.degrees(np.abs(d))


def circular_correlation(a, b):
    """ Fisher & Lee (1983) circular-circular correlation of paired angles a, b (n,) radians:
        rho = sum_{i<j} sin(a_i - a_j) sin(b_i - b_j) / sqrt(sum_{i<j} sin^2(a_i - a_j) sum_{i<j} sin^2(b_i - b_j)),
    1 when b = a + c, -1 when b = -a + c (the same ring traversed the other way), ~0 for unrelated angles. """
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape or a.size < 3:
        raise ValueError(f"circular_correlation: need two paired arrays of >= 3 angles, got {a.size} and {b.size}")
    sa, sb = np.sin(a[:, None] - a[None]), np.sin(b[:, None] - b[None])
    return float((sa * sb).sum() / max(math.sqrt((sa ** 2).sum() * (sb ** 2).sum()), 1e-300))


def fit_phase_decoder(features, phase):
    """ least squares from [features, 1] (..., F) to (cos, sin) of phase (...): returns W (F + 1, 2) for decode_phase """
    X = np.asarray(features, np.float64).reshape(-1, np.shape(features)[-1])
    ph = np.asarray(phase, np.float64).ravel()
    if len(X) != len(ph):
        raise ValueError(f"fit_phase_decoder: {len(X)} feature rows but {len(ph)} phases")
    X = np.concatenate([X, np.ones((len(X), 1))], 1)
    W, *_ = np.linalg.lstsq(X, np.stack([np.cos(ph), np.sin(ph)], 1), rcond=None)
    return W


def decode_phase(features, W):
    """ the phase (radians in [0, 2 pi)) read out from features (..., F) by a decoder of fit_phase_decoder """
    f = np.asarray(features, np.float64)
    cs = f @ W[:-1] + W[-1]
    return np.mod(np.arctan2(cs[..., 1], cs[..., 0]), 2 * np.pi)
