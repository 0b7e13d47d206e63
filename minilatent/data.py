"""
Data for minilatent: synthetic datasets with ground truth, HDF5 files in lfads-torch's layout (and the
original LFADS layout), checks with clear errors, metrics, baselines and torch helpers.

A dataset is a plain dict of numpy arrays whose keys follow lfads-torch's HDF5 layout, so that
`save_h5(path, data)` writes a file lfads-torch can read and `load_h5(path)` reads one it wrote:

    train_encod_data, valid_encod_data   (trials, T, N)  spike counts the encoders see
    train_recon_data, valid_recon_data   (trials, T', N') what is reconstructed (usually the same)
    train_truth, valid_truth             (trials, T, N)  true rates; truth / conversion_factor = counts per bin
    conversion_factor                    scalar
    train_latents, valid_latents         (trials, T, D)  true latent state (minilatent extra)
    train_inputs,  valid_inputs          (trials, T, I)  true input pulses (minilatent extra)
    train_cond_idx, valid_cond_idx       (trials,)       condition of each trial (minilatent extra)
    dt                                   scalar, bin width in seconds

Arrays are (trials, time, neurons) everywhere, float32 counts per bin.

Generators follow the recipes of the LFADS paper: a Lorenz system read out by Poisson neurons, and a
chaotic RNN (Sompolinsky et al. 1988) with optional input pulses. Metrics follow the Neural Latents
Benchmark (bits per spike) and the LFADS papers (rate R^2, latent R^2 via an affine fit).
"""

import math
import os

import numpy as np
import torch

from .files import atomic_write

MAX_COUNT = 10_000     # spikes per bin above this are refused as spike counts (a unit or bin-size mistake)
DATA_KEYS = ("train_encod_data", "train_recon_data", "valid_encod_data", "valid_recon_data")
# the example datasets: package data when installed (minilatent/eg_data/), else the checkout's eg_data/
_HERE = os.path.dirname(os.path.abspath(__file__))
EG_DATA = os.path.join(_HERE, "eg_data")
if not os.path.isdir(EG_DATA):
    EG_DATA = os.path.join(os.path.dirname(_HERE), "eg_data")

# -----------------------------------------------------------------------------
# synthetic data with ground truth


def lorenz_trajectories(x0, n_steps, dt=0.006, sigma=10.0, rho=28.0, beta=8.0 / 3.0, burn_in=500):
    """ Euler-integrate the Lorenz system from each row of x0 (C, 3); returns (C, n_steps, 3). """
    x = np.array(x0, dtype=np.float64)
    out = np.empty((x.shape[0], n_steps, 3))
    for t in range(burn_in + n_steps):
        dx = sigma * (x[:, 1] - x[:, 0])
        dy = x[:, 0] * (rho - x[:, 2]) - x[:, 1]
        dz = x[:, 0] * x[:, 1] - beta * x[:, 2]
        x = x + dt * np.stack([dx, dy, dz], axis=1)
        if t >= burn_in:
            out[:, t - burn_in] = x
    return out


def lorenz_latents(rng, n_conditions, n_bins, integration_dt=0.006):
    """ z-scored Lorenz states (C, T, 3), one trajectory per condition from x0 ~ N([0, 0, 25], I) (drawn from rng) """
    x0 = rng.normal(size=(n_conditions, 3)) + np.array([0.0, 0.0, 25.0])
    z = lorenz_trajectories(x0, n_bins, dt=integration_dt)
    return (z - z.mean(axis=(0, 1))) / z.std(axis=(0, 1))


def _split_by_condition(n_conditions, trials_per_condition, n_valid):
    """ trial -> condition index, and boolean masks for train / valid (last n_valid of each condition) """
    cond = np.repeat(np.arange(n_conditions), trials_per_condition)
    within = np.tile(np.arange(trials_per_condition), n_conditions)
    valid = within >= trials_per_condition - n_valid
    return cond, ~valid, valid


def _assemble(counts, truth_hz, latents, inputs, cond, train, valid, dt):
    data = {}
    for split, m in (("train", train), ("valid", valid)):
        data[f"{split}_encod_data"] = counts[m]
        data[f"{split}_recon_data"] = counts[m]
        data[f"{split}_truth"] = truth_hz[m]
        if latents is not None:
            data[f"{split}_latents"] = latents[m]
        if inputs is not None:
            data[f"{split}_inputs"] = inputs[m]
        data[f"{split}_cond_idx"] = cond[m].astype(np.int64)
    data["conversion_factor"] = np.float64(1.0 / dt)  # truth is in spikes/s; / (1/dt) = counts per bin
    data["dt"] = np.float64(dt)
    return data


def make_lorenz(n_conditions=65, trials_per_condition=20, n_valid_per_condition=4, n_neurons=30,
                n_bins=100, dt=0.01, base_rate=5.0, integration_dt=0.006, seed=0):
    """ Lorenz-driven Poisson neurons (LFADS paper). Each condition starts from x0 ~ N([0,0,25], I),
    runs 500 burn-in Euler steps, then n_bins steps; the state is z-scored per dimension and
    log rate = W z + log(base_rate * dt) with W ~ U(-1, 1). Trials of a condition share the rates. """
    rng = np.random.default_rng(seed)
    z = lorenz_latents(rng, n_conditions, n_bins, integration_dt)    # (C, T, 3)
    W = rng.uniform(-1.0, 1.0, size=(3, n_neurons))
    b = math.log(base_rate * dt)
    rates = np.exp(z @ W + b)                                         # (C, T, N) counts per bin
    cond, train, valid = _split_by_condition(n_conditions, trials_per_condition, n_valid_per_condition)
    rates_tr = rates[cond]                                            # (trials, T, N)
    counts = rng.poisson(rates_tr).astype(np.float32)
    data = _assemble(counts, (rates_tr / dt).astype(np.float32), z[cond].astype(np.float32), None,
                     cond, train, valid, dt)
    data["readout_weights"] = W.astype(np.float32)
    return data


