"""
One training run, shared by the command line (`train lfads`, `train sparks`) and the search (`tune lfads`):
read and check the inputs, build the model, train it inside a run folder, write the outputs.

    inputs  ->  read_lfads_inputs / read_sparks_inputs   every check on the data and the options, before DIR is touched
    model   ->  build_lfads / build_sparks               seeded, initialised from the data
    folder  ->  plan_folder, open_run                    the run-folder rules below (files.RunFolder has the mechanics)
    train   ->  run_training                             the generic Trainer, failures and signals in one line
    outputs ->  write_lfads_outputs / write_sparks_outputs, through the one atomic writer (files.py)

`train lfads` writes into DIR:
    checkpoint.pt        trainer checkpoint (model, optimiser, EMA, RNG states, the options; --resume)
    metrics.csv          one row per epoch
    loss.png, rates.png  loss curves; inferred (and true, when known) rates of a validation trial
    lfads_output.h5      lfads-torch's output layout: a copy of the input plus {train,valid}_output_params
                         (posterior-mean rates, counts per bin), _factors, _ic_mean, _ic_std, _gen_states,
                         _gen_init (and _co_means, _co_stds, _gen_inputs, _con_states with a controller).
                         Several DATA files are several sessions: one lfads_output_<name>.h5 per session.
    run.json             written last: the options, the budget and the results (numbers with names)
`train sparks` writes checkpoint.pt, metrics.csv, loss.png, decoding.png, sparks_output.h5 and run.json.

The run folder:
  - everything that can be wrong with the options and the data is checked before DIR is touched: exit 2
    and one line naming the problem
  - a DIR that holds a run is refused unless --overwrite (replace it) or --resume (continue it); a DIR in
    use by a live run is refused; a lock left by a killed run is taken over
  - a run that replaces or extends a finished run works in DIR/.staging and swaps its files in at the end:
    if it fails or is interrupted, DIR keeps the previous run untouched (never a mix of two runs)
  - --resume compares the options with those stored in the checkpoint: the model, the data, --seed, --lr
    and --batch-size must match; the budgets (--epochs, --max-seconds, totals counted from the start of the
    run) may change, and the learning-rate schedule then continues from where it stood (one line says so)
Exit codes: 0 done, 1 the run failed (NaN loss, disk full; one line says what is kept), 2 bad input,
130 interrupted by Ctrl-C, 143 by SIGTERM (one line says which epoch is saved and how to resume).

The command line owns its process, so a run asks for what the library never assumes (PROCESS_SETTINGS): one
torch thread, the fastest for these small recurrent models on few cores, for the whole run (training and the
posterior average), one BLAS thread for numpy (the baselines' many small solves: 2x-100x slower with two threads on a
busy machine), and glibc keeping freed memory for reuse while it trains.
"""

import hashlib
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import fields

from .files import RunFolder, RunFolderError, disk_full, write_csv, write_figure, write_json


class UsageError(Exception):
    """ a problem with the user's input: reported in one line, exit code 2 """


class RunFailed(Exception):
    """ the run could not finish (NaN loss, full disk): reported in one line, exit code 1 """


class Interrupted(KeyboardInterrupt):
    """ SIGTERM, raised in the main thread like Ctrl-C """


# -----------------------------------------------------------------------------
# the command line's choices

# LFADS defaults where they differ from LFADSConfig() and TrainerConfig(), chosen on the dataset suite
# (synthetic.SUITE, benchmarks/lfads_datasets.py): on the sparse Lorenz data (60 neurons at 1.8 Hz, 640 training
# trials, 300 s) a generator of 128 units, 40 factors, coordinated dropout 0.5, a peak learning rate of 3e-3 and
# batches of 64 took the rate R2 from 0.885 to 0.93. The dataclasses keep the smaller model that the lessons train
# in a minute and whose posterior average is 2-2.5x cheaper.
LFADS_CLI_DEFAULTS = {"gen_dim": 128, "fac_dim": 40, "cd_rate": 0.5}
# Few training trials are a different regime (a real recording: eg_data/m1_reaching.h5, 149 trials of 14 bins): the
# larger model overfits within a minute. Below SMALL_DATA_TRIALS training trials the regularisers in SMALL_DATA replace
# the defaults above, each only where its option was not given (docs/benchmarks.md: chosen on trials held out of the
# recording's training set, then checked on its validation trials and on lorenz_small, the suite's one such set).
SMALL_DATA_TRIALS = 300
SMALL_DATA = {"dropout": 0.3, "cd_rate": 0.3}
LFADS_CLI_LR = 3e-3
LFADS_BATCH = (16, 64)          # --batch-size default: a tenth of the training trials, within these bounds
SPARKS_CLI_BATCH = 5            # train sparks: 2x the optimiser steps per epoch of batch 10 (benchmarks/sparks_vs_reference.py)
SPARKS_CLI_LR = 3e-3
DEFAULT_EPOCHS = {"lfads": 200, "sparks": 30}   # --epochs when neither budget is given
PROCESS_SETTINGS = dict(num_threads=1, keep_freed_memory=True)   # asked of the Trainer (module docstring)
BUDGET_OPTIONS = ("epochs", "max_seconds", "samples", "truth_units")   # may change on --resume


