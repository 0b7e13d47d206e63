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
  NLB evaluation nlb_evaluation (everything below on a dataset with held-out neurons) and evaluation_lines;
                 smoothing_baseline (fit_poisson_glm on smoothed_log_rates), psth_r2, psth_baseline,
                 velocity_decoding (ridge_fit with a lag); hyperparameters by K-fold CV on training trials
                 (trial_folds), never on the evaluation trials

Rates are in counts per bin, arrays (trials, time, neurons). true_rates reads a dataset's truth in those units.

References:
  Pei et al. (2021) "Neural Latents Benchmark '21: Evaluating latent dynamics models of neural population
    activity": bits/spike, co-bps, fp-bps and the smoothing baseline; bits_per_spike follows nlb_tools'
    evaluation.bits_per_spike (see its docstring for the one place we differ: arithmetic in float64); the
    smoothing baseline, PSTH R^2 and velocity R^2 follow nlb_tools (examples/baselines/smoothing, make_tensors,
    evaluation), each function's docstring says where and why we differ
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
    """ 1 - SSE/SST per column (last axis) over all other axes; the mean over columns unless per_column. sklearn's
    convention for a column whose truth is constant: 1 if predicted exactly, else 0 """
    p = np.asarray(pred, dtype=np.float64).reshape(-1, np.shape(pred)[-1])
    t = np.asarray(true, dtype=np.float64).reshape(-1, np.shape(true)[-1])
    if p.shape != t.shape:
        raise ValueError(f"pred and true shapes differ: {np.shape(pred)} vs {np.shape(true)}")
    sse = ((p - t) ** 2).sum(0)
    sst = ((t - t.mean(0)) ** 2).sum(0)
    r2 = np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), np.where(sse == 0, 1.0, 0.0))
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


# -----------------------------------------------------------------------------
# the Neural Latents Benchmark's evaluation (Pei et al. 2021): the smoothing and PSTH baselines, PSTH R^2,
# velocity decoding, and all of them at once on a dataset with held-out neurons (nlb_evaluation).
# Every hyperparameter a baseline or decoder has (kernel width, penalty, lag) is chosen by K-fold cross-validation
# over the TRAINING trials only; the evaluation trials are used once, to score the chosen fit.

SMOOTH_WIDTHS_MS = (20, 40, 60, 80, 100, 150)    # kernel std (ms) tried by the smoothing baseline (NLB: 30-60 at 5 ms)
GLM_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)       # GLM L2 penalties: NLB's logspace(-3, 0, 4) and 10, which few
                                                 # trials need (the penalty is per mean bin: fewer bins, stronger)
RIDGE_ALPHAS = (1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4)   # ridge penalties on standardised features
LAGS_MS = (0, 50, 100, 150, 200)                 # behaviour lags tried: M1 leads the hand by ~100-200 ms (NLB fixes one per dataset)
PSTH_KERNEL_MS = 30.0                            # NLB smooths spikes with a 30-ms Gaussian before averaging PSTHs
LOG_OFFSET = 1e-4                                # the GLM sees log(smoothed count + 1e-4), as NLB's smoothing baseline


def trial_folds(n_trials, n_folds, seed=0):
    """ K folds of trial indices for cross-validation: a seeded permutation dealt out every K-th trial (NLB's sweep
    deals every K-th trial without shuffling). Returns a list of n_folds sorted index arrays covering each trial once. """
    if not 2 <= n_folds <= n_trials:
        raise ValueError(f"trial_folds: need 2 <= n_folds <= trials, got n_folds={n_folds} for {n_trials} trials")
    order = np.random.default_rng(seed).permutation(n_trials)
    return [np.sort(order[k::n_folds]) for k in range(n_folds)]