def make_chaotic_rnn(n_conditions=400, trials_per_condition=10, n_valid_per_condition=2, n_neurons=50,
                     n_bins=100, g=None, with_inputs=False, input_magnitude=20.0, tau=0.025, dt=0.01,
                     max_rate=30.0, seed=0):
    """ A chaotic rate network (original LFADS synthetic data): x <- (1 - dt/tau) x + (dt/tau) (g W tanh(x) + b u),
    W ~ N(0, 1/N), r = tanh(x) min-max normalised to [0, 1] per trial and neuron, spikes ~ Poisson(r max_rate dt).
    Conditions differ in their initial state x0 ~ N(0, 1). With inputs, each trial receives one pulse of
    size input_magnitude at a random bin in [T/4, 3T/4) through a random input vector b ~ N(0, 1), as in the
    original LFADS generator (a kick of (dt/tau) * 20 = 8 standard units per neuron: a visible perturbation). """
    rng = np.random.default_rng(seed)
    g = (2.5 if with_inputs else 1.5) if g is None else g
    N, T = n_neurons, n_bins
    W = rng.normal(size=(N, N)) / math.sqrt(N)
    b_in = rng.normal(size=N)
    x0 = rng.normal(size=(n_conditions, N))
    cond, train, valid = _split_by_condition(n_conditions, trials_per_condition, n_valid_per_condition)
    n_trials = len(cond)
    u = np.zeros((n_trials, T))
    if with_inputs:
        t_pulse = rng.integers(T // 4, 3 * T // 4, size=n_trials)
        u[np.arange(n_trials), t_pulse] = input_magnitude
    a = dt / tau
    x = x0[cond].copy()                                               # (trials, N)
    xs = np.empty((n_trials, T, N))
    for t in range(T):
        x = (1 - a) * x + a * (g * np.tanh(x) @ W.T + np.outer(u[:, t], b_in))
        xs[:, t] = x
    r = np.tanh(xs)
    lo, hi = r.min(axis=1, keepdims=True), r.max(axis=1, keepdims=True)
    r = (r - lo) / np.maximum(hi - lo, 1e-12)                         # [0, 1] per trial and neuron
    rates_hz = r * max_rate
    counts = rng.poisson(rates_hz * dt).astype(np.float32)
    inputs = u[..., None].astype(np.float32) if with_inputs else None
    return _assemble(counts, rates_hz.astype(np.float32), None, inputs, cond, train, valid, dt)


# -----------------------------------------------------------------------------
# HDF5 files: lfads-torch layout (read and write) and original LFADS layout (read)


def check_spikes(x, name, integer=True, nonnegative=True):
    """ Raise a ValueError naming `name` unless x is a (trials, time, neurons) array of counts. """
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected a numeric array of spike counts, got dtype {x.dtype}")
    if x.ndim != 3:
        raise ValueError(f"{name}: expected 3 dims (trials, time, neurons), got shape {x.shape}")
    if 0 in x.shape:
        raise ValueError(f"{name}: is empty (shape {x.shape})")
    if x.dtype.kind == "f":
        bad = ~np.isfinite(x)
        if bad.any():
            i = np.argwhere(bad)[0]
            raise ValueError(f"{name}: contains NaN or infinite values (first at trial {i[0]}, bin {i[1]}, neuron {i[2]})")
    if nonnegative and (x < 0).any():
        i = np.argwhere(x < 0)[0]
        raise ValueError(f"{name}: spike counts must be >= 0, found {x[tuple(i)]} at trial {i[0]}, bin {i[1]}, neuron {i[2]}")
    if integer and x.dtype.kind == "f" and (x != np.round(x)).any():
        i = np.argwhere(x != np.round(x))[0]
        raise ValueError(f"{name}: spike counts must be whole numbers, found {x[tuple(i)]} at trial {i[0]}, bin {i[1]}, neuron {i[2]}")
    if integer and x.max() > MAX_COUNT:
        i = np.unravel_index(np.argmax(x), x.shape)
        raise ValueError(f"{name}: a count of {x[i]:g} spikes in one bin (trial {i[0]}, bin {i[1]}, neuron {i[2]}); counts above "
                         f"{MAX_COUNT} per bin are refused: are these spike counts per bin (not times or rates)?")
    if integer and not x.any():
        raise ValueError(f"{name}: holds no spikes (all zeros): nothing to fit or to score")
    return x


def validate(data, counts=True, nonnegative=True):
    """ Check a dataset dict (see the module docstring); raises KeyError/ValueError that name the problem. """
    for k in ("train_encod_data", "valid_encod_data"):
        if k not in data:
            raise KeyError(f"missing key {k!r}; found {sorted(data)}")
    for split in ("train", "valid"):
        for kind in ("encod", "recon"):
            k = f"{split}_{kind}_data"
            check_spikes(data[k], k, integer=counts, nonnegative=nonnegative)
        e, r = data[f"{split}_encod_data"], data[f"{split}_recon_data"]
        if e.shape[0] != r.shape[0]:
            raise ValueError(f"{split}_encod_data has {e.shape[0]} trials but {split}_recon_data has {r.shape[0]}")
        if r.shape[1] < e.shape[1] or r.shape[2] < e.shape[2]:
            raise ValueError(f"{split}_recon_data {r.shape} must have at least the bins and channels of {split}_encod_data {e.shape}")
    for kind in ("encod", "recon"):
        a, b = data[f"train_{kind}_data"], data[f"valid_{kind}_data"]
        if a.shape[2] != b.shape[2]:
            raise ValueError(f"train_{kind}_data has {a.shape[2]} neurons but valid_{kind}_data has {b.shape[2]}")
        if a.shape[1] != b.shape[1]:
            raise ValueError(f"train_{kind}_data has {a.shape[1]} time bins but valid_{kind}_data has {b.shape[1]}")
    for split in ("train", "valid"):
        k = f"{split}_truth"
        if k in data:
            a, ref = np.asarray(data[k]), data[f"{split}_recon_data"]
            if a.dtype.kind not in "biuf":
                raise ValueError(f"{k}: expected a numeric array of true rates, got dtype {a.dtype}")
            if a.shape != ref.shape:
                raise ValueError(f"{k}: expected the shape of {split}_recon_data {ref.shape} (trials, time, neurons), got {a.shape}")
            if not np.isfinite(a).all():
                raise ValueError(f"{k}: contains NaN or infinite values")
    ext = [f"{split}_ext_input" for split in ("train", "valid") if f"{split}_ext_input" in data]
    if len(ext) == 1:
        missing = ext[0].replace("train", "valid") if ext[0].startswith("train") else ext[0].replace("valid", "train")
        raise ValueError(f"{ext[0]} is present but {missing} is missing: external inputs are needed for both splits")
    for k in ext:
        split = k.split("_")[0]
        a, ref = np.asarray(data[k]), data[f"{split}_recon_data"]
        if a.dtype.kind not in "biuf" or a.ndim != 3 or a.shape[0] != ref.shape[0] or a.shape[1] < ref.shape[1] or a.shape[2] < 1:
            raise ValueError(f"{k}: expected shape ({ref.shape[0]}, >= {ref.shape[1]} bins, inputs) (numeric), got "
                             f"{a.shape} of dtype {a.dtype}")
        if not np.isfinite(a).all():
            raise ValueError(f"{k}: contains NaN or infinite values")
    if len(ext) == 2 and np.shape(data[ext[0]])[2] != np.shape(data[ext[1]])[2]:
        raise ValueError(f"train_ext_input has {np.shape(data[ext[0]])[2]} inputs but valid_ext_input has {np.shape(data[ext[1]])[2]}")
    for k, lo in (("conversion_factor", "> 0"), ("dt", "> 0 (the bin width in seconds)")):
        if k in data:
            v = np.asarray(data[k])
            if v.dtype.kind not in "biuf" or v.size != 1:
                raise ValueError(f"{k} must be one positive number, got {'an array of shape ' + str(v.shape) if v.size != 1 else 'dtype ' + str(v.dtype)}")
            if not (np.isfinite(v).all() and float(v.reshape(())) > 0):
                raise ValueError(f"{k} must be {lo}, got {float(v.reshape(()))}")
    return data


def load_h5(path, counts=True, nonnegative=True):
    """ Read a dataset from an HDF5 file in lfads-torch's layout or the original LFADS layout
    (train_data / valid_data), check it, and return the dict described in the module docstring.
    A file with truth but no conversion_factor keeps it that way: see truth_conversion for the units.
    counts=False accepts fractional values; nonnegative=False also negative ones (continuous data). """
    import h5py
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such data file: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file ({e})") from None
    with f:
        raw = {k: f[k][()] for k in f.keys() if isinstance(f[k], h5py.Dataset)}
    data = {}
    torch_keys = [k for k in ("train_encod_data", "valid_encod_data") if k in raw]
    tf_keys = [k for k in ("train_data", "valid_data") if k in raw]
    if torch_keys and tf_keys:
        raise KeyError(f"{path}: mixes lfads-torch keys ({', '.join(torch_keys)}) with original LFADS keys "
                       f"({', '.join(tf_keys)}); use one layout (e.g. rename {tf_keys[0]} to {tf_keys[0].replace('_data', '_encod_data')})")
    if torch_keys:
        data.update(raw)
    elif "train_data" in raw or "valid_data" in raw:  # the original (TensorFlow) LFADS layout
        for k, v in raw.items():
            if k in ("train_data", "valid_data"):
                split = k.split("_")[0]
                data[f"{split}_encod_data"] = v
                data[f"{split}_recon_data"] = v
            else:
                data[k] = v
    else:
        raise KeyError(f"{path}: found none of the data keys 'train_encod_data'/'valid_encod_data' (lfads-torch) "
                       f"or 'train_data'/'valid_data' (original LFADS); keys present: {sorted(raw)}")
    for split in ("train", "valid"):
        if f"{split}_encod_data" not in data:
            raise KeyError(f"{path}: missing key '{split}_encod_data' (or '{split}_data'); keys present: {sorted(raw)}")
        data.setdefault(f"{split}_recon_data", data[f"{split}_encod_data"])
    validate(data, counts=counts, nonnegative=nonnegative)
    for k, v in list(data.items()):
        if isinstance(v, np.ndarray) and v.dtype.kind in "biuf" and v.ndim == 3:
            data[k] = v.astype(np.float32)
    return data


def save_h5(path, data, compression="gzip"):
    """ Write a dataset dict to HDF5 atomically (temporary file, fsync, then rename). Spike-count arrays
    (`*_data`) holding whole numbers are stored as unsigned integers; arrays of more than a few kB are
    gzip-compressed (shuffle filter, chunks of whole trials so repeated trials compress). The file reads
    back with load_h5, h5py or lfads-torch; load_h5 returns counts as float32 again. """
    import h5py

    def write(tmp):
        with h5py.File(tmp, "w", track_order=True) as f:
            for k in sorted(data):
                v = np.asarray(data[k])
                if k.endswith("_data") and v.dtype.kind == "f" and v.size and v.min() >= 0 \
                        and v.max() < 65536 and np.array_equal(v, np.round(v)):
                    v = v.astype(np.uint8 if v.max() < 256 else np.uint16)
                if v.ndim and v.size * v.itemsize > 4096 and compression:
                    chunks = (min(v.shape[0], 16),) + v.shape[1:] if v.ndim == 3 else True
                    f.create_dataset(k, data=v, compression=compression, compression_opts=9, shuffle=True,
                                     chunks=chunks, track_times=False)
                else:
                    f.create_dataset(k, data=v, track_times=False)
    atomic_write(path, write, by_name=True)


def true_rates(data, split):
    """ the ground-truth rates of a split in counts per bin (truth / conversion_factor) """
    k = f"{split}_truth"
    if k not in data:
        raise KeyError(f"this dataset has no ground truth ('{k}' missing)")
    if "conversion_factor" not in data:
        raise KeyError("conversion_factor: the dataset does not state the truth's units; set data['conversion_factor'] "
                       "(1 for counts per bin, 1/dt for spikes/s) or use truth_conversion(data)")
    return np.asarray(data[k], dtype=np.float32) / float(np.asarray(data["conversion_factor"]))


TRUTH_UNITS = ("auto", "hz", "counts")


def truth_conversion(data, units="auto", tolerance=1.5):
    """ The conversion factor that turns the truth into counts per bin, and a one-line note (or None).
    units: 'counts' (factor 1), 'hz' (spikes/s: factor 1/dt, dt from the data), or 'auto': the file's
    conversion_factor when it states one; otherwise inferred when evident from the ratio of the truth's mean
    to the counts' mean (about 1: counts per bin; about 1/dt: spikes/s; within a factor `tolerance`), else
    (None, the reason): never guess. Returns (None, None) when there is no truth. """
    if units not in TRUTH_UNITS:
        raise ValueError(f"units must be one of {TRUTH_UNITS}, got {units!r}")
    if "train_truth" not in data and "valid_truth" not in data:
        return None, None
    dt = float(np.asarray(data["dt"])) if "dt" in data else None
    if units == "counts":
        return 1.0, "truth read as counts per bin (--truth-units counts): conversion_factor 1"
    if units == "hz":
        if dt is None:
            raise ValueError("--truth-units hz needs the bin width, but the data hold no 'dt'; write dt into the file "
                             "or state conversion_factor (= 1/dt)")
        return 1.0 / dt, f"truth read as spikes/s (--truth-units hz): conversion_factor 1/dt = {1 / dt:g}"
    if "conversion_factor" in data:
        return float(np.asarray(data["conversion_factor"])), None
    split = "train" if "train_truth" in data else "valid"
    counts_mean = float(np.mean(data[f"{split}_recon_data"]))
    truth_mean = float(np.mean(data[f"{split}_truth"]))
    how = "state it with --truth-units hz|counts or write conversion_factor into the file"
    if counts_mean <= 0 or truth_mean <= 0:
        return None, f"rate R2 skipped: the file states no conversion_factor and the truth's units cannot be inferred; {how}"
    ratio = truth_mean / counts_mean
    if 1 / tolerance < ratio < tolerance:
        return 1.0, (f"no conversion_factor in the file: truth mean / count mean = {ratio:.3g}, so the truth is read as "
                     f"counts per bin (conversion_factor 1); {how}")
    if dt is not None and 1 / tolerance < ratio * dt < tolerance:
        return 1.0 / dt, (f"no conversion_factor in the file: truth mean / count mean = {ratio:.3g} = 1/dt, so the truth "
                          f"is read as spikes/s (conversion_factor {1 / dt:g}); {how}")
    return None, (f"rate R2 skipped: the file states no conversion_factor and the truth's units are not evident (truth mean / "
                  f"count mean = {ratio:.3g}" + (f", 1/dt = {1 / dt:g}" if dt else ", no dt in the file") + f"); {how}")


def eg_path(name):
    """ path of a shipped example file, e.g. eg_path('lorenz') -> .../eg_data/lorenz.h5 """
    p = os.path.join(EG_DATA, name if name.endswith(".h5") else f"{name}.h5")
    if not os.path.exists(p):
        have = sorted(f[:-3] for f in os.listdir(EG_DATA) if f.endswith(".h5")) if os.path.isdir(EG_DATA) else []
        raise FileNotFoundError(f"no example dataset {name!r} in {EG_DATA}; available: {have}")
    return p


# the shipped examples and how to make them again (`python -m minilatent make-eg-data`)
EXAMPLES = {
    "lorenz": lambda: make_lorenz(seed=0),
    "chaotic_rnn_inputs": lambda: make_chaotic_rnn(n_conditions=24, trials_per_condition=10,
                                                   with_inputs=True, seed=1),
}


def make_eg_data(folder=EG_DATA, names=None):
    """ (Re)generate the example datasets bit for bit; returns the paths written. """
    out = []
    for name in names or EXAMPLES:
        p = os.path.join(folder, f"{name}.h5")
        save_h5(p, EXAMPLES[name]())
        out.append(p)
    return out


# -----------------------------------------------------------------------------
# torch helpers


def lfads_tensors(data, split, device="cpu"):
    """ (encod, recon[, ext_input]) float32 tensors of a split, the batch format LFADS trains on """
    t = [torch.as_tensor(np.asarray(data[f"{split}_encod_data"], dtype=np.float32), device=device),
         torch.as_tensor(np.asarray(data[f"{split}_recon_data"], dtype=np.float32), device=device)]
    if f"{split}_ext_input" in data:
        t.append(torch.as_tensor(np.asarray(data[f"{split}_ext_input"], dtype=np.float32), device=device))
    return tuple(t)


# -----------------------------------------------------------------------------
# metrics


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


def log_factorial(x):
    """ log(x!) elementwise; a lookup table for whole numbers (spike counts), lgamma otherwise """
    x = np.asarray(x, np.float64)
    if x.size and np.all(x == np.round(x)) and x.min() >= 0 and x.max() <= 1e6:   # the table stays small
        table = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, int(x.max()) + 2)))])
        return table[x.astype(np.int64)]
    return np.vectorize(math.lgamma, otypes=[np.float64])(x + 1)