def lfads_batch_size(n_train):
    """ the default batch for n_train training trials: about 10 optimiser steps per epoch, between 16 and 64 trials
    (larger batches cost less CPU time per trial; fewer than ~10 steps per epoch learn too slowly on small data) """
    lo, hi = LFADS_BATCH
    return int(min(hi, max(lo, n_train // 10)))


def lfads_data_defaults(n_train):
    """ the model options the command line chooses from the data: SMALL_DATA below SMALL_DATA_TRIALS training trials,
    else the defaults of LFADS_CLI_DEFAULTS and LFADSConfig """
    from .lfads import LFADSConfig
    base = {k: LFADS_CLI_DEFAULTS.get(k, getattr(LFADSConfig, k)) for k in SMALL_DATA}
    return dict(SMALL_DATA) if n_train < SMALL_DATA_TRIALS else base


def max_epochs(args, model):
    """ the Trainer's epoch limit: --epochs; none (the clock ends the run) with --max-seconds alone """
    if args.epochs is not None:
        return args.epochs
    return sys.maxsize if args.max_seconds else DEFAULT_EPOCHS[model]


def budget_text(args, model):
    parts = ([f"{max_epochs(args, model)} epochs"] if args.epochs or not args.max_seconds else []) \
        + ([f"{args.max_seconds:g} s"] if args.max_seconds else [])
    return " or ".join(parts)


def resolve_device(name):
    """ --device auto|cpu|cuda -> a torch device name; cuda without a GPU is a usage error """
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: torch sees no CUDA GPU here (torch.cuda.is_available() is False); "
                         "use --device cpu or auto")
    return name


def _config_options(args, cls):
    """ the options of args that are fields of the config dataclass cls (the model options) """
    return {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}


def first_line(e):
    msg = e.args[0] if getattr(e, "args", None) else str(e)
    return str(msg).strip().splitlines()[0] if str(msg).strip() else type(e).__name__


# -----------------------------------------------------------------------------
# LFADS: inputs, model


def read_lfads_inputs(args):
    """ Load and check every DATA file and the options that depend on the data; raises UsageError. """
    import numpy as np
    import torch
    from .datafiles import load_dataset, eg_path, lfads_tensors, truth_conversion, read_attrs
    from .lfads import LFADSConfig, LIKELIHOODS

    paths = args.data or [eg_path("lorenz")]
    nwb = [p for p in paths if p.lower().endswith(".nwb")]
    given = [f for f, v in (("--bin-ms", args.bin_ms), ("--align", args.align), ("--window", args.window)) if v is not None]
    if given and len(nwb) < len(paths):
        raise UsageError(f"--bin-ms, --align and --window apply to NWB recordings (.nwb), got {' '.join(given)}; "
                         "HDF5 data are binned already (their dt says how)")
    if args.heldout_neurons and len(paths) > 1:
        raise UsageError("--heldout-neurons needs a single DATA file (held-out neurons are one session's)")
    datasets, attrs = [], []
    for path in paths:
        if os.path.isdir(path):
            raise UsageError(f"{path} is a directory; give the data file itself (.h5 or .nwb)")
        try:
            datasets.append(load_dataset(path, counts=args.recon == "poisson", nonnegative=args.recon != "gaussian",
                                         bin_ms=args.bin_ms, align=args.align,
                                         window=tuple(args.window) if args.window else None,
                                         heldout_neurons=args.heldout_neurons, seed=args.seed,
                                         valid_fraction=args.valid_fraction))
            attrs.append({} if path.lower().endswith(".nwb") else read_attrs(path))
        except (KeyError, ValueError, TypeError, FileNotFoundError, ImportError) as e:
            msg = first_line(e).replace("a file with training trials alone can be split with valid_fraction",
                                        "a file with training trials alone can be split with --valid-fraction F")
            msg = msg.replace("valid_fraction split", "--valid-fraction split")
            if args.heldout_neurons and "n_heldout" in msg:
                msg = msg.replace("split_heldout: n_heldout", "--heldout-neurons")
            raise UsageError(msg if len(paths) == 1 else f"{path}: {msg}") from None
    names = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    if len(set(names)) < len(names):
        names = [f"{n}_{i}" for i, n in enumerate(names)]
    multi = len(datasets) > 1
    train = [lfads_tensors(d, "train") for d in datasets]
    valid = [lfads_tensors(d, "valid") for d in datasets]
    ext_dims = {t[2].shape[2] if len(t) == 3 else 0 for t in train}
    if len(ext_dims) > 1:
        raise UsageError(f"all sessions must have the same external inputs; ext_input dims: {sorted(ext_dims)}")
    T = min(t[0].shape[1] for t in train)
    if args.co_dim and args.ci_lag >= T:
        raise UsageError(f"--ci-lag must be < the {T} time bins of a trial, got {args.ci_lag}")
    lik = LIKELIHOODS[args.recon](LFADSConfig(recon=args.recon, zig_loc=args.zig_loc))
    truth = []
    for name, d in zip(names, datasets):
        where = f"{name}: " if multi else ""
        for split in ("train", "valid"):
            try:
                lik.check(torch.as_tensor(d[f"{split}_recon_data"]), f"{where}{split}_recon_data")
            except ValueError as e:
                raise UsageError(e.args[0]) from None
            if not np.any(d[f"{split}_recon_data"]):
                raise UsageError(f"{where}{split}_recon_data is all zeros: nothing to fit or to score")
        try:
            truth.append(truth_conversion(d, args.truth_units))
        except ValueError as e:
            raise UsageError(where + e.args[0]) from None
    n_train = min(t[0].shape[0] for t in train)      # options chosen from the data: the smallest session's trials
    chosen, flags = [], []
    if args.batch_size is None:
        args.batch_size = lfads_batch_size(n_train)
        chosen.append(f"batch size {args.batch_size}")
        flags.append("--batch-size")
    regime = lfads_data_defaults(n_train)
    unset = [k for k in regime if getattr(args, k, 0) is None]    # (tune lfads searches them: not in its args)
    for k in unset:
        setattr(args, k, regime[k])
    if unset and n_train < SMALL_DATA_TRIALS:
        chosen.append(", ".join(f"{k.replace('_', '-')} {regime[k]:g}" for k in unset)
                      + f" (fewer than {SMALL_DATA_TRIALS} training trials)")
        flags += ["--" + k.replace("_", "-") for k in unset]
    chosen = f"({n_train} training trials) {'; '.join(chosen)}; {', '.join(flags)} override" if chosen else None
    return dict(paths=paths, names=names, datasets=datasets, train=train, valid=valid, multi=multi,
                ext_dim=ext_dims.pop(), truth=truth, chosen=chosen, attrs=attrs, bins=[bin_width(d) for d in datasets])


DEFAULT_DT = 0.01     # seconds per bin assumed for a file without dt (only figures' time axes use it)


def bin_width(data):
    """ (seconds per bin, None) from the data's dt, or (DEFAULT_DT, a line saying it was assumed) """
    import numpy as np
    if "dt" in data:
        return float(np.asarray(data["dt"])), None
    return DEFAULT_DT, f"the file has no dt: bins of {DEFAULT_DT * 1000:g} ms assumed (figures' time axes only)"


def describe_data(path, train, valid, bins):
    """ the start-up lines of one session: shapes, bin width, neurons and how many are held out """
    dt, note = bins
    n_in, n_out = train[0].shape[2], train[1].shape[2]
    held = f"{n_out} neurons, {n_out - n_in} held out (predicted from the other {n_in}, never encoded)" \
        if n_out > n_in else f"{n_in} neurons, none held out"
    return (f"data: {path}\n  train {tuple(train[0].shape)}, valid {tuple(valid[0].shape)} (trials, bins, neurons "
            f"encoded); bins of {dt * 1000:g} ms; {held}" + (f"\n  {note}" if note else ""))


def lfads_options(args):
    """ the options a resumed run must share with the checkpoint's (plus the budgets, which may differ) """
    from .lfads import LFADSConfig
    keep = ["ramp_epochs", "read_in_dim", "seed", "batch_size", "lr", "epochs", "max_seconds", "samples",
            "truth_units", "heldout_neurons", "bin_ms", "align", "window", "valid_fraction"]
    return {**_config_options(args, LFADSConfig), **{k: getattr(args, k) for k in keep}}


def build_lfads(args, inp):
    """ The model for the inputs (initialised, seeded); raises UsageError for options the data cannot take.
    Returns (model, a line on how the read-in/out started or ''). """
    import torch
    from .lfads import LFADS, LFADSConfig, check_sessions

    kw = _config_options(args, LFADSConfig)
    kw.pop("read_in_dim", None)                       # several sessions only (below)
    kw.update(ext_input_dim=inp["ext_dim"], kl_ramp_epochs=args.ramp_epochs, l2_ramp_epochs=args.ramp_epochs)
    train, names = inp["train"], inp["names"]
    try:
        if inp["multi"]:
            neurons = check_sessions(train, names)
            for name, t in zip(names, train):
                if t[1].shape[2] != t[0].shape[2]:
                    raise ValueError(f"{name}: held-out channels (recon_data wider than encod_data) need a single session")
            cfg = LFADSConfig(n_neurons=neurons[0], session_neurons=neurons,
                              read_in_dim=args.read_in_dim or args.fac_dim, **kw)
        else:
            n_neurons, n_recon = train[0][0].shape[2], train[0][1].shape[2]
            cfg = LFADSConfig(n_neurons=n_neurons, n_recon=n_recon if n_recon != n_neurons else 0, **kw)
    except ValueError as e:
        raise UsageError(e.args[0]) from None
    torch.manual_seed(args.seed)
    model = LFADS(cfg)
    init, note = lfads_initialiser(inp)
    init(model)
    return model, note


def lfads_initialiser(inp):
    """ (init(model), note): what a fresh model does before training — the read-out bias at each session's mean
    rates and, for several sessions with shared condition labels, read-in/out by PCR on the condition averages.
    The search calls init on every new population member. """
    import numpy as np
    from .metrics import psths
    datasets, train, multi = inp["datasets"], inp["train"], inp["multi"]
    conds = [set(np.unique(d["train_cond_idx"]).tolist()) if "train_cond_idx" in d else None for d in datasets]
    pcr = multi and all(c is not None and c == conds[0] for c in conds)
    mats = [psths(d, "train") for d in datasets] if pcr else None
    note = "" if not multi else ("read-in/out initialised by PCR on the condition averages" if pcr
                                 else "no shared condition labels (train_cond_idx): read-in/out start at random")

    def init(model):
        if pcr:
            model.init_pcr(mats)
        for s, t in enumerate(train):
            model.init_readout_bias(t[1], session=s if multi else None)
    return init, note


# -----------------------------------------------------------------------------
# SPARKS: inputs, model


def read_sparks_inputs(args):
    """ Load and check DATA (binary spikes, an optional target) and the options that depend on it. """
    import numpy as np
    import torch
    from .datafiles import load_h5, eg_path
    path = args.data or eg_path("rotation")
    if os.path.isdir(path):
        raise UsageError(f"{path} is a directory; give the data file itself (.h5)")
    try:
        data = load_h5(path)
    except (KeyError, ValueError, FileNotFoundError) as e:
        raise UsageError(first_line(e)) from None
    binarised = None
    for split in ("train", "valid"):
        x = data[f"{split}_encod_data"]
        if x.max() > 1 and not args.binarize:
            raise UsageError(f"{split}_encod_data: SPARKS (ephys) needs binary spikes (0/1 per bin), found counts up "
                             f"to {x.max():g}; use finer bins, or --binarize (a bin with spikes counts as one spike)")
    if args.binarize:                   # the Hebbian rule sees whether a neuron spiked in a bin, not how often
        n = sum(float(data[f"{s}_encod_data"].sum()) for s in ("train", "valid"))
        lost = sum(float(np.maximum(data[f"{s}_encod_data"] - 1, 0).sum()) for s in ("train", "valid"))
        binarised = lost / max(n, 1.0)
        for split in ("train", "valid"):
            data[f"{split}_encod_data"] = np.minimum(data[f"{split}_encod_data"], 1).astype(np.float32)
    target = args.target if args.target is not None else ("latents" if "train_latents" in data else "none")
    supervised = target != "none"
    if supervised:
        for split in ("train", "valid"):
            k = f"{split}_{target}"
            if k not in data:
                raise UsageError(f"--target {target}: missing key {k!r}; keys present: {sorted(data)}")
            y, x = np.asarray(data[k]), data[f"{split}_encod_data"]
            if y.dtype.kind not in "biuf" or y.ndim < 2 or y.shape[:2] != x.shape[:2]:
                raise UsageError(f"{k}: expected shape (trials, time, ...) = {x.shape[:2]} + (...), got {y.shape}")
            if not np.isfinite(y).all():
                raise UsageError(f"{k}: contains NaN or infinite values")
    T = data["train_encod_data"].shape[1]
    if args.tau_p > T:
        raise UsageError(f"--tau-p must be <= the {T} time bins of a trial, got {args.tau_p}")

    def tensors(split):
        x = torch.as_tensor(np.asarray(data[f"{split}_encod_data"], np.float32))
        if not supervised:
            return (x,)
        y = np.asarray(data[f"{split}_{target}"], np.float32)
        return x, torch.as_tensor(y.reshape(y.shape[0], y.shape[1], -1))
    return dict(path=path, data=data, target=target, supervised=supervised, train=tensors("train"),
                valid=tensors("valid"), dt=bin_width(data)[0], binarised=binarised)


def sparks_options(args):
    from .sparks import SPARKSConfig
    keep = ["online", "target", "seed", "batch_size", "lr", "epochs", "max_seconds", "binarize"]
    return {**_config_options(args, SPARKSConfig), **{k: getattr(args, k) for k in keep}}


def build_sparks(args, inp):
    import torch
    from .sparks import SPARKS, SPARKSConfig
    train, supervised = inp["train"], inp["supervised"]
    try:
        cfg = SPARKSConfig(n_neurons=train[0].shape[2], n_outputs=train[1].shape[2] if supervised else None,
                           dt=inp["dt"], **_config_options(args, SPARKSConfig))
    except (ValueError, TypeError) as e:
        raise UsageError(e.args[0]) from None
    torch.manual_seed(args.seed)
    return SPARKS(cfg)


# -----------------------------------------------------------------------------
# the run folder: the rules (module docstring), resume checks


def fingerprint(arrays):
    """ a short hash of the data arrays a run trains on (to refuse resuming on other data) """
    import numpy as np
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a, np.float32))
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def plan_folder(args, folder=None, staged_resume=True):
    """ Apply the run-folder rules without writing anything; returns (RunFolder, staged). staged_resume: a resumed
    run of a finished DIR works in DIR/.staging (a training run); False: it continues in DIR (a search's Ray state). """
    folder = folder or RunFolder(args.out)
    try:
        folder.check_path()
    except RunFolderError as e:
        raise UsageError(str(e)) from None
    pid = folder.active_pid()
    if pid is not None:
        raise UsageError(f"--out {args.out} is in use by another run (process {pid}); wait for it to end or choose "
                         "another folder")
    previous = folder.previous_run()
    state = folder.final(folder.state[0])
    if args.resume:
        if not os.path.exists(state):
            raise UsageError(f"--resume: no checkpoint at {state}" if state.endswith(".pt") else
                             f"--resume: no search to continue in {args.out} (no {state})")
        return folder, staged_resume and folder.finished()
    if previous and args.overwrite:
        return folder, True
    if previous:
        what = "a finished run" if folder.finished() else "an unfinished run"
        raise UsageError(f"--out {args.out} already holds {what} ({', '.join(previous)}); add --resume to continue "
                         "it or --overwrite to replace it")
    return folder, False