def _poisson_hessians(X1, Mu, chunk=8192):
    """ X1^T diag(Mu[:, k]) X1 for every column k at once: (n, P), (n, K) -> (K, P, P), one matrix product per
    chunk of rows (the (rows, K, P) product is the only large temporary). In float32, twice as fast: the Newton
    step only needs the curvature roughly, the gradient stays float64. """
    n, P = X1.shape
    H = np.zeros((Mu.shape[1] * P, P))
    for a in range(0, n, chunk):
        x, mu = X1[a:a + chunk].astype(np.float32), Mu[a:a + chunk].astype(np.float32)
        H += (mu[:, :, None] * x[:, None, :]).reshape(len(x), -1).T @ x
    return H.reshape(Mu.shape[1], P, P)


def fit_poisson_glm(X, Y, alpha, init=None, max_iter=100, tol=1e-20):
    """ Poisson GLM with log link and L2 penalty, one per column of Y, by Newton's method with a backtracking line
    search (all columns at once). For each column y it minimises sklearn's PoissonRegressor objective (the one
    NLB's baseline calls):  mean(exp(X w + b) - y (X w + b)) + alpha/2 ||w||^2  (= mean Poisson deviance / 2 up to
    a constant), the intercept b unpenalised. X (n, P), Y (n, K) counts; init = (W, b) warm start.
    Returns W (P, K) and b (K,). As alpha grows, W -> 0 and exp(b) -> mean(y): the mean-rate model. """
    X = np.asarray(X, np.float64)
    Y = np.asarray(Y, np.float64).reshape(len(X), -1)                   # (n, K)
    n, P = X.shape
    X1 = np.concatenate([X, np.ones((n, 1))], axis=1)                    # (n, P + 1), intercept last
    pen = np.r_[np.full(P, float(alpha)), 0.0][:, None]                  # (P + 1, 1): no penalty on the intercept
    if init is None:
        beta = np.vstack([np.zeros((P, Y.shape[1])), np.log(np.maximum(Y.mean(0), 1e-9))])   # (P + 1, K)
    else:
        beta = np.vstack([np.asarray(init[0], np.float64), np.asarray(init[1], np.float64)[None]])

    def loss(beta):                                                      # (K,) the objective of each column
        with np.errstate(over="ignore", invalid="ignore"):
            eta = X1 @ beta
            f = np.mean(np.exp(eta) - Y * eta, axis=0) + 0.5 * (pen * beta ** 2).sum(0)
        return np.where(np.isnan(f), np.inf, f)

    f = loss(beta)
    for _ in range(max_iter):
        Mu = np.exp(X1 @ beta)                                           # (n, K) the rates
        G = X1.T @ (Mu - Y) / n + pen * beta                             # (P + 1, K) gradients
        H = _poisson_hessians(X1, Mu) / n + np.diag(pen[:, 0] + 1e-12)   # (K, P + 1, P + 1)
        D = np.linalg.solve(H, G.T[:, :, None])[:, :, 0].T               # (P + 1, K) Newton steps
        decrement = (G * D).sum(0)                                       # (K,) the Newton decrements squared
        moving = decrement / 2 >= tol
        if not moving.any():
            break
        t = np.where(moving, 1.0, 0.0)
        near = decrement / 2 < 1e-8                                      # near the minimum: the full step, as the
        for _ in range(40):                                              # loss no longer resolves it; else halve
            f_new = loss(beta - t * D)                                   # the step until the loss falls enough
            ok = (f_new <= f - 0.25 * t * decrement) | near
            if ok.all():
                break
            t = np.where(ok, t, t / 2)
        t = np.where(ok, t, 0.0)                                         # a column that cannot improve stays
        beta, f = beta - t * D, np.where(ok, f_new, f)
        if not (t > 0).any():
            break
    return beta[:P], beta[P]


def poisson_glm_rates(X, W, b):
    """ the GLM's rates exp(X W + b), clipped to [1e-9, 1e20] as NLB's baseline: X (..., P) -> (..., K) """
    with np.errstate(over="ignore"):
        return np.clip(np.exp(np.asarray(X, np.float64) @ W + b), 1e-9, 1e20)