def poisson_nll(rates, spikes):
    """ total Poisson negative log-likelihood, log(n!) included; rates in counts per bin, clipped at 1e-9 """
    r = np.clip(np.asarray(rates, np.float64), 1e-9, None)
    x = np.asarray(spikes, np.float64)
    return float((r - x * np.log(r) + log_factorial(x)).sum())


def bits_per_spike(rates, spikes):
    """ Bits per spike, the Neural Latents Benchmark's definition: (NLL_null - NLL_model) / (total spikes * ln 2),
    where the null model predicts each neuron's mean count (over trials and time) at every bin. On neurons the
    model reconstructs from their own spikes this is an in-sample figure; only on held-out neurons is it NLB's
    co-bps (see co_bps). """
    x = np.asarray(spikes, np.float64)
    n = x.reshape(-1, x.shape[-1])
    null = np.broadcast_to(n.mean(0), x.shape)
    total = x.sum()
    if total == 0:
        raise ValueError("bits_per_spike: the data contain no spikes")
    return (poisson_nll(null, x) - poisson_nll(rates, x)) / (total * math.log(2))


# -----------------------------------------------------------------------------
# baselines: what a latent model has to beat


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


# -----------------------------------------------------------------------------
# spikes and rates (notebook 00): binning, count statistics and the table of baselines to beat


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
# SPARKS (notebook 03): neurons tuned to the phase of a 2-D rotation, the latent to decode