def option_diffs(old, new, free=BUDGET_OPTIONS, where="checkpoint"):
    """ '--option value (where: stored value)' for each option outside `free` that differs """
    return [f"--{k.replace('_', '-')} {new.get(k)} ({where}: {old.get(k)})"
            for k in sorted(set(old) | set(new)) if k not in free and old.get(k) != new.get(k)]


def read_checkpoint_for_resume(folder, command, options, data_hash):
    """ The stored options of DIR/checkpoint.pt, checked against this run's: one line naming every difference. """
    import torch
    path = folder.final("checkpoint.pt")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        extra = ck.get("extra") or {}
        if not isinstance(ck, dict) or "model" not in ck:
            raise ValueError("not a minilatent checkpoint")
    except Exception as e:  # truncated, corrupt, another program's file: say so in one line
        raise UsageError(f"--resume: {path} cannot be read (truncated or corrupt?): {first_line(e)[:120]}") from None
    if extra.get("command") not in (None, command):
        raise UsageError(f"--resume: {path} is from 'train {extra['command']}', not 'train {command}'")
    old = extra.get("options")
    if old is None:
        raise UsageError(f"--resume: {path} stores no options (written by another version); start again with --overwrite")
    diffs = option_diffs(old, options)
    if extra.get("data") != data_hash:
        diffs.insert(0, "the data differ from those the checkpoint was trained on")
    if diffs:
        raise UsageError(f"--resume: options differ from the checkpointed run: {'; '.join(diffs)}; use the run's "
                         "options, or start again with --overwrite")
    changed = [f"--{k.replace('_', '-')} {old.get(k)} -> {options.get(k)}" for k in ("epochs", "max_seconds")
               if old.get(k) != options.get(k)]
    if changed:
        print(f"--resume: the budget changed ({', '.join(changed)}): the learning-rate schedule continues from where "
              "it stood and reaches its final value at the new budget")
    return ck


