"""
Reading and writing datasets: HDF5 files in lfads-torch's layout (and the original LFADS layout), NWB recordings
binned into trials, trials cut from a continuous recording around events found in behaviour (reach onsets), the
checks that turn a bad file into one clear error, splits and held-out neurons, the shipped examples (and the one
derived from a real recording), and the tensors the models train on.

A dataset is a plain dict of numpy arrays whose keys follow lfads-torch's HDF5 layout, so that
`save_h5(path, data)` writes a file lfads-torch can read and `load_h5(path)` reads one it wrote:

    train_encod_data, valid_encod_data   (trials, T, N)  spike counts the encoders see
    train_recon_data, valid_recon_data   (trials, T', N') what is reconstructed (usually the same)
    train_truth, valid_truth             (trials, T, N)  true rates; truth / conversion_factor = counts per bin
    conversion_factor                    scalar
    train_latents, valid_latents         (trials, T, D)  true latent state (minilatent extra)
    train_inputs,  valid_inputs          (trials, T, I)  true input pulses (minilatent extra)
    train_cond_idx, valid_cond_idx       (trials,)       condition of each trial (minilatent extra)
    train_behavior, valid_behavior       (trials, T, D)  behaviour in the same bins, e.g. hand velocity (NLB)
    dt                                   scalar, bin width in seconds

Arrays are (trials, time, neurons) everywhere, float32 counts per bin (metrics.true_rates reads the truth in
those units). The original (TensorFlow) LFADS layout names the counts train_data / valid_data; load_h5 reads it
into the keys above. Held-out neurons follow lfads-torch and the Neural Latents Benchmark: recon_data holds the
encoders' neurons first, then the held-out ones.

References:
  Sedler & Pandarinath (2023) "lfads-torch: A modular and extensible implementation of latent factor analysis via
    dynamical systems": the HDF5 keys; the original LFADS code (Sussillo et al. 2016): train_data / valid_data
  Pei et al. (2021) "Neural Latents Benchmark '21: Evaluating latent dynamics models of neural population
    activity": the NWB files' tables, held-out neurons and splits
  Rübel et al. (2022) "The Neurodata Without Borders ecosystem for neurophysiological data science" (NWB, pynwb)
  Stevenson et al. (2011) "Statistical assessment of the stability of neural movement representations", J
    Neurophysiol 106:764; Benjamin et al. (2018) "Modern machine learning as a benchmark for fitting neural
    responses", Front Comput Neurosci 12:56 (the M1 reaching recording behind eg_data/m1_reaching.h5, published
    with KordingLab/spykesML under the MIT licence)
  Flash & Hogan (1985) "The coordination of arm movements" (the minimum-jerk reaches of the tests)
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
# checks: a bad array gets one error that names the key, the place and what was expected


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


# -----------------------------------------------------------------------------
# HDF5 files: lfads-torch layout (read and write) and original LFADS layout (read and write)


def load_h5(path, counts=True, nonnegative=True, valid_fraction=None, seed=0):
    """ Read a dataset from an HDF5 file in lfads-torch's layout or the original LFADS layout
    (train_data / valid_data), check it, and return the dict described in the module docstring.
    A file with truth but no conversion_factor keeps it that way: see truth_conversion for the units.
    counts=False accepts fractional values; nonnegative=False also negative ones (continuous data).
    valid_fraction: a file with training trials only gets a seeded validation split of that fraction (drawn within
    each condition when it has train_cond_idx); a file that has both splits refuses it. """
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
    if valid_fraction is not None:
        if "valid_encod_data" in data:
            raise ValueError(f"{path} has its own validation trials (valid_encod_data): a valid_fraction split "
                             "applies only to a file with training trials alone")
        if "train_encod_data" in data:
            data = split_off_valid(data, valid_fraction, seed)
    for split in ("train", "valid"):
        if f"{split}_encod_data" not in data:
            hint = "; a file with training trials alone can be split with valid_fraction" if split == "valid" else ""
            raise KeyError(f"{path}: missing key '{split}_encod_data' (or '{split}_data'); keys present: "
                           f"{sorted(raw)}{hint}")
        data.setdefault(f"{split}_recon_data", data[f"{split}_encod_data"])
    validate(data, counts=counts, nonnegative=nonnegative)
    for k, v in list(data.items()):
        if isinstance(v, np.ndarray) and v.dtype.kind in "biuf" and v.ndim == 3:
            data[k] = v.astype(np.float32)
    return data


def split_off_valid(data, valid_fraction, seed=0):
    """ A dataset with training trials only -> the same with a seeded validation split: every train_* array whose
    first dimension is the trials' is split (within conditions when train_cond_idx is present). """
    n = data["train_encod_data"].shape[0]
    cond = data.get("train_cond_idx")
    valid = split_trials(n, valid_fraction, seed, groups=np.asarray(cond) if cond is not None else None)
    if not valid.any() or valid.all():
        raise ValueError(f"valid_fraction {valid_fraction}: {n} training trials leave no trials for "
                         f"{'validation' if not valid.any() else 'training'}")
    out = {}
    for k, v in data.items():
        if k.startswith("train_") and np.ndim(v) >= 1 and np.shape(v)[0] == n:
            out[k], out["valid_" + k[6:]] = v[~valid], v[valid]
        else:
            out[k] = v
    out["valid_trial_idx"] = np.flatnonzero(valid)           # where the validation trials came from
    return out