def make_rotation(n_trials=100, n_valid=20, n_neurons=100, n_bins=150, dt=0.01, freq_range=(0.5, 1.5),
                  p_base=0.05, p_max=0.6, kappa=2.3, seed=0, tuning_seed=None):
    """ Bernoulli neurons tuned to the phase of a 2-D rotation, the decoding task used to benchmark SPARKS
    (Skatchkovsky et al. 2024). Each trial rotates at f ~ U(freq_range) Hz from a random phase:
    theta_t = phi0 + 2 pi f t dt; the latent is (cos, sin) theta. Neuron n fires in a bin with probability
    p = p_base + p_max exp(kappa (cos(theta - pref_n) - 1)) (a von Mises bump around its preferred phase;
    gain ~ U(0.5, 1) scales p_max). The first n_trials - n_valid trials are 'train', the rest 'valid'.
    tuning_seed (default: seed) draws the neurons, so two sessions with different tuning_seed record different
    neurons of the same kind of rotation. The default tuning (~18 Hz mean rate) is calibrated to sparks-ai
    0.2.1's synthetic rotation setting (100 neurons, 150 bins of 10 ms), whose true-rate ceiling we measured at
    0.469 bits/spike: the true probabilities here score 0.47 bits/spike (bits_per_spike, the NLB Poisson
    definition; 0.60 with a Bernoulli likelihood).
    Keys: {split}_encod_data / _recon_data (binary spikes), _latents (cos, sin), _phase, _freq, _truth
    (firing probability / dt, in Hz; counts per bin = truth / conversion_factor), tuning_pref, tuning_gain. """
    if not 0 < n_valid < n_trials:
        raise ValueError(f"make_rotation: need 0 < n_valid < n_trials, got n_valid={n_valid}, n_trials={n_trials}")
    rng_t = np.random.default_rng(seed if tuning_seed is None else tuning_seed)
    pref = rng_t.uniform(0, 2 * np.pi, n_neurons)
    gain = rng_t.uniform(0.5, 1.0, n_neurons)
    rng = np.random.default_rng([seed, 7])
    freq = rng.uniform(*freq_range, n_trials)
    phi0 = rng.uniform(0, 2 * np.pi, n_trials)
    theta = phi0[:, None] + 2 * np.pi * freq[:, None] * np.arange(n_bins)[None, :] * dt      # (trials, T)
    p = rotation_probabilities(theta, pref, gain, p_base, p_max, kappa)                      # (trials, T, N)
    spikes = (rng.random(p.shape) < p).astype(np.float32)
    latents = np.stack([np.cos(theta), np.sin(theta)], -1).astype(np.float32)
    data = {}
    for split, sl in (("train", slice(0, n_trials - n_valid)), ("valid", slice(n_trials - n_valid, n_trials))):
        data[f"{split}_encod_data"] = spikes[sl]
        data[f"{split}_recon_data"] = spikes[sl]
        data[f"{split}_latents"] = latents[sl]
        data[f"{split}_phase"] = np.mod(theta[sl], 2 * np.pi).astype(np.float32)
        data[f"{split}_freq"] = freq[sl].astype(np.float32)
        data[f"{split}_truth"] = (p[sl] / dt).astype(np.float32)
    data.update(tuning_pref=pref.astype(np.float32), tuning_gain=gain.astype(np.float32),
                tuning=np.array([p_base, p_max, kappa], np.float64),
                conversion_factor=np.float64(1.0 / dt), dt=np.float64(dt))
    return data


def rotation_probabilities(theta, pref, gain, p_base=0.05, p_max=0.6, kappa=2.3):
    """ firing probability per bin of neurons (pref, gain) at phases theta (..., T) -> (..., T, N) """
    d = np.asarray(theta, np.float64)[..., None] - np.asarray(pref, np.float64)
    return p_base + p_max * np.asarray(gain, np.float64) * np.exp(kappa * (np.cos(d) - 1.0))


def rotation_truth(data, split):
    """ the true firing probabilities (trials, T, N) of a rotation dataset, from its phases and tuning (works
    for the shipped files too, which leave the _truth arrays out to stay small) """
    if f"{split}_truth" in data:
        return true_rates(data, split)
    p_base, p_max, kappa = (float(v) for v in np.asarray(data["tuning"]))
    return rotation_probabilities(data[f"{split}_phase"], data["tuning_pref"], data["tuning_gain"],
                                  p_base, p_max, kappa).astype(np.float32)


def make_rotation_sessions(n_sessions=2, n_neurons=(60, 40), n_trials=100, n_valid=20, seed=0, **kw):
    """ Several recordings of the same kind of rotation with different neurons (and different trials):
    a list of make_rotation datasets, session k drawn with seed (seed, k) and its own tuning. """
    if len(n_neurons) != n_sessions:
        raise ValueError(f"make_rotation_sessions: n_neurons has {len(n_neurons)} entries for {n_sessions} sessions")
    return [make_rotation(n_trials=n_trials, n_valid=n_valid, n_neurons=n, seed=seed * 1000 + 101 * (k + 1),
                          tuning_seed=seed * 1000 + 202 * (k + 1), **kw) for k, n in enumerate(n_neurons)]


def _small(d):
    """ a rotation dataset without the _truth arrays (rotation_truth rebuilds them): files stay ~0.3 MB """
    return {k: v for k, v in d.items() if not k.endswith("_truth")}


def sparks_tensors(data, split, device="cpu", target="latents"):
    """ (spikes, target) float32 tensors of a split for SPARKS: target 'latents' (supervised decoding) or
    None (unsupervised: spikes only, returned as a 1-tuple) """
    x = torch.as_tensor(np.asarray(data[f"{split}_encod_data"], dtype=np.float32), device=device)
    if target is None:
        return (x,)
    return x, torch.as_tensor(np.asarray(data[f"{split}_{target}"], dtype=np.float32), device=device)


EXAMPLES["rotation"] = lambda: _small(make_rotation(seed=0))
EXAMPLES["rotation_session0"] = lambda: _small(make_rotation_sessions(seed=0)[0])
EXAMPLES["rotation_session1"] = lambda: _small(make_rotation_sessions(seed=0)[1])


# -----------------------------------------------------------------------------
# LFADS, the full model (notebook 02): several sessions, continuous data, and the inferred-input metric


def make_lorenz_sessions(neurons=(30, 40), n_conditions=65, trials_per_condition=20, n_valid_per_condition=4,
                         n_bins=100, dt=0.01, base_rate=5.0, integration_dt=0.006, seed=0):
    """ The same Lorenz latents recorded in several sessions, each by its own set of neurons (one session per
    entry of `neurons`): every session sees the same conditions (same x0, hence the same latent trajectories),
    through its own read-out W_s ~ U(-1, 1) and with its own Poisson spikes. Returns a list of dataset dicts
    (the layout of make_lorenz, with the true latents and `readout_weights`). """
    rng = np.random.default_rng(seed)
    z = lorenz_latents(rng, n_conditions, n_bins, integration_dt)    # (C, T, 3), shared by every session
    b = math.log(base_rate * dt)
    cond, train, valid = _split_by_condition(n_conditions, trials_per_condition, n_valid_per_condition)
    sessions = []
    for n in neurons:
        W = rng.uniform(-1.0, 1.0, size=(3, n))
        rates = np.exp(z @ W + b)[cond]                                 # (trials, T, N_s) counts per bin
        counts = rng.poisson(rates).astype(np.float32)
        d = _assemble(counts, (rates / dt).astype(np.float32), z[cond].astype(np.float32), None,
                      cond, train, valid, dt)
        d["readout_weights"] = W.astype(np.float32)
        sessions.append(d)
    return sessions


def make_lorenz_gaussian(n_channels=30, noise_std=0.5, n_conditions=65, trials_per_condition=20,
                         n_valid_per_condition=4, n_bins=100, dt=0.01, integration_dt=0.006, seed=0):
    """ A continuous (Gaussian) variant of the Lorenz data, like binned fluorescence or LFP features:
    y = W z + noise_std * N(0, 1) with W ~ U(-1, 1) per channel; the data are signed and fractional.
    `{split}_truth` holds the noise-free mean W z (conversion_factor 1). Load it back with
    load_h5(path, counts=False, nonnegative=False). """
    rng = np.random.default_rng(seed)
    z = lorenz_latents(rng, n_conditions, n_bins, integration_dt)
    W = rng.uniform(-1.0, 1.0, size=(3, n_channels))
    cond, train, valid = _split_by_condition(n_conditions, trials_per_condition, n_valid_per_condition)
    mean = (z @ W)[cond]                                              # (trials, T, N)
    y = (mean + noise_std * rng.normal(size=mean.shape)).astype(np.float32)
    d = _assemble(y, mean.astype(np.float32), z[cond].astype(np.float32), None, cond, train, valid, dt)
    d["conversion_factor"] = np.float64(1.0)
    d["readout_weights"] = W.astype(np.float32)
    return d


def psths(data, split="train"):
    """ condition-averaged responses (C, T, N) of a split, conditions in sorted order of `{split}_cond_idx`
    (what LFADS.init_pcr aligns across sessions). """
    x = np.asarray(data[f"{split}_recon_data"], np.float64)
    cond = np.asarray(data[f"{split}_cond_idx"])
    return np.stack([x[cond == c].mean(0) for c in np.unique(cond)])


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
        if xs.size == 0 or xs.sum() == 0:
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