def open_run(args, folder, staged, trainer, command, options, arrays):
    """ the last checks of a training run (a resumed run must match its checkpoint; the trainer checks the data),
    then take the folder (lock, staging) and load the checkpoint to resume from """
    data_hash = fingerprint(arrays)
    ck = read_checkpoint_for_resume(folder, command, options, data_hash) if args.resume else None
    kept_by = (ck or {}).get("trainer_cfg", {}).get("monitor", "loss")
    if ck is not None and kept_by != trainer.cfg.monitor:   # a run from before held-out neurons stopped choosing the epoch
        raise UsageError(f"--resume: {folder.final('checkpoint.pt')} chose its epoch by the validation {kept_by}, this "
                         f"version by {trainer.cfg.monitor}; start again with --overwrite")
    try:
        trainer.check_data()
    except ValueError as e:
        raise UsageError(e.args[0]) from None
    try:
        folder.open(staged)
    except RunFolderError as e:
        raise UsageError(str(e)) from None
    try:
        if ck is not None:
            trainer.load_checkpoint(folder.final("checkpoint.pt"))
            print(f"resumed from {folder.final('checkpoint.pt')} at epoch {trainer.epoch}")
        trainer.extra_state = {"command": command, "options": options, "data": data_hash}
    except BaseException:
        folder.release()
        raise
    if staged:
        print(f"{args.out} holds a previous run: this one works in {folder.work} and replaces it when it has finished")