def smoothed_log_rates(spikes, width_ms, dt):
    """ the smoothing baseline's features: log(Gaussian-smoothed counts + 1e-4), kernel std width_ms. (B, T, N).
    Two differences from NLB's script, both forced by coarse bins: the std is width_ms / bin width in bins, not
    rounded down to a whole bin (NLB's int(30 / 50) would be 0), and the kernel is renormalised at the trial's edges
    (gaussian_smooth) instead of padding with zeros, which biases the first and last bins low. """
    return np.log(gaussian_smooth(spikes, width_ms / (1000.0 * dt)) + LOG_OFFSET)


def _check_trials(name, x, trials=None, bins=None, last=None):
    """ x (trials, bins, last) as float64, or a one-line ValueError naming it when its shape is wrong """
    x = np.asarray(x, np.float64)
    want = [trials, bins, last]
    if x.ndim != 3 or any(w is not None and s != w for s, w in zip(x.shape, want)):
        expect = ", ".join("?" if w is None else str(w) for w in want)
        raise ValueError(f"{name}: expected shape ({expect}), got {x.shape}")
    return x


def smoothing_baseline(train_heldin, train_heldout, eval_heldin, dt, widths_ms=SMOOTH_WIDTHS_MS, alphas=GLM_ALPHAS,
                       n_folds=5, seed=0):
    """ The Neural Latents Benchmark's smoothing baseline (Pei et al. 2021; nlb_tools' examples/baselines/smoothing):
    smooth the held-in spikes with a Gaussian kernel (not causal), take log(smoothed + 1e-4), and fit a Poisson GLM
    per held-out neuron (fit_poisson_glm, penalty alpha) from those (trials * bins, N_in) features to the held-out
    counts of the training trials; predict the held-out rates of the evaluation trials.
    The kernel std (widths_ms) and penalty (alphas) are chosen by n_folds-fold cross-validation over the TRAINING
    trials (trial_folds; score: co-bps on the left-out fold, averaged over folds); then the GLM is refit on all
    training trials. The evaluation trials play no part in the choice.
    train_heldin (B, T, N_in), train_heldout (B, T, N_out), eval_heldin (B_eval, T, N_in) counts; dt in seconds.
    Returns {'rates' (B_eval, T, N_out) counts per bin, 'heldin_rates' (B_eval, T, N_in) the smoothed held-in spikes,
    'width_ms', 'alpha', 'cv_co_bps' (the winner's), 'cv': [{'width_ms', 'alpha', 'cv_co_bps', 'fold_co_bps'}]}. """
    xi = _check_trials("smoothing_baseline: train_heldin", train_heldin)
    B, T, n_in = xi.shape
    y = _check_trials("smoothing_baseline: train_heldout", train_heldout, trials=B, bins=T)
    xe = _check_trials("smoothing_baseline: eval_heldin", eval_heldin, bins=T, last=n_in)
    if not (np.isfinite(dt) and dt > 0):
        raise ValueError(f"smoothing_baseline: dt must be the bin width in seconds (> 0), got {dt}")
    folds = trial_folds(B, n_folds, seed)
    flat = lambda a: a.reshape(-1, a.shape[-1])                          # (B, T, K) -> (B * T, K)
    cv = []
    for width in widths_ms:
        F = smoothed_log_rates(xi, width, dt)                            # (B, T, N_in)
        scores = {a: [] for a in alphas}
        for test in folds:
            fit = np.setdiff1d(np.arange(B), test)
            init = None
            for a in sorted(alphas, reverse=True):                       # strong to weak penalty, warm-started
                init = fit_poisson_glm(flat(F[fit]), flat(y[fit]), a, init=init)
                held = y[test]                                           # (b, T, N_out)
                ok = np.nansum(held) > 0
                scores[a].append(bits_per_spike(poisson_glm_rates(F[test], *init), held) if ok else np.nan)
        cv += [{"width_ms": float(width), "alpha": float(a), "cv_co_bps": float(np.nanmean(scores[a])),
                "fold_co_bps": [float(s) for s in scores[a]]} for a in alphas]
    best = max(cv, key=lambda row: row["cv_co_bps"])
    W, b = fit_poisson_glm(flat(smoothed_log_rates(xi, best["width_ms"], dt)), flat(y), best["alpha"])
    return {"rates": poisson_glm_rates(smoothed_log_rates(xe, best["width_ms"], dt), W, b),
            "heldin_rates": gaussian_smooth(xe, best["width_ms"] / (1000.0 * dt)),
            "width_ms": best["width_ms"], "alpha": best["alpha"], "cv_co_bps": best["cv_co_bps"], "cv": cv}