def read_attrs(path):
    """ the HDF5 attributes of a file's root (its provenance: source, citation, licence, ...), as a plain dict """
    import h5py
    with h5py.File(os.fspath(path), "r") as f:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}


def save_h5(path, data, compression="gzip", attrs=None):
    """ Write a dataset dict to HDF5 atomically (temporary file, fsync, then rename). Spike-count arrays
    (`*_data`) holding whole numbers are stored as unsigned integers; arrays of more than a few kB are
    gzip-compressed (shuffle filter, chunks of whole trials so repeated trials compress). The file reads
    back with load_h5, h5py or lfads-torch; load_h5 returns counts as float32 again. attrs: a dict of strings or
    numbers written as the file's HDF5 attributes (provenance: source, citation, licence), in sorted order. """
    import h5py

    def write(tmp):
        with h5py.File(tmp, "w", track_order=True) as f:
            for k in sorted(attrs or {}):
                f.attrs[k] = attrs[k]
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


# -----------------------------------------------------------------------------
# the truth's units: what turns a file's truth into counts per bin


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


# -----------------------------------------------------------------------------
# held-out neurons, the Neural Latents Benchmark way (Pei et al. 2021): see metrics.regional_bits_per_spike


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
             heldout="auto", condition_column=None):
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
    heldout         'auto' (default): the units table's boolean `heldout` column picks the held-out units when
                    the file has one (the NLB files mark theirs), else every unit is held in. 'column': that
                    column, which must exist. An int K: a seeded random choice of K units (split_heldout), for
                    a file without the column; a file that marks its own held-out units refuses K (the two
                    sets would clash). None: every unit held in, the column ignored. Held-out units are left
                    out of encod_data and put last in recon_data.
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
    if isinstance(heldout, str) and heldout not in ("auto", "column"):
        raise ValueError(f"load_nwb: heldout must be 'auto', 'column', None or a number of units, got {heldout!r}")
    if heldout == "auto":
        heldout = None if held_col is None else "column"
    elif heldout is not None and not isinstance(heldout, str) and held_col is not None:
        raise ValueError(f"{path}: the units table marks {int(held_col.sum())} of {len(held_col)} units as held out "
                         f"(column 'heldout'), so a random choice of {heldout} held-out neurons (--heldout-neurons) "
                         f"is refused; leave it out to use the file's")
    if heldout is not None:
        if isinstance(heldout, str):
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


# -----------------------------------------------------------------------------
# trials from a continuous recording: events found in a behavioural signal, aligned windows cut around them.
# A continuous recording is (bins, units) counts with behaviour sampled in the same bins (e.g. hand velocity).


def _continuous(x, name, n_bins=None, counts=False):
    """ a (bins, channels) finite numeric array, or one ValueError naming `name` """
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected a numeric array, got dtype {x.dtype}")
    if x.ndim != 2 or 0 in x.shape:
        raise ValueError(f"{name}: expected a non-empty (bins, channels) array, got shape {x.shape}")
    if n_bins is not None and x.shape[0] != n_bins:
        raise ValueError(f"{name}: has {x.shape[0]} bins but the counts have {n_bins}; both must share the bins")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or infinite values (first at bin {np.argwhere(~np.isfinite(x))[0][0]}); "
                         f"interpolate or cut them first")
    if counts and ((x < 0).any() or (x != np.round(x)).any()):
        raise ValueError(f"{name}: spike counts must be whole numbers >= 0")
    return x