# -----------------------------------------------------------------------------
# training: progress lines, failures and signals in one line


def kept_epoch(history, monitor="loss"):
    """ (epoch, value) of the lowest validation `monitor`: the weights the trainer keeps (restore_best), or None """
    best = None
    for r in history.rows:
        v = r.get(f"valid_{monitor}")
        if v is not None and math.isfinite(v) and (best is None or v < best[1]):
            best = (r["epoch"], v)
    return best


def run_training(args, folder, staged, trainer, extra, write_outputs, loss_name):
    """ Take the folder, train (a line per epoch), write the outputs, finish the folder. Failures and signals end
    in one line (module docstring); the lock is always released. loss_name: the unit of the printed losses. """
    ck = folder.file("checkpoint.pt")
    trainer.cfg.checkpoint_path = ck
    seen = {"signal": None}
    previous = {}

    def on_signal(signum, frame):
        seen["signal"] = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
        raise Interrupted()
    stage = "training"
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                previous[sig] = signal.signal(sig, on_signal)
            except ValueError:       # not the main thread: no handlers
                pass
        key = "recon_heldin" if trainer.cfg.monitor == "recon_heldin" else "recon"
        print(f"each epoch: the mean {loss_name} of the training batches, then of the validation trials"
              + (" (held-in neurons: what chooses the epoch to keep)" if key == "recon_heldin" else ""))

        def report(tr):
            r = tr.history.rows[-1]
            part = f"  (partial: {r['batches']} of {r['batches_per_epoch']} batches)" \
                if r["batches"] < r["batches_per_epoch"] else ""
            print(f"epoch {r['epoch']:4d}  {r['seconds']:7.1f} s  train {r['train_recon']:.5f}  "
                  f"valid {r.get('valid_' + key, float('nan')):.5f}  {extra(r)}{part}", flush=True)
        trainer.add_callback("on_epoch_end", report)
        t0 = time.perf_counter()
        history = trainer.fit()
        print(f"stopped after {trainer.epoch} epochs ({trainer.stop_reason}) in {time.perf_counter() - t0:.1f} s")
        best = kept_epoch(history, trainer.cfg.monitor)
        if trainer.cfg.restore_best and best is not None and best[0] != trainer.epoch:
            what = {"loss": "total loss (reconstruction plus the weighted KL and L2 terms)",
                    "recon_heldin": "reconstruction of the held-in neurons (the held-out neurons, which co-bps "
                                    "scores, play no part in the choice)"}.get(trainer.cfg.monitor, trainer.cfg.monitor)
            print(f"kept the weights of epoch {best[0]} (of {trainer.epoch}): the lowest validation {what}, {best[1]:.5f}")
        if trainer.stop_reason == "time budget":
            print(f"with --max-seconds the learning rate followed the clock; a clock-free run of the same length: "
                  f"--epochs {trainer.epoch}")
        if not os.path.exists(ck):      # a resumed run that had nothing left to train: carry its checkpoint over
            shutil.copy2(folder.final("checkpoint.pt"), ck)
        stage = "writing outputs"
        write_csv(folder.file("metrics.csv"), history.rows)
        summary = write_outputs(history)
        summary.update(epochs_trained=trainer.epoch, stop_reason=trainer.stop_reason,
                       seconds=round(trainer.elapsed, 2), kept_epoch=best[0] if best and trainer.cfg.restore_best
                       else trainer.epoch, finished=True)
        folder.finish(summary)
        return 0
    except FloatingPointError as e:
        saved = trainer.saved_epoch
        raise RunFailed(f"training failed: {e}; likely cause: a learning rate too high for these data (--lr {args.lr:g}) "
                        f"or extreme values in the data; try --lr {args.lr / 3:.3g} with --overwrite. "
                        + _kept(folder, staged, saved) + "; no outputs written") from None
    except (KeyboardInterrupt, OSError) as e:
        saved = trainer.saved_epoch
        if isinstance(e, OSError) and not seen["signal"]:   # (a signal inside torch.save surfaces as an I/O error)
            what = os.strerror(e.errno) if e.errno else str(e)
            where = f" {e.filename}" if getattr(e, "filename", None) else ""
            hint = " (disk full: free some space)" if disk_full(e) else ""
            raise RunFailed(f"could not write{where} while {stage}: {what}{hint}; " + _kept(folder, staged, saved)) from None
        name = seen["signal"] or "Ctrl-C"
        if stage == "writing outputs" and not staged:
            msg = (f"interrupted ({name}) while writing the outputs: training is complete ({_kept(folder, staged, saved)}); "
                   "rerun the same command with --resume to write them")
        else:
            msg = f"interrupted ({name}) after {trainer.epoch} complete epochs: " + _kept(folder, staged, saved)
            if not staged and saved is not None:
                msg += "; continue with the same command plus --resume"
        print(f"error: {msg}", file=sys.stderr)
        return 143 if name == "SIGTERM" else 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        folder.release()


def _kept(folder, staged, saved):
    """ one clause: what the folder still holds after a failed or interrupted run """
    if staged:
        return (f"{folder.path} still holds the previous run, untouched"
                + (f" (this run's checkpoint of epoch {saved} is in {folder.work})" if saved is not None else ""))
    if saved is None:
        return "no checkpoint was saved"
    return f"{folder.final('checkpoint.pt')} holds epoch {saved}"