def psth_r2(rates, spikes, cond_idx, sigma_bins, ref_spikes=None, ref_cond_idx=None, average_rates=False):
    """ PSTH R^2, the Neural Latents Benchmark's definition (nlb_tools: make_tensors._make_psth, evaluation.eval_psth):
    the target for evaluation trial i is the PSTH of its condition, the mean over all OTHER trials of that condition
    (the evaluation trials and, when given, the reference trials ref_spikes, e.g. the training trials: NLB pools
    both) of the spikes smoothed with a Gaussian of std sigma_bins (NLB: 30 ms, applied at 1 ms before binning; we
    have binned counts and smooth those, an approximation). The model's single-trial rates of trial i are scored
    against that target: R^2 per neuron over (trials x bins), sklearn conventions, then the plain mean over neurons
    (sklearn's 'uniform_average'). A trial alone in its condition has no target and is left out.
    average_rates=True instead compares condition averages: the model's rates averaged over each condition's
    evaluation trials against the (not left-one-out) PSTH, R^2 over (conditions x bins).
    rates, spikes (B, T, N) counts per bin; cond_idx (B,); ref_spikes (B_ref, T, N), ref_cond_idx (B_ref,). """
    r = _check_trials("psth_r2: rates", rates)
    x = _check_trials("psth_r2: spikes", spikes, *r.shape)
    cond = np.asarray(cond_idx).ravel()
    if len(cond) != len(x):
        raise ValueError(f"psth_r2: cond_idx has {len(cond)} entries for {len(x)} trials")
    smooth = (lambda a: gaussian_smooth(a, sigma_bins)) if sigma_bins else (lambda a: a)
    pool, pool_cond = smooth(x), cond                                   # smoothing is linear: smooth, then average
    if ref_spikes is not None:
        ref = _check_trials("psth_r2: ref_spikes", ref_spikes, None, *x.shape[1:])
        ref_cond = np.asarray(ref_cond_idx).ravel()
        if len(ref_cond) != len(ref):
            raise ValueError(f"psth_r2: ref_cond_idx has {len(ref_cond)} entries for {len(ref)} reference trials")
        pool, pool_cond = np.concatenate([pool, smooth(ref)]), np.concatenate([cond, ref_cond])
    conds = np.unique(cond)
    total = {c: pool[pool_cond == c].sum(0) for c in conds}              # (T, N) per condition
    count = {c: int((pool_cond == c).sum()) for c in conds}
    if average_rates:
        model = np.stack([r[cond == c].mean(0) for c in conds])          # (C, T, N)
        target = np.stack([total[c] / count[c] for c in conds])
        return r2_score(model, target)
    keep = np.array([count[c] > 1 for c in cond])
    if not keep.any():
        raise ValueError("psth_r2: no evaluation trial shares its condition with another trial")
    target = np.stack([(total[c] - pool[i]) / (count[c] - 1) for i, c in enumerate(cond) if count[c] > 1])
    return r2_score(r[keep], target)