def _dt(dt):
    if isinstance(dt, bool) or not isinstance(dt, (int, float, np.integer, np.floating)) \
            or not (math.isfinite(dt) and 0 < dt < 10):
        raise ValueError(f"dt must be the bin width in seconds, a number in (0, 10), got {dt!r}")
    return float(dt)


def _fraction(v, name):
    if not (isinstance(v, (int, float, np.floating)) and 0 < v < 1):
        raise ValueError(f"{name} must be a fraction in (0, 1), got {v!r}")
    return float(v)


def reach_onsets(hand_vel, dt, hand_pos=None, onset_fraction=0.2, min_peak_fraction=0.4, min_peak=None,
                 rest_ms=150.0, rest_fraction=0.3, min_gap_ms=300.0, n_directions=8, centre_out=None, centre=None):
    """ Find reach onsets in a continuous hand path, and each reach's direction as a condition index.

    hand_vel  (bins, 2) hand velocity, or None to differentiate hand_pos (np.gradient)
    dt        bin width in seconds
    hand_pos  (bins, 2) hand position (needed for centre_out)

    The rule, in the order it is applied (speed = |hand_vel|):
      1. peaks: local maxima of speed at least `min_peak` (in the velocity's units per second; default
         min_peak_fraction x the session's 99th percentile of speed: reaches are the fastest movements of a
         reaching session, so that percentile is close to a typical reach's peak whenever the hand moves more
         than 1 % of the time), keeping the highest of any peaks closer than min_gap_ms;
      2. onset: walking back from the peak, the first bin of the run of bins whose speed is at least
         onset_fraction x that reach's peak speed; end: likewise walking forward (the last such bin);
      3. rest: the hand must have been still before the onset: speed below rest_fraction x the peak in each of
         the rest_ms before it (a reach that starts while the hand still moves, or too early in the recording,
         is left out);
      4. gap: an onset less than min_gap_ms after the previous kept onset, or inside the previous reach, is left out;
      5. centre-out (default: when hand_pos is given): only reaches that move away from the workspace centre
         (`centre`, default the median hand position, where a centre-out hand rests most) are kept: the end's
         distance from the centre must exceed the start's by at least half the reach's length (return
         movements, which go the other way, are left out).
    The direction is the angle of the displacement from onset to end (the integral of the velocity), in radians
    counter-clockwise from +x; cond_idx is the nearest of n_directions equal sectors, sector k centred on
    2 pi k / n_directions (k = 0 is +x), so centre-out targets at multiples of 45 degrees fall in the middle of
    the 8 sectors. Defaults were chosen for centre-out reaching sampled in 20-100 ms bins (M1 reaching
    datasets: movement ~0.5 s, peak ~3 bins after onset at 50 ms): at 50 ms the onset is known to one bin.

    Returns a dict of (reaches,) arrays: onset, peak, end (bin indices, int64), direction (rad), cond_idx (int64),
    peak_speed, amplitude (length of the displacement from onset to end, so without the slow tails). Raises a one-line ValueError for a bad shape, dt or
    parameter. """
    dt = _dt(dt)
    if hand_vel is None and hand_pos is None:
        raise ValueError("reach_onsets: give hand_vel or hand_pos")
    if hand_pos is not None:
        hand_pos = _continuous(hand_pos, "hand_pos")
    if hand_vel is None:
        if len(hand_pos) < 2:
            raise ValueError("hand_pos: needs at least 2 bins to find a velocity")
        hand_vel = np.gradient(hand_pos.astype(np.float64), dt, axis=0)
    vel = _continuous(hand_vel, "hand_vel", None if hand_pos is None else len(hand_pos)).astype(np.float64)
    if vel.shape[1] != 2 or (hand_pos is not None and hand_pos.shape[1] != 2):
        raise ValueError(f"reach_onsets: hand_vel and hand_pos must be (bins, 2) (x, y), got {vel.shape[1]} columns"
                         + ("" if hand_pos is None else f" and {hand_pos.shape[1]}"))
    onset_fraction = _fraction(onset_fraction, "onset_fraction")
    rest_fraction = _fraction(rest_fraction, "rest_fraction")
    min_peak_fraction = _fraction(min_peak_fraction, "min_peak_fraction")
    for v, name in ((rest_ms, "rest_ms"), (min_gap_ms, "min_gap_ms")):
        if not (isinstance(v, (int, float, np.integer, np.floating)) and 0 <= v < 1e7):
            raise ValueError(f"{name} must be a duration in milliseconds >= 0, got {v!r}")
    if isinstance(n_directions, bool) or not isinstance(n_directions, (int, np.integer)) or not 1 <= n_directions <= 360:
        raise ValueError(f"n_directions must be a whole number in [1, 360], got {n_directions!r}")
    if centre_out is None:
        centre_out = hand_pos is not None
    if centre_out and hand_pos is None:
        raise ValueError("reach_onsets: centre_out needs hand_pos (the centre is where the hand rests)")
    speed = np.hypot(vel[:, 0], vel[:, 1])
    if min_peak is None:
        min_peak = min_peak_fraction * float(np.percentile(speed, 99))
    if not (np.isfinite(min_peak) and min_peak > 0):
        raise ValueError(f"min_peak must be a speed > 0, got {min_peak} (is the hand still throughout?)")
    rest_bins, gap_bins = int(round(rest_ms / 1000 / dt)), int(round(min_gap_ms / 1000 / dt))
    # 1. peaks, highest first, none within the gap of a higher one
    cand = np.flatnonzero((speed[1:-1] >= speed[:-2]) & (speed[1:-1] >= speed[2:])) + 1
    cand = cand[speed[cand] >= min_peak]
    taken = np.zeros(len(speed), bool)
    for c in cand[np.argsort(-speed[cand], kind="stable")]:
        if not taken[max(0, c - gap_bins):c + gap_bins + 1].any():
            taken[c] = True
    if centre_out:
        c0 = np.median(hand_pos, axis=0) if centre is None else np.asarray(centre, np.float64).reshape(2)
    rows, last_onset, last_end = [], -10**12, -1
    for p in np.flatnonzero(taken):
        th = onset_fraction * speed[p]
        a = p
        while a > 0 and speed[a - 1] >= th:                      # 2. onset and end
            a -= 1
        e = p
        while e < len(speed) - 1 and speed[e + 1] >= th:
            e += 1
        if a < rest_bins or (rest_bins and speed[a - rest_bins:a].max() >= rest_fraction * speed[p]):
            continue                                             # 3. rest before the onset
        if a - last_onset < gap_bins or a <= last_end:
            continue                                             # 4. gap
        d = vel[a:e + 1].sum(0) * dt
        amp = float(np.hypot(d[0], d[1]))
        if centre_out:                                           # 5. away from the centre
            start = hand_pos[a - 1] if a > 0 else hand_pos[a]
            grow = np.hypot(*(hand_pos[e] - c0)) - np.hypot(*(start - c0))
            if not grow >= 0.5 * amp:
                continue
        rows.append((a, p, e, math.atan2(d[1], d[0]), speed[p], amp))
        last_onset, last_end = a, e
    r = np.array(rows, np.float64).reshape(-1, 6)
    direction = r[:, 3]
    sector = np.round(direction / (2 * np.pi / n_directions)).astype(np.int64) % n_directions
    return dict(onset=r[:, 0].astype(np.int64), peak=r[:, 1].astype(np.int64), end=r[:, 2].astype(np.int64),
                direction=direction, cond_idx=sector, peak_speed=r[:, 4], amplitude=r[:, 5])