def split_heldout(data, n_heldout, seed=0):
    """ Hold out n_heldout neurons, NLB style: a seeded random choice of neurons disappears from encod_data
    (the model never sees their spikes) and moves to the end of recon_data (held-in neurons first, then
    held-out, as lfads-torch expects); `{split}_truth` is reordered the same way. The chosen indices (into
    the original neuron order) are stored as 'heldin_idx' and 'heldout_idx'. Returns a new dict.
    The data must not already hold held-out neurons (recon_data as wide as encod_data). """
    if isinstance(n_heldout, bool) or not isinstance(n_heldout, (int, np.integer)):
        raise TypeError(f"split_heldout: n_heldout must be a whole number, got {n_heldout!r}")
    N = np.shape(data["train_encod_data"])[2]
    for split in ("train", "valid"):
        if np.shape(data[f"{split}_recon_data"])[2] != N:
            raise ValueError(f"split_heldout: {split}_recon_data already has {np.shape(data[f'{split}_recon_data'])[2]} "
                             f"neurons for {N} held-in ones; the data hold held-out neurons already")
    if not 0 < n_heldout < N:
        raise ValueError(f"split_heldout: n_heldout must be between 1 and {N - 1} (the data have {N} neurons), got {n_heldout}")
    rng = np.random.default_rng(seed)
    heldout = np.sort(rng.choice(N, size=int(n_heldout), replace=False))
    heldin = np.setdiff1d(np.arange(N), heldout)
    order = np.concatenate([heldin, heldout])
    out = dict(data)
    for split in ("train", "valid"):
        out[f"{split}_encod_data"] = np.asarray(data[f"{split}_encod_data"])[..., heldin]
        out[f"{split}_recon_data"] = np.asarray(data[f"{split}_recon_data"])[..., order]
        if f"{split}_truth" in data and np.shape(data[f"{split}_truth"])[2] == N:
            out[f"{split}_truth"] = np.asarray(data[f"{split}_truth"])[..., order]
    out["heldin_idx"], out["heldout_idx"] = heldin.astype(np.int64), heldout.astype(np.int64)
    return out


# -----------------------------------------------------------------------------
# real recordings: NWB files (Neurodata Without Borders), in the layout of the Neural Latents Benchmark's
# datasets: a units table with each unit's `spike_times` (s) and `obs_intervals`, and a trials table with
# `start_time`, `stop_time` and event columns (e.g. `move_onset_time`), optionally a `split` column
# ('train' / 'val' / 'test') and, in the units table, a boolean `heldout` column.

NWB_EXTRA = "reading NWB files needs pynwb: pip install 'minilatent[nwb]' (or pip install pynwb)"


def _nwb_column(table, name):
    return np.asarray(table[name].data[:]) if hasattr(table[name], "data") else np.asarray(table[name][:])


def bin_spike_times(spike_times, starts, n_bins, bin_s):
    """ Count spikes in n_bins bins of bin_s seconds from each start: (units' spike-time arrays, (trials,)) ->
    (trials, n_bins, units) float32 counts. Bins are half-open [edge, edge + bin_s): a spike on an edge counts
    in the bin that starts there (edges are matched to 1e-6 of a bin, so a spike written as start + k * bin_s
    lands in bin k despite rounding), and a spike at the end of the last bin is not counted. """
    starts = np.asarray(starts, np.float64)
    out = np.zeros((len(starts), n_bins, len(spike_times)), np.float32)
    order = np.argsort(starts)
    for u, st in enumerate(spike_times):
        st = np.sort(np.asarray(st, np.float64))
        for i in order:
            lo = np.searchsorted(st, starts[i] - 1e-6 * bin_s, side="left")
            hi = np.searchsorted(st, starts[i] + n_bins * bin_s + 1e-6 * bin_s, side="left")
            k = np.floor((st[lo:hi] - starts[i]) / bin_s + 1e-6).astype(np.int64)
            k = k[(k >= 0) & (k < n_bins)]
            np.add.at(out[i, :, u], k, 1.0)
    return out