def psth_baseline(train_spikes, train_cond, eval_cond, sigma_bins=None, prior_trials=1.0):
    """ The per-condition PSTH baseline: each evaluation trial is predicted by the mean of the TRAINING trials of its
    condition, smoothed in time (Gaussian std sigma_bins). To keep rates positive and to serve conditions with few or
    no training trials, the average is shrunk towards the mean over all training trials (each bin and neuron) by
    prior_trials pseudo-trials: (sum over the condition + prior_trials * overall mean) / (n_condition + prior_trials).
    A condition absent from training gets the overall mean; prior_trials=0 gives the plain average.
    train_spikes (B, T, N), train_cond (B,), eval_cond (B_eval,). Returns (B_eval, T, N) counts per bin. """
    x = _check_trials("psth_baseline: train_spikes", train_spikes)
    tc, ec = np.asarray(train_cond).ravel(), np.asarray(eval_cond).ravel()
    if len(tc) != len(x):
        raise ValueError(f"psth_baseline: train_cond has {len(tc)} entries for {len(x)} trials")
    x = gaussian_smooth(x, sigma_bins) if sigma_bins else x
    overall = x.mean(0)                                                  # (T, N)
    if prior_trials == 0 and not set(ec) <= set(tc):
        missing = sorted(set(ec.tolist()) - set(tc.tolist()))[:5]
        raise ValueError(f"psth_baseline: conditions {missing} have no training trials "
                         "(use prior_trials > 0 to fall back to the overall mean)")
    psth = {c: (x[tc == c].sum(0) + prior_trials * overall) / ((tc == c).sum() + prior_trials) for c in np.unique(ec)}
    return np.stack([psth[c] for c in ec])


def _lagged_pairs(features, behaviour, lag):
    """ rows (features at t, behaviour at t + lag) of every trial, bins without a partner and NaN behaviour dropped:
    (B, T, F), (B, T, D) -> (rows, F), (rows, D) """
    T = features.shape[1]
    X = features[:, :T - lag].reshape(-1, features.shape[-1])
    Y = behaviour[:, lag:].reshape(-1, behaviour.shape[-1])
    seen = ~np.isnan(Y).any(1)
    return X[seen], Y[seen]


def ridge_fit(X, Y, alpha):
    """ ridge regression, features standardised on these rows, intercept unpenalised: minimises
    ||Y - Z W - c||^2 + alpha ||W||^2 with Z = (X - mean) / std. X (n, F), Y (n, D).
    Returns a function from features (..., F) to predictions (..., D). """
    mean, std = X.mean(0), X.std(0)
    std = np.where(std > 0, std, 1.0)                                    # a constant feature stays 0
    Z, ybar = (X - mean) / std, Y.mean(0)
    W = np.linalg.solve(Z.T @ Z + alpha * np.eye(Z.shape[1]), Z.T @ (Y - ybar))
    return lambda F: ((np.asarray(F, np.float64) - mean) / std) @ W + ybar