def trials_from_continuous(counts, dt, onsets, window_ms, behaviour=None):
    """ Cut aligned trials out of a continuous recording.

    counts     (bins, units) spike counts in consecutive bins of dt seconds
    dt         bin width in seconds
    onsets     (trials,) bin index of each trial's event (e.g. reach_onsets(...)['onset'])
    window_ms  (start_ms, end_ms) around the event, as load_nwb's window: whole multiples of the bin width,
               start < end; bin 0 of the event is the bin that holds it, so (-250, 450) at 50 ms gives 14 bins,
               5 before the event's bin and 9 from it on
    behaviour  optional (bins, D) signal in the same bins (e.g. hand velocity), cut the same way
    Returns dict(counts (trials, T, units) float32, behaviour (trials, T, D) float32 when given, start (trials,)
    first bin of each window, window_ms). A window that does not lie inside the recording, an onset that is
    not a whole bin index, a window that is not a whole number of bins: one-line ValueError. """
    counts = _continuous(counts, "counts", counts=True)
    dt = _dt(dt)
    if behaviour is not None:
        behaviour = _continuous(behaviour, "behaviour", len(counts))
    on = np.asarray(onsets)
    if on.ndim != 1 or on.size == 0:
        raise ValueError(f"onsets: expected a non-empty 1-D array of bin indices, got shape {on.shape}")
    if on.dtype.kind not in "iu" and not (on.dtype.kind == "f" and np.all(on == np.round(on))):
        raise ValueError(f"onsets: expected whole bin indices, got dtype {on.dtype}")
    on = on.astype(np.int64)
    try:
        w0, w1 = (float(w) for w in window_ms)
    except (TypeError, ValueError):
        raise ValueError(f"window_ms must be (start_ms, end_ms), got {window_ms!r}") from None
    if not (math.isfinite(w0) and math.isfinite(w1) and w1 > w0):
        raise ValueError(f"window_ms must be (start_ms, end_ms) with end > start, got {window_ms!r}")
    bin_ms = dt * 1000.0
    b0, b1 = w0 / bin_ms, w1 / bin_ms
    if abs(b0 - round(b0)) > 1e-6 or abs(b1 - round(b1)) > 1e-6:
        raise ValueError(f"window_ms {tuple(window_ms)} is not a whole number of {bin_ms:g} ms bins on both ends")
    b0, b1 = int(round(b0)), int(round(b1))
    start = on + b0
    bad = np.flatnonzero((start < 0) | (on + b1 > len(counts)))
    if len(bad):
        i = bad[0]
        raise ValueError(f"the window ({w0:g}, {w1:g}) ms around onset bin {on[i]} (trial {i}) falls outside the recording "
                         f"(bins 0-{len(counts) - 1})" + (f", and {len(bad) - 1} more" if len(bad) > 1 else "")
                         + "; drop the trials near the ends")
    idx = start[:, None] + np.arange(b1 - b0)[None, :]
    out = dict(counts=counts[idx].astype(np.float32), start=start, window_ms=np.array([w0, w1]))
    if behaviour is not None:
        out["behaviour"] = behaviour[idx].astype(np.float32)
    return out