def trainer_config(args, model_name, **kw):
    from .trainer import TrainerConfig
    return TrainerConfig(max_epochs=max_epochs(args, model_name), max_seconds=args.max_seconds, seed=args.seed,
                         device=resolve_device(args.device), batch_size=args.batch_size, lr=args.lr, progress=False,
                         **PROCESS_SETTINGS, **kw)


# -----------------------------------------------------------------------------
# figures


def plot_losses(ax, history, keys, ylabel):
    """ losses per epoch; an epoch the clock cut short is drawn at its fraction and marked (its average covers
    fewer batches), so the curve shows no false dip at the end """
    import numpy as np
    rows = history.rows
    x = np.array([r["epoch"] - 1 + r.get("batches", 1) / max(r.get("batches_per_epoch", 1), 1) for r in rows])
    partial = np.array([r.get("batches", 1) < r.get("batches_per_epoch", 1) for r in rows])
    for i, k in enumerate(keys):
        y = history.column(k)
        ok = ~np.isnan(y)
        if not ok.any():
            continue
        full = ok & ~partial
        ax.plot(x[full], y[full], color=f"C{i}", label=k)
        if (ok & partial).any():
            ax.plot(x[ok & partial], y[ok & partial], "o", mfc="none", color=f"C{i}",
                    label=f"{k} (partial epoch)")
    ax.set_xlabel("epoch"); ax.set_ylabel(ylabel); ax.legend(fontsize=8)


def _figure_backend():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_lfads_figures(file, history, rates_valid, data, truth_valid, recon, dt):
    plt = _figure_backend()
    import numpy as np
    from .widgets import plot_counts_rates
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    plot_losses(ax[0], history, ("train_recon", "valid_recon", "valid_recon_heldin"), f"{recon} NLL per entry")
    kl = [k for k in ("train_kl_ic", "train_kl_co") if not np.all(np.isnan(history.column(k)))]
    plot_losses(ax[1], history, kl, "KL (nats)")
    fig.tight_layout()
    write_figure(fig, file("loss.png"))
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    n_heldin = data["valid_encod_data"].shape[2]
    plot_counts_rates(data["valid_recon_data"][0], rates_valid[0], dt, n_heldin=n_heldin,
                      truth=truth_valid[0] if truth_valid is not None else None, ax=ax,
                      title="validation trial 0: spike counts (bars), inferred rates (lines)"
                      + (", true rates (dashed)" if truth_valid is not None else "")
                      + ("; red: held-out neurons" if data["valid_recon_data"].shape[2] > n_heldin else ""))
    fig.tight_layout()
    write_figure(fig, file("rates.png"))
    plt.close(fig)


def save_sparks_figures(file, history, pred_valid, valid, supervised, dt, loss_kind):
    plt = _figure_backend()
    import numpy as np
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = {"mse": "squared error", "bernoulli": "Bernoulli NLL", "poisson": "Poisson NLL"}
    plot_losses(ax, history, ("train_recon", "valid_recon"), f"{names.get(loss_kind, loss_kind)} per bin")
    fig.tight_layout()
    write_figure(fig, file("loss.png"))
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    tt = np.arange(pred_valid.shape[1]) * dt
    if supervised:
        y = valid[1][0].numpy()
        for d in range(min(y.shape[1], 4)):
            ax.plot(tt, y[:, d], color=f"C{d}", lw=2, alpha=0.4, label=f"target {d}")
            ax.plot(tt, pred_valid[0, :, d], color=f"C{d}", lw=1, label=f"decoded {d}")
        ax.set_title("validation trial 0: target (thick) and decoded (thin)")
        ax.legend(fontsize=7, ncol=4)
    else:
        ax.imshow(pred_valid[0].T, aspect="auto", origin="lower", extent=(0, tt[-1] + dt, 0, pred_valid.shape[2]))
        ax.set_title("validation trial 0: predicted spike probabilities"); ax.set_ylabel("neuron")
    ax.set_xlabel("time (s)")
    fig.tight_layout()
    write_figure(fig, file("decoding.png"))
    plt.close(fig)


# -----------------------------------------------------------------------------
# outputs