def velocity_decoding(train_features, train_vel, eval_features, eval_vel, lags=(0, 1, 2, 3), alphas=RIDGE_ALPHAS,
                      n_folds=5, seed=0):
    """ Decode behaviour (e.g. hand velocity) from features (factors, smoothed spikes, rates) by ridge regression
    (ridge_fit), the features at bin t predicting the behaviour at bin t + lag (lag >= 0, in bins; bins without a
    partner are dropped, so are bins with NaN behaviour). Lag and penalty are chosen by n_folds-fold
    cross-validation over the TRAINING trials (trial_folds; score: R^2 on the left-out fold, averaged over folds);
    then the decoder is refit on all training trials and scored once on the evaluation trials.
    R^2 is NLB's: sklearn's r2_score with multioutput='uniform_average' (what Ridge.score gives in nlb_tools'
    fit_and_eval_decoder): R^2 of each output over all evaluation bins, then the plain mean over outputs.
    train_features (B, T, F), train_vel (B, T, D), eval_features (B_eval, T, F), eval_vel (B_eval, T, D).
    Returns {'r2', 'r2_per_output', 'lag' (bins), 'alpha', 'cv_r2' (the winner's), 'cv': [{'lag', 'alpha', 'cv_r2'}],
    'pred' (B_eval, T - lag, D): the predictions of eval_vel[:, lag:]}. """
    ftr = _check_trials("velocity_decoding: train_features", train_features)
    B, T, F = ftr.shape
    vtr = _check_trials("velocity_decoding: train_vel", train_vel, B, T)
    fev = _check_trials("velocity_decoding: eval_features", eval_features, None, T, F)
    vev = _check_trials("velocity_decoding: eval_vel", eval_vel, len(fev), T, vtr.shape[2])
    lags = [int(L) for L in lags]
    if not lags or min(lags) < 0 or max(lags) >= T:
        raise ValueError(f"velocity_decoding: lags must lie in [0, {T - 1}] bins, got {lags}")
    folds = trial_folds(B, n_folds, seed)
    cv = []
    for lag in lags:
        scores = {a: [] for a in alphas}
        for test in folds:
            fit = np.setdiff1d(np.arange(B), test)
            X, Y = _lagged_pairs(ftr[fit], vtr[fit], lag)
            Xt, Yt = _lagged_pairs(ftr[test], vtr[test], lag)
            for a in alphas:
                scores[a].append(r2_score(ridge_fit(X, Y, a)(Xt), Yt) if len(Yt) else np.nan)
        cv += [{"lag": lag, "alpha": float(a), "cv_r2": float(np.nanmean(scores[a]))} for a in alphas]
    best = max(cv, key=lambda row: row["cv_r2"])
    lag = best["lag"]
    decode = ridge_fit(*_lagged_pairs(ftr, vtr, lag), best["alpha"])
    pred = decode(fev[:, :T - lag])                                      # (B_eval, T - lag, D)
    truth, seen = vev[:, lag:], ~np.isnan(vev[:, lag:]).any(-1)
    per = r2_score(pred[seen], truth[seen], per_column=True)
    return {"r2": float(per.mean()), "r2_per_output": [float(v) for v in per], "lag": lag, "alpha": best["alpha"],
            "cv_r2": best["cv_r2"], "cv": cv, "pred": pred}


def smoothed_decoding(train_spikes, train_y, eval_spikes, eval_y, dt, widths_ms=SMOOTH_WIDTHS_MS, lags=(0, 1, 2, 3),
                      alphas=RIDGE_ALPHAS, n_folds=5, seed=0):
    """ The decoding baseline: ridge regression (velocity_decoding) from Gaussian-smoothed spikes (B, T, N) to a
    per-bin target (B, T, D), the kernel width (ms) chosen with the lag (bins) and penalty by cross-validation on the
    training trials only. Returns velocity_decoding's dict for the chosen width, plus width_ms. """
    best = None
    for width in widths_ms:
        s = width / (1000.0 * dt)
        v = velocity_decoding(gaussian_smooth(train_spikes, s), train_y, gaussian_smooth(eval_spikes, s), eval_y,
                              lags, alphas, n_folds, seed)
        if best is None or v["cv_r2"] > best["cv_r2"]:
            best = {**v, "width_ms": float(width)}
    return best