def split_trials(n_trials, valid_fraction=0.2, seed=0, groups=None):
    """ A seeded train/valid split: a boolean (n_trials,) mask, True = valid. With groups (e.g. condition
    indices), the fraction is drawn within each group (rounded; at least one valid trial per group of two or
    more), so every condition appears in both splits. """
    if not 0 < valid_fraction < 1:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    g = np.zeros(n_trials, np.int64) if groups is None else np.asarray(groups)
    if g.shape != (n_trials,):
        raise ValueError(f"groups: expected shape ({n_trials},), got {g.shape}")
    rng = np.random.default_rng(seed)
    valid = np.zeros(n_trials, bool)
    for v in np.unique(g):
        idx = np.flatnonzero(g == v)
        k = int(round(valid_fraction * len(idx)))
        k = min(max(k, 1 if len(idx) > 1 else 0), len(idx) - 1) if len(idx) > 1 else 0
        valid[rng.permutation(idx)[:k]] = True
    return valid


# -----------------------------------------------------------------------------
# what the command line reads: one reader for .h5 and .nwb files, and the shipped examples


def load_dataset(path, counts=True, nonnegative=True, bin_ms=None, align=None, window=None, heldout_neurons=None,
                 seed=0, valid_fraction=None):
    """ load_h5 for HDF5 files, load_nwb (bin_ms, align, window; split by the trials table's 'split' column when
    it has one, else by seed) for .nwb files; then, with heldout_neurons=K, hold out K neurons (split_heldout,
    seeded). An NWB file that marks its held-out units (units table column 'heldout') has them held out, and
    refuses heldout_neurons. The NWB options are refused for HDF5 files, which are binned already. """
    path = os.fspath(path)
    if path.lower().endswith(".nwb"):
        data = load_nwb(path, bin_ms=10.0 if bin_ms is None else bin_ms, align=align, window=window, seed=seed,
                        split_column=_nwb_split_column(path), heldout=heldout_neurons or "auto",
                        **({} if valid_fraction is None else {"valid_fraction": valid_fraction}))
        heldout_neurons = None                   # held out by load_nwb (the file's column, or K seeded)
    else:
        if align is not None or window is not None or bin_ms is not None:
            raise ValueError(f"{path}: bin_ms, align and window apply to NWB recordings only (an HDF5 dataset is "
                             "binned already: its dt says how)")
        data = load_h5(path, counts=counts, nonnegative=nonnegative, valid_fraction=valid_fraction, seed=seed)
    if heldout_neurons:
        data = split_heldout(data, heldout_neurons, seed=seed)
    return data