def write_lfads_outputs(args, file, inp, model, history):
    """ Posterior sample-and-average, lfads-torch's output layout (one file per session), figures; returns the
    run's summary with its results as numbers. file(name) -> the path to write `name` to. """
    import numpy as np
    from .datafiles import save_h5
    from .metrics import rate_r2, bits_per_spike, pulse_timing_accuracy, heldout_figures
    cfg, multi = model.cfg, inp["multi"]
    written, lines, results_out, first = [], [], {}, None
    for s, (name, data) in enumerate(zip(inp["names"], inp["datasets"])):
        out = dict(data)
        results = model_results = {}
        for split, tensors in (("train", inp["train"][s]), ("valid", inp["valid"][s])):
            t0 = time.perf_counter()
            print(f"posterior average{' of ' + name if multi else ''}, {split}: {tensors[0].shape[0]} trials x "
                  f"{args.samples} samples ...", end="", flush=True)
            ext = tensors[2] if len(tensors) == 3 else None
            res = model.posterior_average(tensors[0], ext_input=ext, n_samples=args.samples,
                                          n_steps=tensors[1].shape[1], session=s if multi else None)
            print(f" {time.perf_counter() - t0:.1f} s", flush=True)
            results[split] = res
            for k, v in res.items():
                out[f"{split}_{k}"] = v.astype(np.float32)
        factor, note = inp["truth"][s]
        if factor is not None:
            out["conversion_factor"] = np.float64(factor)       # the units used, stated in the output
        fname = f"lfads_output_{name}.h5" if multi else "lfads_output.h5"
        print(f"writing {fname} ...", flush=True)
        attrs = {**inp["attrs"][s], "minilatent_input": os.path.abspath(inp["paths"][s]),
                 "minilatent_bin_s": inp["bins"][s][0]}
        save_h5(file(fname), out, attrs=attrs)                  # the input's attributes (provenance) carried over
        written.append(fname)
        rates = results["valid"]["output_params"]
        truth_valid = data["valid_truth"] / factor if factor is not None and "valid_truth" in data else None
        if first is None:
            first = (rates, data, truth_valid)
        scores = {}
        nlb = heldout_figures(rates, data) if cfg.recon == "poisson" else {}
        if nlb:   # held-out neurons / forward bins: NLB's figures; bits/spike of the held-in neurons is in-sample
            scores["valid_bps_heldin"] = nlb["bps"]
            scores.update({k: nlb[k] for k in ("co_bps", "fp_bps") if k in nlb})
        elif cfg.recon == "poisson":
            scores["valid_bps"] = bits_per_spike(rates, data["valid_recon_data"])
        else:
            scores[f"valid_{cfg.recon}_nll"] = history.rows[-1].get("valid_recon", float("nan"))
        if truth_valid is not None:
            scores["valid_rate_r2"] = rate_r2(rates, truth_valid)
        if cfg.co_dim and "valid_inputs" in data:
            scores["pulse_timing_accuracy"], scores["pulse_timing_chance"] = pulse_timing_accuracy(
                results["valid"]["co_means"], data["valid_inputs"])
        scores = {k: round(float(v), 6) for k, v in scores.items()}
        results_out[name] = scores
        lines.append((f"{name}: " if multi else "") + _score_line(scores, truth_valid is None and "valid_truth" in data
                                                                  and note.split(";")[0]))
    evaluation = None
    if not multi and cfg.recon == "poisson" and first[1]["valid_recon_data"].shape[2] > first[1]["valid_encod_data"].shape[2]:
        evaluation = evaluate_heldout(file, inp, model_results)
    if any(d["valid_recon_data"].shape[2] > d["valid_encod_data"].shape[2] for d in inp["datasets"]):
        lines.append("held-in bits/spike is in-sample (the encoders saw those spikes); co-bps scores neurons the "
                     "encoders never saw. Output neuron order: held-in then held-out columns of recon_data"
                     + (" (heldin_idx, heldout_idx in lfads_output.h5 map them to the input's columns)"
                        if "heldin_idx" in inp["datasets"][0] else ""))
    print("writing metrics.csv, loss.png, rates.png ...", flush=True)
    save_lfads_figures(file, history, first[0], first[1], first[2], cfg.recon, inp["bins"][0][0])
    print(f"wrote {args.out}/{', '.join(written)}, metrics.csv, loss.png, rates.png, checkpoint.pt, run.json")
    for line in lines:
        print(line)
    if evaluation is not None:
        from .metrics import evaluation_lines
        for line in evaluation_lines(evaluation):
            print(line)
    return {"command": "train lfads", "options": lfads_options(args), "data": inp["paths"],
            **({"evaluation": "metrics.json"} if evaluation is not None else {}),
            "bin_s": [b[0] for b in inp["bins"]] if multi else inp["bins"][0][0],
            **({"bin_note": inp["bins"][0][1]} if inp["bins"][0][1] else {}),
            "budget": {"epochs": args.epochs, "max_seconds": args.max_seconds},
            "results": results_out if multi else results_out[inp["names"][0]]}


def evaluate_heldout(file, inp, results):
    """ the Neural Latents Benchmark's evaluation of the run (metrics.nlb_evaluation: co-bps, fp-bps, the smoothing
    and PSTH baselines, PSTH R^2, velocity decoding from the factors and from smoothed spikes, whichever the file
    allows), written to metrics.json; the baselines are fit and chosen on the training trials only """
    from .metrics import nlb_evaluation
    data = dict(inp["datasets"][0])
    data.setdefault("dt", inp["bins"][0][0])
    t0 = time.perf_counter()
    print("evaluating on held-out neurons (baselines fit and cross-validated on the training trials) ...", end="",
          flush=True)
    ev = nlb_evaluation(data, results["valid"]["output_params"], train_factors=results["train"]["factors"],
                        valid_factors=results["valid"]["factors"])
    print(f" {time.perf_counter() - t0:.1f} s", flush=True)
    write_json(file("metrics.json"), ev)
    return ev


_SCORE_NAMES = {"valid_bps": "valid bits/spike", "valid_bps_heldin": "valid bits/spike (held-in neurons)",
                "co_bps": "co-bps", "fp_bps": "fp-bps", "valid_rate_r2": "valid rate R2",
                "pulse_timing_accuracy": "pulse timing accuracy", "pulse_timing_chance": "chance",
                "valid_decoding_r2": "valid decoding R2"}


def _score_line(scores, note=None):
    parts = []
    for k, v in scores.items():
        label = _SCORE_NAMES.get(k, k.replace("_", " "))
        parts.append(f"({label} {v:.3f})" if k == "pulse_timing_chance" else f"{label} {v:.4f}")
    return "  ".join(parts) + (f"  ({note})" if note else "")