def nlb_evaluation(data, valid_rates, train_factors=None, valid_factors=None, widths_ms=SMOOTH_WIDTHS_MS,
                   glm_alphas=GLM_ALPHAS, ridge_alphas=RIDGE_ALPHAS, lags_ms=LAGS_MS, psth_kernel_ms=PSTH_KERNEL_MS,
                   n_folds=5, seed=0, smoothing=None):
    """ The Neural Latents Benchmark's evaluation of a model on a dataset with held-out neurons (this package's
    layout: {train,valid}_encod_data (B, T, N_in) held-in; {train,valid}_recon_data (B, T + T_fp, N_in + N_out)
    held-in then held-out neurons; optional {train,valid}_cond_idx (B,), {train,valid}_behavior (B, >= T, D); dt).
    valid_rates: the model's rates (B_valid, T + T_fp, N_in + N_out), counts per bin; train_factors and
    valid_factors (B, >= T, F): its factors, for velocity decoding. The model is scored on the valid trials; the
    baselines and decoders are fit and cross-validated on the train trials only. Returns a JSON-serialisable dict:
      co_bps, bps (held-in, in-sample), fp_bps (when recon_data has forward bins)   see heldout_figures
      smoothing_co_bps, smoothing_width_ms, smoothing_alpha, smoothing_cv_co_bps     smoothing_baseline
      with *_cond_idx: psth_r2 (the model), psth_baseline_co_bps, psth_baseline_psth_r2, smoothing_psth_r2
        (PSTH R^2 over all N_in + N_out neurons and the T observed bins, target pooled over train and valid trials,
        kernel psth_kernel_ms; the PSTH baseline smoothed by the same kernel)
      with *_behavior: vel_r2_factors, vel_lag_factors, vel_alpha_factors (when factors are given);
        vel_r2_smoothed, vel_width_smoothed_ms, vel_lag_smoothed, vel_alpha_smoothed: from the held-in spikes
        smoothed with a width chosen, with lag and penalty, by its own cross-validation over widths_ms on the
        train trials (the best width to decode behaviour need not be the best for co-bps). Lags in bins.
    Behaviour and factors are paired over the T observed bins. smoothing: a smoothing_baseline result already
    computed for these trials and neurons (its search is then not run again; widths_ms and glm_alphas go unused). """
    for k in ("train_encod_data", "train_recon_data", "valid_encod_data", "valid_recon_data", "dt"):
        if k not in data:
            raise ValueError(f"nlb_evaluation: missing key '{k}'")
    dt = float(np.asarray(data["dt"]))
    e_tr = _check_trials("nlb_evaluation: train_encod_data", data["train_encod_data"])
    B, T, n_in = e_tr.shape
    r_tr = _check_trials("nlb_evaluation: train_recon_data", data["train_recon_data"], B)
    e_va = _check_trials("nlb_evaluation: valid_encod_data", data["valid_encod_data"], None, T, n_in)
    r_va = _check_trials("nlb_evaluation: valid_recon_data", data["valid_recon_data"], len(e_va), None, r_tr.shape[2])
    rates = _check_trials("nlb_evaluation: valid_rates", valid_rates, *r_va.shape)
    if r_tr.shape[2] <= n_in or r_tr.shape[1] < T or r_va.shape[1] != r_tr.shape[1]:
        raise ValueError(f"nlb_evaluation: recon_data {r_tr.shape} must hold the {n_in} held-in neurons and at least "
                         f"one held-out neuron over at least encod_data's {T} bins")
    held_va = r_va[:, :T, n_in:]                                         # (B_valid, T, N_out) what co-bps scores
    out = {"dt": dt, "n_heldin": n_in, "n_heldout": r_tr.shape[2] - n_in, "n_train_trials": B,
           "n_valid_trials": len(e_va), "n_bins": T, "n_forward_bins": r_tr.shape[1] - T}
    out.update(heldout_figures(rates, data))

    if smoothing is None:
        sm = smoothing_baseline(e_tr, r_tr[:, :T, n_in:], e_va, dt, widths_ms, glm_alphas, n_folds, seed)
    else:
        sm = smoothing
        want = {"rates": held_va.shape, "heldin_rates": e_va.shape}
        if not isinstance(sm, dict) or any(np.shape(sm.get(k)) != v for k, v in want.items()) or "width_ms" not in sm:
            raise ValueError(f"nlb_evaluation: smoothing must be smoothing_baseline's result for these trials: "
                             f"'rates' {want['rates']}, 'heldin_rates' {want['heldin_rates']}, 'width_ms', ...")
    out.update(smoothing_co_bps=float(bits_per_spike(sm["rates"], held_va)), smoothing_width_ms=sm["width_ms"],
               smoothing_alpha=sm["alpha"], smoothing_cv_co_bps=sm["cv_co_bps"])

    if "train_cond_idx" in data and "valid_cond_idx" in data:
        sigma, ctr, cva = psth_kernel_ms / (1000.0 * dt), data["train_cond_idx"], data["valid_cond_idx"]
        score = lambda r: psth_r2(r, r_va[:, :T], cva, sigma, r_tr[:, :T], ctr)
        pb = psth_baseline(r_tr[:, :T], ctr, cva, sigma)                 # (B_valid, T, N_in + N_out)
        out.update(psth_r2=score(rates[:, :T]), psth_baseline_co_bps=float(bits_per_spike(pb[..., n_in:], held_va)),
                   psth_baseline_psth_r2=score(pb),
                   smoothing_psth_r2=score(np.concatenate([sm["heldin_rates"], sm["rates"]], axis=2)))

    if "train_behavior" in data and "valid_behavior" in data:
        v_tr = _check_trials("nlb_evaluation: train_behavior", data["train_behavior"], B)[:, :T]
        v_va = _check_trials("nlb_evaluation: valid_behavior", data["valid_behavior"], len(e_va))[:, :T]
        lags = sorted({int(round(ms / (1000.0 * dt))) for ms in lags_ms if round(ms / (1000.0 * dt)) < T})
        decode = lambda f_tr, f_va: velocity_decoding(f_tr, v_tr, f_va, v_va, lags, ridge_alphas, n_folds, seed)
        if train_factors is not None and valid_factors is not None:
            f_tr = _check_trials("nlb_evaluation: train_factors", train_factors, B)[:, :T]
            f_va = _check_trials("nlb_evaluation: valid_factors", valid_factors, len(e_va), None, f_tr.shape[2])[:, :T]
            v = decode(f_tr, f_va)
            out.update(vel_r2_factors=v["r2"], vel_lag_factors=v["lag"], vel_alpha_factors=v["alpha"])
        v = smoothed_decoding(e_tr, v_tr, e_va, v_va, dt, widths_ms, lags, ridge_alphas, n_folds, seed)
        out.update(vel_r2_smoothed=v["r2"], vel_width_smoothed_ms=v["width_ms"], vel_lag_smoothed=v["lag"],
                   vel_alpha_smoothed=v["alpha"])
    return {k: (float(v) if isinstance(v, (float, np.floating)) else int(v)) for k, v in out.items()}