def eg_path(name):
    """ path of a shipped example file, e.g. eg_path('lorenz') -> .../eg_data/lorenz.h5 """
    p = os.path.join(EG_DATA, name if name.endswith(".h5") else f"{name}.h5")
    if not os.path.exists(p):
        have = sorted(f[:-3] for f in os.listdir(EG_DATA) if f.endswith(".h5")) if os.path.isdir(EG_DATA) else []
        raise FileNotFoundError(f"no example dataset {name!r} in {EG_DATA}; available: {have}")
    return p


# -----------------------------------------------------------------------------
# examples derived from real recordings: made from a raw file that is not shipped (see raw_data_dir)

M1_RAW = "m1_reaching_stevenson2011.h5"
RAW_ENV = "MINILATENT_RAW_DATA"


def raw_data_dir(raw=None):
    """ where the raw recordings are: `raw` when given, else $MINILATENT_RAW_DATA, else ../shared/data beside the
    checkout (the repository's parent folder); the first that is given is returned, existing or not """
    if raw is not None:
        return os.fspath(raw)
    if os.environ.get(RAW_ENV):
        return os.environ[RAW_ENV]
    return os.path.join(os.path.dirname(os.path.dirname(_HERE)), "shared", "data")


M1_RECIPE = dict(window_ms=(-250.0, 450.0), min_rate_hz=0.5, heldout_fraction=0.25, valid_fraction=0.2, seed=0)