def load_nwb(path, bin_ms=10.0, align=None, window=None, split_column=None, valid_fraction=0.2, seed=0,
             heldout=None, condition_column=None):
    """ Read spike times and trials from an NWB file and return the dict load_h5 returns (trials x bins x
    units counts per split, float32), so that LFADS trains on it as on any dataset.

    bin_ms          bin width in milliseconds
    align           trials-table column with the time (s) each trial is aligned to; None: `start_time`
    window          (start_ms, end_ms) around the align time; None: from each trial's start to its stop,
                    cut to the shortest trial (with align=None). It must lie inside every trial; a last
                    partial bin is dropped.
    split_column    trials-table column naming each trial's split: 'train' -> train, 'val'/'valid' ->
                    valid, anything else (e.g. NLB's 'test', which has no held-out data) is left out.
                    None: a seeded random valid_fraction of the trials is valid.
    heldout         None: every unit is held in. 'column': the units table's boolean `heldout` column picks
                    the held-out units (NLB files); an int K: a seeded random choice of K units
                    (split_heldout). Held-out units are left out of encod_data and put last in recon_data.
    condition_column trials-table column whose values label conditions -> `{split}_cond_idx` (ints in the
                    order of the sorted unique values, which are stored as 'cond_values')
    Also returned: dt (s), conversion_factor 1, `{split}_trial_idx` (rows of the trials table),
    `{split}_align_time` (s), unit_ids, and the binning settings (bin_ms, window_ms).
    Units whose obs_intervals do not cover a trial's window make that trial unusable: such trials are left
    out and counted in 'n_unobserved_trials'. Raises ValueError (one line) for a file without units or trials,
    an unknown column or a window outside a trial, and ImportError naming the [nwb] extra without pynwb. """
    try:
        import pynwb
    except ImportError:
        raise ImportError(NWB_EXTRA) from None
    import warnings
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such NWB file: {path}")
    if not (np.isfinite(bin_ms) and bin_ms > 0):
        raise ValueError(f"load_nwb: bin_ms must be a positive number of milliseconds, got {bin_ms}")
    if not 0 < valid_fraction < 1:
        raise ValueError(f"load_nwb: valid_fraction must be in (0, 1), got {valid_fraction}")
    bin_s = bin_ms / 1000.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            io = pynwb.NWBHDF5IO(path, "r", load_namespaces=True)
            nwb = io.read()
        except Exception as e:  # pynwb raises many kinds; the user needs one line
            raise ValueError(f"{path}: not a readable NWB file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        try:
            units, trials = nwb.units, nwb.trials
            if units is None or len(units) == 0:
                raise ValueError(f"{path}: the NWB file has no units table (spike times of sorted units)")
            if trials is None or len(trials) == 0:
                raise ValueError(f"{path}: the NWB file has no trials table")
            if "spike_times" not in units.colnames:
                raise ValueError(f"{path}: the units table has no spike_times column; columns: {list(units.colnames)}")
            n_units = len(units)
            spikes = [np.asarray(units["spike_times"][u], np.float64) for u in range(n_units)]
            obs = ([np.asarray(units["obs_intervals"][u], np.float64).reshape(-1, 2) for u in range(n_units)]
                   if "obs_intervals" in units.colnames else None)
            unit_ids = np.asarray(units.id[:])
            held_col = _nwb_column(units, "heldout").astype(bool) if "heldout" in units.colnames else None
            tcols = ("start_time", "stop_time") + tuple(trials.colnames)
            t_start, t_stop = _nwb_column(trials, "start_time"), _nwb_column(trials, "stop_time")
            for name, what in ((align, "align"), (split_column, "split_column"), (condition_column, "condition_column")):
                if name is not None and name not in tcols:
                    raise ValueError(f"{path}: {what} column {name!r} is not in the trials table; columns: {list(tcols)}")
            align_t = t_start if align is None else _nwb_column(trials, align).astype(np.float64)
            split_vals = None if split_column is None else _nwb_column(trials, split_column)
            cond_vals = None if condition_column is None else _nwb_column(trials, condition_column)
        finally:
            io.close()
    split_vals = None if split_vals is None else np.array([v.decode() if isinstance(v, bytes) else str(v) for v in split_vals])
    n_trials = len(t_start)
    # --- the window of every trial
    if window is None:
        if align is not None:
            raise ValueError("load_nwb: with align=..., give window=(start_ms, end_ms) around the align time")
        w0, w1 = 0.0, float(np.min(t_stop - t_start)) * 1000.0
    else:
        if len(window) != 2 or not all(np.isfinite(window)) or not window[1] > window[0]:
            raise ValueError(f"load_nwb: window must be (start_ms, end_ms) with end > start, got {window}")
        w0, w1 = float(window[0]), float(window[1])
    n_bins = int(math.floor((w1 - w0) / bin_ms + 1e-9))
    if n_bins < 1:
        raise ValueError(f"load_nwb: the window ({w0:g}, {w1:g}) ms is shorter than one {bin_ms:g} ms bin")
    starts = align_t + w0 / 1000.0
    ends = starts + n_bins * bin_s
    bad = np.flatnonzero(~np.isfinite(starts))
    if len(bad):
        raise ValueError(f"{path}: trial {bad[0]} has no {align or 'start_time'} time (NaN)")
    tol = 1e-6 * bin_s
    outside = np.flatnonzero((starts < t_start - tol) | (ends > t_stop + tol))
    if len(outside):
        i = outside[0]
        raise ValueError(f"{path}: the window ({w0:g}, {w1:g}) ms around {align or 'start_time'} falls outside trial {i} "
                         f"({t_start[i]:.3f}-{t_stop[i]:.3f} s) and {len(outside) - 1} more")
    usable = np.ones(n_trials, bool)
    if obs is not None:
        for iv in obs:
            if len(iv):
                covered = ((iv[None, :, 0] <= starts[:, None] + tol) & (iv[None, :, 1] >= ends[:, None] - tol)).any(1)
                usable &= covered
    # --- train / valid
    if split_vals is not None:
        is_train, is_valid = split_vals == "train", np.isin(split_vals, ("val", "valid"))
    else:
        perm = np.random.default_rng(seed).permutation(n_trials)
        is_valid = np.zeros(n_trials, bool)
        is_valid[perm[: max(1, int(round(valid_fraction * n_trials)))]] = True
        is_train = ~is_valid
    is_train, is_valid = is_train & usable, is_valid & usable
    for name, m in (("train", is_train), ("valid", is_valid)):
        if not m.any():
            raise ValueError(f"{path}: no usable {name} trials" + (f" (split column {split_column!r})" if split_vals is not None else ""))
    counts = bin_spike_times(spikes, starts, n_bins, bin_s)          # (trials, T, units)
    data = {}
    for name, m in (("train", is_train), ("valid", is_valid)):
        idx = np.flatnonzero(m)
        data[f"{name}_encod_data"] = counts[idx]
        data[f"{name}_recon_data"] = counts[idx]
        data[f"{name}_trial_idx"] = idx.astype(np.int64)
        data[f"{name}_align_time"] = align_t[idx]
    if cond_vals is not None:
        values, inverse = np.unique(np.asarray(cond_vals), return_inverse=True)
        for name, m in (("train", is_train), ("valid", is_valid)):
            data[f"{name}_cond_idx"] = inverse[m].astype(np.int64)
        data["cond_values"] = values
    data.update(dt=np.float64(bin_s), conversion_factor=np.float64(1.0), unit_ids=unit_ids,
                bin_ms=np.float64(bin_ms), window_ms=np.array([w0, w0 + n_bins * bin_ms]),
                n_unobserved_trials=np.int64((~usable).sum()))
    if heldout is not None:
        if isinstance(heldout, str):
            if heldout != "column":
                raise ValueError(f"load_nwb: heldout must be None, 'column' or a number of units, got {heldout!r}")
            if held_col is None:
                raise ValueError(f"{path}: heldout='column' but the units table has no 'heldout' column")
            if held_col.all() or not held_col.any():
                raise ValueError(f"{path}: the units table's heldout column must mark some but not all units")
            hi, ho = np.flatnonzero(~held_col), np.flatnonzero(held_col)
            order = np.concatenate([hi, ho])
            for name in ("train", "valid"):
                data[f"{name}_encod_data"] = data[f"{name}_encod_data"][..., hi]
                data[f"{name}_recon_data"] = data[f"{name}_recon_data"][..., order]
            data["heldin_idx"], data["heldout_idx"] = hi.astype(np.int64), ho.astype(np.int64)
        else:
            data = split_heldout(data, heldout, seed=seed)
    validate(data)
    return data


# -----------------------------------------------------------------------------
# a suite of datasets that spans what labs record (issue 11): Lorenz and chaotic-RNN dynamics at mean rates of
# 1-20 Hz, 20-200 neurons, 200-2000 trials, 50-200 bins. benchmarks/lfads_datasets.py trains the command line's
# defaults on every one of them. Each dataset has its true rates (Hz) and, for Lorenz, its true latents.


def make_lorenz_rate(n_neurons=30, n_trials=1300, n_bins=100, mean_rate_hz=5.0, valid_fraction=0.2,
                     trials_per_condition=10, gain=1.0, dt=0.01, integration_dt=0.006, seed=0):
    """ make_lorenz's Lorenz-driven Poisson neurons at a chosen mean rate: log rate = W z + b with
    W ~ gain * U(-1, 1) (3 x N; gain sets how deeply the rates are modulated) and one offset b set so that the true rates average mean_rate_hz over neurons, trials
    and bins. n_trials are n_trials / trials_per_condition conditions (Lorenz initial states) of
    trials_per_condition trials each; the last round(valid_fraction * trials_per_condition) trials of every
    condition are validation trials. Keys as make_lorenz (truth in Hz, conversion_factor 1/dt, latents). """
    if n_trials % trials_per_condition:
        raise ValueError(f"make_lorenz_rate: n_trials={n_trials} is not a multiple of trials_per_condition={trials_per_condition}")
    n_valid = int(round(valid_fraction * trials_per_condition))
    if not 0 < n_valid < trials_per_condition:
        raise ValueError(f"make_lorenz_rate: valid_fraction={valid_fraction} leaves no train or no valid trials")
    if not mean_rate_hz > 0:
        raise ValueError(f"make_lorenz_rate: mean_rate_hz must be > 0, got {mean_rate_hz}")
    rng = np.random.default_rng(seed)
    C = n_trials // trials_per_condition
    z = lorenz_latents(rng, C, n_bins, integration_dt)               # (C, T, 3)
    W = gain * rng.uniform(-1.0, 1.0, size=(3, n_neurons))
    shape = np.exp(z @ W)                                            # (C, T, N), up to the offset
    rates = shape * (mean_rate_hz * dt / shape.mean())               # counts per bin, mean = mean_rate_hz * dt
    cond, train, valid = _split_by_condition(C, trials_per_condition, n_valid)
    rates_tr = rates[cond]
    counts = rng.poisson(rates_tr).astype(np.float32)
    data = _assemble(counts, (rates_tr / dt).astype(np.float32), z[cond].astype(np.float32), None,
                     cond, train, valid, dt)
    data["readout_weights"] = W.astype(np.float32)
    return data


def make_chaotic_rnn_rate(n_neurons=50, n_trials=1000, n_bins=100, mean_rate_hz=5.0, valid_fraction=0.2,
                          trials_per_condition=10, g=1.5, tau=0.025, dt=0.01, seed=0):
    """ make_chaotic_rnn's autonomous chaotic network (no inputs) at a chosen mean rate: the [0, 1] rate
    profiles are scaled so that the true rates average mean_rate_hz. Conditions and splits as
    make_lorenz_rate. The network's state is its own latent (N-dimensional): no `latents` key. """
    if n_trials % trials_per_condition:
        raise ValueError(f"make_chaotic_rnn_rate: n_trials={n_trials} is not a multiple of trials_per_condition={trials_per_condition}")
    n_valid = int(round(valid_fraction * trials_per_condition))
    if not 0 < n_valid < trials_per_condition:
        raise ValueError(f"make_chaotic_rnn_rate: valid_fraction={valid_fraction} leaves no train or no valid trials")
    d = make_chaotic_rnn(n_conditions=n_trials // trials_per_condition, trials_per_condition=trials_per_condition,
                         n_valid_per_condition=n_valid, n_neurons=n_neurons, n_bins=n_bins, g=g, tau=tau, dt=dt,
                         max_rate=1.0, seed=seed)
    # make_chaotic_rnn drew Poisson counts at max_rate 1 Hz; draw them again at the chosen rate
    rng = np.random.default_rng([seed, 11])
    scale = mean_rate_hz / np.mean(np.concatenate([d["train_truth"].ravel(), d["valid_truth"].ravel()]))
    for split in ("train", "valid"):
        truth = (d[f"{split}_truth"] * scale).astype(np.float32)      # Hz
        d[f"{split}_truth"] = truth
        counts = rng.poisson(truth.astype(np.float64) * dt).astype(np.float32)
        d[f"{split}_encod_data"] = counts
        d[f"{split}_recon_data"] = counts
    return d


def to_original_lfads(data):
    """ the same dataset in the original (TensorFlow) LFADS file layout, as public files are often shared:
    train_data / valid_data (counts), train_truth / valid_truth in Hz and *no* conversion_factor (the reader must
    know the units), plus any latents and condition labels. """
    out = {"train_data": data["train_encod_data"], "valid_data": data["valid_encod_data"],
           "train_truth": data["train_truth"], "valid_truth": data["valid_truth"]}
    for k in ("train_latents", "valid_latents", "train_cond_idx", "valid_cond_idx", "dt"):
        if k in data:
            out[k] = data[k]
    return out


# name -> (generator, keyword arguments). Spans rates 1-20 Hz, 20-200 neurons, 200-2000 trials, 50-200 bins.
# 'lorenz_sparse' is built like the public dataset of issue 11: 60 neurons at ~1.8 Hz, 640 / 160 trials of
# 100 bins, saved in the original LFADS layout with truth in Hz and no conversion_factor; gain 1.09 makes its true
# rates score ~0.95 bits/spike, as the public file's do (0.958).
SUITE = {
    "lorenz_sparse": (make_lorenz_rate, dict(n_neurons=60, n_trials=800, n_bins=100, mean_rate_hz=1.8, gain=1.09,
                                             trials_per_condition=10, seed=101)),
    "lorenz_small": (make_lorenz_rate, dict(n_neurons=20, n_trials=200, n_bins=50, mean_rate_hz=10.0,
                                            trials_per_condition=10, seed=102)),
    "lorenz_dense": (make_lorenz_rate, dict(n_neurons=200, n_trials=400, n_bins=100, mean_rate_hz=20.0,
                                            trials_per_condition=10, seed=103)),
    "lorenz_long": (make_lorenz_rate, dict(n_neurons=40, n_trials=600, n_bins=200, mean_rate_hz=1.0,
                                           trials_per_condition=10, seed=104)),
    "rnn_sparse": (make_chaotic_rnn_rate, dict(n_neurons=50, n_trials=1000, n_bins=100, mean_rate_hz=2.0,
                                               trials_per_condition=10, seed=105)),
    "rnn_many": (make_chaotic_rnn_rate, dict(n_neurons=100, n_trials=2000, n_bins=50, mean_rate_hz=8.0,
                                             trials_per_condition=10, seed=106)),
}


def make_suite(name):
    """ one dataset of the suite (see SUITE) by name; 'lorenz_sparse' in the original LFADS layout """
    if name not in SUITE:
        raise KeyError(f"unknown suite dataset {name!r}; choose from {sorted(SUITE)}")
    fn, kw = SUITE[name]
    d = fn(**kw)
    return to_original_lfads(d) if name == "lorenz_sparse" else d


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


# -----------------------------------------------------------------------------
# what the command line uses: one reader for .h5 and .nwb files, and NLB's figures for a split


def load_dataset(path, counts=True, nonnegative=True, bin_ms=10.0, align=None, window=None, heldout_neurons=None,
                 seed=0):
    """ load_h5 for HDF5 files, load_nwb (bin_ms, align, window; split by the trials table's 'split' column when
    it has one, else by seed) for .nwb files; then, with heldout_neurons=K, hold out K neurons (split_heldout,
    seeded). The NWB options are refused for HDF5 files, which are binned already. """
    path = os.fspath(path)
    if path.lower().endswith(".nwb"):
        data = load_nwb(path, bin_ms=bin_ms, align=align, window=window, seed=seed,
                        split_column=_nwb_split_column(path))
    else:
        if align is not None or window is not None:
            raise ValueError(f"{path}: align and window apply to NWB recordings only (an HDF5 dataset is binned already)")
        data = load_h5(path, counts=counts, nonnegative=nonnegative)
    if heldout_neurons:
        data = split_heldout(data, heldout_neurons, seed=seed)
    return data


def _nwb_split_column(path):
    """ 'split' when the NWB file's trials table has that column (the NLB files do), else None """
    import warnings
    import pynwb
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with pynwb.NWBHDF5IO(path, "r", load_namespaces=True) as io:
                trials = io.read().trials
                return "split" if trials is not None and "split" in trials.colnames else None
        except Exception:
            return None        # load_nwb reports what is wrong with the file


def heldout_figures(rates, data, split="valid"):
    """ NLB's figures for a split of a dataset with held-out neurons and/or forward bins (see
    regional_bits_per_spike): {'bps' (held-in, in-sample), 'co_bps', 'fp_bps'} with only the ones that apply;
    {} when recon_data has neither more neurons nor more bins than encod_data. """
    e, r = np.shape(data[f"{split}_encod_data"]), np.shape(data[f"{split}_recon_data"])
    if r[1:] == e[1:]:
        return {}
    out = regional_bits_per_spike(rates, data[f"{split}_recon_data"], e[2], e[1])
    return {k: v for k, v in out.items() if (k != "co_bps" or r[2] > e[2]) and (k != "fp_bps" or r[1] > e[1])}


# circuits with a known truth (notebook 07): spikes from the ring attractor and from a bistable E/I network


def _split_trials(arrays, n_trials, n_valid):
    """ {name: (trials, ...) array} -> {train_name, valid_name}: the first n_trials - n_valid trials are 'train' """
    out = {}
    for split, sl in (("train", slice(0, n_trials - n_valid)), ("valid", slice(n_trials - n_valid, n_trials))):
        for k, v in arrays.items():
            out[f"{split}_{k}"] = v[sl]
    return out


def _check_trials(fn, n_trials, n_valid, n_bins, dt):
    if not 0 < n_valid < n_trials:
        raise ValueError(f"{fn}: need 0 < n_valid < n_trials, got n_valid={n_valid}, n_trials={n_trials}")
    if n_bins < 2:
        raise ValueError(f"{fn}: n_bins must be >= 2, got {n_bins}")
    if not 0 < dt:
        raise ValueError(f"{fn}: dt must be > 0 s, got {dt}")


def ring_phase(rates, angles=None):
    """ the bump's position on the ring: the angle of the first Fourier mode of rates (..., N) -> (...) in [0, 2 pi) """
    r = np.asarray(rates, np.float64)
    th = np.arange(r.shape[-1]) * 2 * np.pi / r.shape[-1] if angles is None else np.asarray(angles, np.float64)
    return np.mod(np.angle((r * np.exp(1j * th)).sum(-1)), 2 * np.pi)


def make_ring_trials(n_trials=500, n_valid=100, n_recorded=60, n_ring=120, n_bins=50, dt=0.02, J0=-2.0, J1=4.0,
                     I=1.0, tau=0.02, noise=0.2, cue_prob=0.5, cue_window=(0.3, 0.7), cue_duration=0.1,
                     cue_amplitude=1.5, init_scale=(1.0, 1.0), base_rate=2.0, rate_scale=20.0, sim_dt=1e-3, seed=0):
    """ Spikes from the ring attractor of notebook 06 (circuits.ring_config: threshold-linear, cosine couplings
    J0 + J1 cos, a bump for J1 > 2), with the circuit's state as truth. Each trial starts from the theory's bump
    (circuits.ring_bump) at a random phase, scaled by a factor uniform in init_scale (away from 1: the trial starts
    off the attractor and relaxes onto it); input noise (std `noise`, circuits' convention) makes it drift; on a
    fraction cue_prob of the trials a cue cue_amplitude * cos(theta - angle) at a random angle, for cue_duration s
    at a random time in cue_window, moves the bump there. A random subset of n_recorded of the n_ring neurons is
    recorded: rate (Hz) = base_rate + rate_scale * r at the end of each bin of dt s, and Poisson counts per bin.
    All trials run as one batched simulation (sim_dt steps), in a few seconds.
    Keys: {split}_encod_data / _recon_data (counts), _truth (Hz; / conversion_factor = counts per bin),
    _latents (cos, sin of the bump phase, (trials, T, 2)), _phase (trials, T) radians, _cue_time (s, nan without
    a cue), _cue_angle (nan without), _inputs (trials, T, 1): 1 in the bins where the cue is on;
    neuron_angles (n_recorded,) preferred angle of each recorded neuron, neuron_index, dt, conversion_factor,
    ring_params [J0, J1, I, tau, noise]. """
    from .circuits import Circuit, ring_config, ring_bump
    _check_trials("make_ring_trials", n_trials, n_valid, n_bins, dt)
    if not 0 < n_recorded <= n_ring:
        raise ValueError(f"make_ring_trials: need 0 < n_recorded <= n_ring, got n_recorded={n_recorded}, n_ring={n_ring}")
    if J1 <= 2:
        raise ValueError(f"make_ring_trials: J1 must be > 2 for a bump to exist, got J1={J1}")
    steps_per_bin = int(round(dt / sim_dt))
    if steps_per_bin < 1 or abs(steps_per_bin * sim_dt - dt) > 1e-9:
        raise ValueError(f"make_ring_trials: dt={dt} must be a whole number of sim_dt={sim_dt} steps")
    rng = np.random.default_rng(seed)
    ring = Circuit(ring_config(J0=J0, J1=J1, I=I, n=n_ring, tau=tau, dt=sim_dt), native=False)
    th = ring.angles(0).numpy()                                               # (n_ring,)
    tc, A = ring_bump(J0, J1, I)
    phi0 = rng.uniform(0, 2 * np.pi, n_trials)
    scale = rng.uniform(*init_scale, n_trials)[:, None]
    r0 = scale * A * np.clip(np.cos(th[None] - phi0[:, None]) - math.cos(tc), 0, None)   # (trials, n_ring): the bump
    has_cue = rng.random(n_trials) < cue_prob
    cue_angle = np.where(has_cue, rng.uniform(0, 2 * np.pi, n_trials), np.nan)
    cue_time = np.where(has_cue, rng.uniform(*cue_window, n_trials), np.nan)
    cue_time = np.round(cue_time / sim_dt) * sim_dt                           # on the simulation's grid
    start = np.where(has_cue, np.round(np.nan_to_num(cue_time) / sim_dt), -1).astype(np.int64)
    stop = np.where(has_cue, start + int(round(cue_duration / sim_dt)), -1)   # no cue: an empty interval
    V = torch.tensor(cue_amplitude * np.cos(th[None] - np.nan_to_num(cue_angle)[:, None]), dtype=torch.float32)
    start_t, stop_t = torch.as_tensor(start), torch.as_tensor(stop)

    def cue(i):  # (trials, n_ring): the cue on the trials where it is on at step i
        return V * ((start_t <= i) & (i < stop_t)).float()[:, None]

    out = ring.simulate(n_bins * dt, r0=torch.tensor(r0, dtype=torch.float32), M0=torch.ones(n_trials),
                        stimulus=cue, noise=noise, seed=int(rng.integers(2 ** 31)), record_every=steps_per_bin)
    r = out["rates"].numpy()                                                  # (trials, T, n_ring)
    phase = ring_phase(r, th)                                                 # (trials, T)
    idx = np.sort(rng.choice(n_ring, n_recorded, replace=False))
    hz = base_rate + rate_scale * r[..., idx]                                 # (trials, T, n_recorded)
    counts = rng.poisson(hz * dt).astype(np.float32)
    t_end = (np.arange(n_bins) + 1) * dt                                      # end of each bin (s)
    t_beg = t_end - dt
    on = (np.nan_to_num(cue_time, nan=np.inf)[:, None] < t_end) & \
         (np.nan_to_num(cue_time, nan=np.inf)[:, None] + cue_duration > t_beg)   # (trials, T) bins the cue overlaps
    arrays = dict(encod_data=counts, recon_data=counts, truth=hz.astype(np.float32),
                  latents=np.stack([np.cos(phase), np.sin(phase)], -1).astype(np.float32),
                  phase=phase.astype(np.float32), cue_time=cue_time.astype(np.float32),
                  cue_angle=cue_angle.astype(np.float32), inputs=on[..., None].astype(np.float32))
    data = _split_trials(arrays, n_trials, n_valid)
    data.update(neuron_angles=th[idx].astype(np.float32), neuron_index=idx.astype(np.int64),
                ring_params=np.array([J0, J1, I, tau, noise], np.float64),
                conversion_factor=np.float64(1.0 / dt), dt=np.float64(dt))
    return data


def make_bistable_trials(n_trials=500, n_valid=100, n_recorded=40, frac_exc=0.75, n_bins=50, dt=0.02,
                         J=((12.0, -4.0), (10.0, -2.0)), I=(-5.0, -6.0), tau=(0.05, 0.025), pulse_prob=0.5,
                         pulse_window=(0.3, 0.7), pulse_duration=0.05, pulse_amplitude=6.0, max_rate=30.0,
                         base_range=(2.0, 5.0), gain_range=(0.5, 1.5), sim_dt=1e-3, seed=0):
    """ Spikes from the bistable E/I network of notebook 06 (two all-to-all sigmoid populations,
    tau_A dr_A/dt = -r_A + sigmoid(sum_B J_AB r_B + I_A); low and high stable states and a saddle between them,
    circuits.ei_fixed_points). Each trial starts from a random state (r_E, r_I uniform in [0, 1]) and relaxes to
    one of the two states; on a fraction pulse_prob of the trials a pulse of pulse_amplitude on the E input, for
    pulse_duration s at a random time in pulse_window, pushes it to the high state. n_recorded neurons, the
    first round(frac_exc * n_recorded) excitatory: neuron n fires at base_n + gain_n * max_rate * r_pop(n) Hz
    (base_n, gain_n uniform in base_range, gain_range), Poisson counts in bins of dt s.
    Keys: {split}_encod_data / _recon_data, _truth (Hz), _latents (r_E, r_I) (trials, T, 2), _state (trials, T):
    1 where r_E is above the saddle's r_E, _pulse_time (s, nan without a pulse), _inputs (trials, T, 1): 1 in the
    bins the pulse overlaps; neuron_pop (0 = E, 1 = I), neuron_base, neuron_gain, max_rate, J, I, tau,
    fixed_points (K, 3): the circuit's fixed points [r_E, r_I, stable] from ei_fixed_points, dt, conversion_factor. """
    from .circuits import Circuit, CircuitConfig, ei_fixed_points
    _check_trials("make_bistable_trials", n_trials, n_valid, n_bins, dt)
    n_exc = int(round(frac_exc * n_recorded))
    if n_recorded < 2 or not 0 < n_exc < n_recorded:
        raise ValueError(f"make_bistable_trials: need excitatory and inhibitory neurons, got n_recorded={n_recorded}, "
                         f"frac_exc={frac_exc}")
    steps_per_bin = int(round(dt / sim_dt))
    if steps_per_bin < 1 or abs(steps_per_bin * sim_dt - dt) > 1e-9:
        raise ValueError(f"make_bistable_trials: dt={dt} must be a whole number of sim_dt={sim_dt} steps")
    fps = ei_fixed_points(J, I, "sigmoid", tau)
    if sum(s for *_, s in fps) != 2:
        raise ValueError(f"make_bistable_trials: J={J}, I={I} do not give two stable states (fixed points {fps})")
    rng = np.random.default_rng(seed)
    n_pop = 10                                                                # all-to-all: every neuron of a population is alike
    cfg = CircuitConfig(names=("E", "I"), sizes=(n_pop, n_pop), tau=tuple(tau), tau_syn=(0.0, 0.0),
                        transfer="sigmoid", threshold=(0.0, 0.0), J=J, J0=tuple(I), M0=1.0, conn="all",
                        K=(n_pop, n_pop), balanced=False, dt=sim_dt)
    net = Circuit(cfg, native=False)
    r0 = rng.uniform(0, 1, (n_trials, 2))
    has = rng.random(n_trials) < pulse_prob
    pulse_time = np.where(has, np.round(rng.uniform(*pulse_window, n_trials) / sim_dt) * sim_dt, np.nan)
    start_t = torch.as_tensor(np.where(has, np.round(np.nan_to_num(pulse_time) / sim_dt), -1).astype(np.int64))
    stop_t = torch.where(start_t >= 0, start_t + int(round(pulse_duration / sim_dt)), -1)   # no pulse: empty
    kick = torch.cat([torch.full((n_pop,), float(pulse_amplitude)), torch.zeros(n_pop)])   # (N,) onto E only

    def stim(i):
        return kick[None] * ((start_t <= i) & (i < stop_t)).float()[:, None]

    out = net.simulate(n_bins * dt, r0=torch.tensor(np.repeat(r0, n_pop, axis=1), dtype=torch.float32),
                       M0=torch.ones(n_trials), stimulus=stim, record_every=steps_per_bin)
    pop = out["pop_rates"].numpy().astype(np.float64)                         # (trials, T, 2)
    neuron_pop = (np.arange(n_recorded) >= n_exc).astype(np.int64)
    base = rng.uniform(*base_range, n_recorded)
    gain = rng.uniform(*gain_range, n_recorded)
    hz = base + gain * max_rate * pop[..., neuron_pop]                        # (trials, T, n_recorded)
    counts = rng.poisson(hz * dt).astype(np.float32)
    saddle = [f for f in fps if not f[2]][0]
    t_end = (np.arange(n_bins) + 1) * dt
    pt = np.nan_to_num(pulse_time, nan=np.inf)[:, None]
    on = (pt < t_end) & (pt + pulse_duration > t_end - dt)
    arrays = dict(encod_data=counts, recon_data=counts, truth=hz.astype(np.float32), latents=pop.astype(np.float32),
                  state=(pop[..., 0] > saddle[0]).astype(np.int8), pulse_time=pulse_time.astype(np.float32),
                  inputs=on[..., None].astype(np.float32))
    data = _split_trials(arrays, n_trials, n_valid)
    data.update(neuron_pop=neuron_pop, neuron_base=base.astype(np.float32), neuron_gain=gain.astype(np.float32),
                max_rate=np.float64(max_rate), J=np.asarray(J, np.float64), I=np.asarray(I, np.float64),
                tau=np.asarray(tau, np.float64), fixed_points=np.array([[a, b, s] for a, b, s in fps], np.float64),
                conversion_factor=np.float64(1.0 / dt), dt=np.float64(dt))
    return data


def bistable_readout(data, r_pop):
    """ the recorded neurons' rates (Hz) for population rates r_pop (..., 2) = (r_E, r_I) of a make_bistable_trials
    dataset: base_n + gain_n * max_rate * r_pop(n) -> (..., n_recorded) """
    r = np.asarray(r_pop, np.float64)
    return data["neuron_base"] + data["neuron_gain"] * float(data["max_rate"]) * r[..., np.asarray(data["neuron_pop"])]


# -----------------------------------------------------------------------------
# circular metrics (notebook 07): phases on a ring


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