def write_sparks_outputs(args, file, inp, model, history):
    import numpy as np
    from .datafiles import save_h5
    from .metrics import r2_score, bits_per_spike
    train, valid, supervised = inp["train"], inp["valid"], inp["supervised"]
    out = dict(inp["data"])
    res = {}
    for split, t in (("train", train), ("valid", valid)):
        t0 = time.perf_counter()
        print(f"predicting {split}: {t[0].shape[0]} trials ...", end="", flush=True)
        res[split] = model.predict(t[0])
        print(f" {time.perf_counter() - t0:.1f} s", flush=True)
        for k in ("mu", "logvar", "prediction"):
            out[f"{split}_{k}"] = res[split][k].astype(np.float32)
    print("writing sparks_output.h5, metrics.csv, loss.png, decoding.png ...", flush=True)
    save_sparks_figures(file, history, res["valid"]["now"], valid, supervised, inp["dt"], model.loss_kind())
    save_h5(file("sparks_output.h5"), out)
    baseline = None
    if supervised:
        from .metrics import smoothed_decoding
        scores = {"valid_decoding_r2": r2_score(res["valid"]["now"], valid[1].numpy())}
        t0 = time.perf_counter()
        print("decoding baseline: ridge from smoothed spikes (width, lag, penalty chosen on the training trials) ...",
              end="", flush=True)
        baseline = smoothed_decoding(train[0].numpy(), train[1].numpy(), valid[0].numpy(), valid[1].numpy(), inp["dt"])
        print(f" {time.perf_counter() - t0:.1f} s", flush=True)
        scores["ridge_smoothed_r2"] = baseline["r2"]
    else:
        scores = {"valid_bps": bits_per_spike(res["valid"]["now"], valid[0].numpy())}
    scores = {k: round(float(v), 6) for k, v in scores.items()}
    print(f"wrote {args.out}/sparks_output.h5, metrics.csv, loss.png, decoding.png, checkpoint.pt, run.json")
    print(_score_line({k: v for k, v in scores.items() if k != "ridge_smoothed_r2"}))
    if baseline is not None:
        d = scores["valid_decoding_r2"] - baseline["r2"]
        print(f"SPARKS decoding R2 {scores['valid_decoding_r2']:.3f} vs ridge from smoothed spikes {baseline['r2']:.3f} "
              f"(width {baseline['width_ms']:g} ms, lag {baseline['lag']} bins): {d:+.3f} "
              f"({'beats it' if d > 0 else 'loses'})")
    if inp["binarised"] is not None:
        print(f"--binarize: {100 * inp['binarised']:.1f} % of the spikes were in bins with more than one and were not "
              "seen by SPARKS")
    return {"command": "train sparks", "options": sparks_options(args), "data": inp["path"],
            **({"binarised_spikes_lost": round(inp["binarised"], 6)} if inp["binarised"] is not None else {}),
            "budget": {"epochs": args.epochs, "max_seconds": args.max_seconds}, "results": scores}


# -----------------------------------------------------------------------------
# the two training commands


def one_thread(fn):
    """ run fn(args) on one torch thread and one BLAS thread (module docstring); the settings are handed back """
    def run(args):
        import torch
        from threadpoolctl import threadpool_limits
        before = torch.get_num_threads()
        torch.set_num_threads(PROCESS_SETTINGS["num_threads"])
        try:
            with threadpool_limits(limits=PROCESS_SETTINGS["num_threads"], user_api="blas"):
                return fn(args)
        finally:
            torch.set_num_threads(before)
    run.__name__, run.__doc__ = fn.__name__, fn.__doc__
    return run


@one_thread
def train_lfads(args):
    from .trainer import Trainer
    inp = read_lfads_inputs(args)                       # everything is checked before DIR is touched
    folder, staged = plan_folder(args)
    model, init_note = build_lfads(args, inp)
    cfg, multi = model.cfg, inp["multi"]
    # with held-out neurons the epoch to keep is chosen on the held-in ones: co-bps scores the held-out neurons of
    # these same validation trials, so they must play no part in the choice (NLB scores trials no choice has seen)
    heldout = all(d["valid_recon_data"].shape[2] > d["valid_encod_data"].shape[2] for d in inp["datasets"])
    tcfg = trainer_config(args, "lfads", monitor="recon_heldin" if heldout else "loss")
    trainer = Trainer(model, inp["train"] if multi else inp["train"][0], inp["valid"] if multi else inp["valid"][0], tcfg)
    open_run(args, folder, staged, trainer, "lfads", lfads_options(args),
             [x for t in inp["train"] + inp["valid"] for x in t])

    for p, t, v, b in zip(inp["paths"], inp["train"], inp["valid"], inp["bins"]):
        print(describe_data(p, t, v, b))
    for name, (factor, note) in zip(inp["names"], inp["truth"]):
        if note:
            print((f"{name}: " if multi else "") + note)
    parts = [f"{cfg.recon} likelihood"] + ([f"controller with {cfg.co_dim} inferred inputs"] if cfg.co_dim else []) \
        + ([f"{len(inp['names'])} sessions, read-in dim {cfg.read_in_dim}"] if multi else [])
    print(f"model: LFADS with {model.n_params:,} parameters ({', '.join(parts)}); budget: {budget_text(args, 'lfads')}")
    if init_note:
        print(init_note)
    if inp["chosen"]:
        print(f"chosen for this data: {inp['chosen']}")

    def extra(r):
        return f"kl_ic {r['train_kl_ic']:.2f}" + (f"  kl_co {r['train_kl_co']:.2f}" if "train_kl_co" in r else "")
    return run_training(args, folder, staged, trainer, extra,
                        lambda history: write_lfads_outputs(args, folder.file, inp, model, history),
                        f"{cfg.recon} NLL per entry")


@one_thread
def train_sparks(args):
    from .trainer import Trainer
    inp = read_sparks_inputs(args)                      # everything is checked before DIR is touched
    folder, staged = plan_folder(args)
    model = build_sparks(args, inp)
    train, valid, supervised = inp["train"], inp["valid"], inp["supervised"]
    tcfg = trainer_config(args, "sparks", lr_schedule="constant", ema_decay=None, grad_clip=None)
    trainer = Trainer(model, train, valid, tcfg)
    open_run(args, folder, staged, trainer, "sparks", sparks_options(args), list(train + valid))
    print(f"data: {inp['path']}\n  train {tuple(train[0].shape)}, valid {tuple(valid[0].shape)} (trials, bins, neurons); "
          + (f"decoding '{inp['target']}' ({train[1].shape[2]} outputs)" if supervised else "unsupervised (reconstruct spikes)"))
    print(f"model: SPARKS with {model.n_params:,} parameters; budget: {budget_text(args, 'sparks')}")
    names = {"mse": "squared error", "bernoulli": "Bernoulli NLL", "poisson": "Poisson NLL"}
    return run_training(args, folder, staged, trainer, lambda r: f"kl {r['train_kl']:.2f}",
                        lambda history: write_sparks_outputs(args, folder.file, inp, model, history),
                        f"{names.get(model.loss_kind(), model.loss_kind())} per bin")