def evaluation_lines(ev, model="LFADS"):
    """ the run's last lines from an nlb_evaluation dict: whether and by how much the model beat each baseline,
    e.g. 'LFADS co-bps 0.0940 vs smoothing 0.0795: +18 % (beats it)'. bits/spike compare in relative terms (when the
    baseline's is positive), R^2 as differences. """
    def verdict(a, b):
        return "beats it" if a > b else ("ties" if a == b else "loses")

    def rel(a, b):
        change = f"{100 * (a - b) / b:+.0f} %" if b > 0 else f"{a - b:+.4f}"
        return f"{change} ({verdict(a, b)})"
    lines = []
    co = ev.get("co_bps", float("nan"))
    if "smoothing_co_bps" in ev:
        s = ev["smoothing_co_bps"]
        lines.append(f"{model} co-bps {co:.4f} vs smoothing {s:.4f} (width {ev['smoothing_width_ms']:g} ms, "
                     f"alpha {ev['smoothing_alpha']:g}): {rel(co, s)}")
    if "psth_baseline_co_bps" in ev:
        p = ev["psth_baseline_co_bps"]
        lines.append(f"{model} co-bps {co:.4f} vs PSTH baseline {p:.4f}: {rel(co, p)}")
    if "psth_r2" in ev:
        a, b = ev["psth_r2"], ev["psth_baseline_psth_r2"]
        lines.append(f"{model} PSTH R^2 {a:.3f} vs PSTH baseline {b:.3f}: {a - b:+.3f} ({verdict(a, b)}); "
                     f"smoothing {ev['smoothing_psth_r2']:.3f}")
    if "vel_r2_smoothed" in ev:
        s = ev["vel_r2_smoothed"]
        if "vel_r2_factors" in ev:
            f = ev["vel_r2_factors"]
            lines.append(f"{model} velocity R^2 from factors {f:.3f} vs smoothed spikes {s:.3f}: {f - s:+.3f} "
                         f"({verdict(f, s)})")
        else:
            lines.append(f"velocity R^2 from smoothed spikes {s:.3f} (no factors given)")
    if "fp_bps" in ev:
        lines.append(f"{model} fp-bps {ev['fp_bps']:.4f} (forward prediction, all neurons)")
    return lines