def make_m1_reaching(raw=None):
    """ eg_data/m1_reaching.h5: trial-aligned centre-out reaches from the continuous M1 recording of Stevenson
    et al. (2011, J Neurophysiol 106:764), as published by Benjamin, Glaser et al. (2018, Front Comput Neurosci
    12:56; KordingLab/spykesML, MIT licence). Reach onsets and directions: reach_onsets with its defaults
    (8 sectors); windows of M1_RECIPE['window_ms'] around each onset (14 bins of 50 ms: 250 ms before, as M1
    leads movement by ~100-200 ms, to 450 ms after, through the peak speed and most of the deceleration); units
    with a session mean rate below min_rate_hz dropped; a seeded split stratified by direction; a seeded random
    quarter of the units held out (recon_data: held-in then held-out). Raises FileNotFoundError without the raw
    file. The file's HDF5 attributes carry the source, citation, licence and this recipe. """
    import h5py
    import hashlib
    path = os.path.join(raw_data_dir(raw), M1_RAW)
    if not os.path.exists(path):
        raise FileNotFoundError(f"raw recording {M1_RAW} not found in {os.path.dirname(path)} (give --raw FOLDER or "
                                f"set {RAW_ENV})")
    with h5py.File(path, "r") as f:
        spikes, vel, pos, time = (f[k][()] for k in ("spikes", "hand_vel", "hand_pos", "time"))
        raw_attrs = {k: str(v) for k, v in f.attrs.items()}
    with open(path, "rb") as fh:
        sha = hashlib.sha256(fh.read()).hexdigest()
    dt, rc = 0.05, M1_RECIPE
    if abs(float(raw_attrs.get("bin_s", dt)) - dt) > 1e-6:
        raise ValueError(f"{path}: bin_s is {raw_attrs['bin_s']}, expected {dt}")
    r = reach_onsets(vel, dt, hand_pos=pos)
    b0, b1 = int(round(rc["window_ms"][0] / 1000 / dt)), int(round(rc["window_ms"][1] / 1000 / dt))
    fits = (r["onset"] + b0 >= 0) & (r["onset"] + b1 <= len(spikes))
    onset, cond, angle = r["onset"][fits], r["cond_idx"][fits], r["direction"][fits]
    units = np.flatnonzero(spikes.mean(0) / dt >= rc["min_rate_hz"])
    t = trials_from_continuous(spikes[:, units], dt, onset, rc["window_ms"], behaviour=vel)
    valid = split_trials(len(onset), rc["valid_fraction"], seed=rc["seed"], groups=cond)
    data = {}
    for name, m in (("train", ~valid), ("valid", valid)):
        data[f"{name}_encod_data"] = data[f"{name}_recon_data"] = t["counts"][m]
        data[f"{name}_behavior"] = t["behaviour"][m]
        data[f"{name}_cond_idx"] = cond[m]
        data[f"{name}_reach_angle"] = angle[m]
        data[f"{name}_align_time"] = time[onset[m]]
    data = split_heldout(data, int(round(rc["heldout_fraction"] * len(units))), seed=rc["seed"])
    data.update(dt=np.float64(dt), conversion_factor=np.float64(1.0), unit_ids=units.astype(np.int64),
                cond_values=np.arange(8) * 45.0, window_ms=t["window_ms"])
    n_tr, n_va = int((~valid).sum()), int(valid.sum())
    data["attrs"] = {
        "source": raw_attrs.get("source", ""), "citation": raw_attrs.get("citation", ""),
        "licence": "MIT (KordingLab/spykesML, which published the recording); cite the papers in 'citation'",
        "raw_file": M1_RAW, "raw_sha256": sha,
        "description": (f"Macaque M1, centre-out reaches to 8 targets, trial-aligned: {n_tr} training and {n_va} "
                        f"validation trials of {b1 - b0} bins of 50 ms, {len(units)} units ({len(data['heldout_idx'])} "
                        f"held out: recon_data holds held-in then held-out units), behavior = hand velocity (m/s, x "
                        f"and y), cond_idx = reach direction sector k (centred on k * 45 degrees, counter-clockwise from "
                        f"+x), align_time = onset time (s) in the raw file, unit_ids = the units' columns in the raw file"),
        "derivation": (f"python -m minilatent make-eg-data (minilatent.datafiles.make_m1_reaching): reach onsets and "
                       f"directions by datafiles.reach_onsets with its defaults on hand_vel and hand_pos; windows "
                       f"{rc['window_ms'][0]:g} to {rc['window_ms'][1]:g} ms around each onset bin; units with a "
                       f"session mean rate below {rc['min_rate_hz']:g} Hz dropped; valid = a seeded "
                       f"{rc['valid_fraction']:g} of each direction's trials (split_trials, seed {rc['seed']}); "
                       f"held out = a seeded random {rc['heldout_fraction']:g} of the units (split_heldout, seed "
                       f"{rc['seed']})"),
    }
    return data


# -----------------------------------------------------------------------------
# torch helpers: the batches the models train on


def lfads_tensors(data, split, device="cpu"):
    """ (encod, recon[, ext_input]) float32 tensors of a split, the batch format LFADS trains on """
    t = [torch.as_tensor(np.asarray(data[f"{split}_encod_data"], dtype=np.float32), device=device),
         torch.as_tensor(np.asarray(data[f"{split}_recon_data"], dtype=np.float32), device=device)]
    if f"{split}_ext_input" in data:
        t.append(torch.as_tensor(np.asarray(data[f"{split}_ext_input"], dtype=np.float32), device=device))
    return tuple(t)


def sparks_tensors(data, split, device="cpu", target="latents"):
    """ (spikes, target) float32 tensors of a split for SPARKS: target 'latents' (supervised decoding) or
    None (unsupervised: spikes only, returned as a 1-tuple) """
    x = torch.as_tensor(np.asarray(data[f"{split}_encod_data"], dtype=np.float32), device=device)
    if target is None:
        return (x,)
    return x, torch.as_tensor(np.asarray(data[f"{split}_{target}"], dtype=np.float32), device=device)
