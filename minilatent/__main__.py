"""
Command line: the headless main job.

    python -m minilatent train lfads [DATA.h5 ...] --out DIR [--epochs N] [--max-seconds S] [--seed K] [...]
    python -m minilatent train sparks [DATA.h5] --out DIR [--epochs N] [--max-seconds S] [--seed K] [...]
    python -m minilatent make-eg-data [--out FOLDER]

`train lfads` reads DATA (lfads-torch keys or original LFADS keys; default: the shipped Lorenz example),
trains LFADS and writes into DIR:
    checkpoint.pt        trainer checkpoint (model, optimiser, EMA, RNG states, the options; --resume)
    metrics.csv          one row per epoch
    loss.png, rates.png  loss curves; inferred vs true rates of a validation trial
    lfads_output.h5      lfads-torch's output layout: a copy of the input plus {train,valid}_output_params
                         (posterior-mean rates, counts per bin), _factors, _ic_mean, _ic_std, _gen_states,
                         _gen_init (and _co_means, _co_stds, _gen_inputs, _con_states with a controller).
                         Several DATA files are several sessions: one lfads_output_<name>.h5 per session.
    run.json             written last: the options and results of a finished run

The run folder (minilatent/files.py has the mechanics):
  - everything that can be wrong with the options and the data is checked before DIR is touched: exit 2
    and one line naming the problem
  - a DIR that holds a run is refused unless --overwrite (replace it) or --resume (continue it); a DIR in
    use by a live run is refused; a lock left by a killed run is taken over
  - a run that replaces or extends a finished run works in DIR/.staging and swaps its files in at the end:
    if it fails or is interrupted, DIR keeps the previous run untouched (never a mix of two runs)
  - --resume compares the options with those stored in the checkpoint: the model, the data, --seed, --lr
    and --batch-size must match; the budgets (--epochs, --max-seconds, totals counted from the start of the
    run) may change, and the learning-rate schedule then continues from where it stood
Exit codes: 0 done, 1 the run failed (NaN loss, disk full; one line says what is kept), 2 bad input,
130 interrupted by Ctrl-C, 143 by SIGTERM (one line says which epoch is saved and how to resume).
"""

import argparse
import csv
import hashlib
import io
import json
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import fields

from .files import RunFolder, RunFolderError, atomic_write, disk_full


class UsageError(Exception):
    """ a problem with the user's input: reported in one line, exit code 2 """


class RunFailed(Exception):
    """ the run could not finish (NaN loss, full disk): reported in one line, exit code 1 """


class Interrupted(KeyboardInterrupt):
    """ SIGTERM, raised in the main thread like Ctrl-C """


# -----------------------------------------------------------------------------
# options: one table per model, defaults read from the config dataclasses so they cannot drift


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """ help with the default of every option that has one """

    def _get_help_string(self, action):
        h = action.help or ""
        quiet = action.default is None or action.default is False or action.default is argparse.SUPPRESS
        if "%(default)" not in h and not quiet and action.option_strings:
            h += " (default: %(default)s)"
        return h


class _Parser(argparse.ArgumentParser):
    """ argparse that reports a bad option in one line (no usage block) and exits 2 """

    def error(self, message):
        message = message.replace("the following arguments are required", "missing required argument(s)")
        for a in self._actions:                      # 'argument --lr: must be ...' -> '--lr must be ...'
            for flag in a.option_strings:
                message = message.replace(f"argument {flag}: must", f"{flag} must")
        raise UsageError(f"{message} (see: {self.prog} --help)")


def _number(kind, lo=None, hi=None, lo_open=False, hi_open=False):
    """ an argparse type: an int or a finite float in a range; the error names the range """
    fmt = lambda v: str(v) if isinstance(v, int) else f"{v:g}"
    lo_s = "" if lo is None else f"{'>' if lo_open else '>='} {fmt(lo)}"
    hi_s = "" if hi is None else f"{'<' if hi_open else '<='} {fmt(hi)}"
    if lo is not None and hi is not None:
        rng = f"in {'(' if lo_open else '['}{fmt(lo)}, {fmt(hi)}{')' if hi_open else ']'}"
    else:
        rng = lo_s or hi_s
    what = "an integer" if kind is int else "a number"

    def parse(s):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what} {rng}, got {s!r}") from None
        ok = math.isfinite(v) and (lo is None or (v > lo if lo_open else v >= lo)) \
            and (hi is None or (v < hi if hi_open else v <= hi))
        if not ok:
            raise argparse.ArgumentTypeError(f"must be {rng}, got {s}")
        return v
    parse.__name__ = kind.__name__
    return parse


def resolve_device(name):
    """ --device auto|cpu|cuda -> a torch device name; cuda without a GPU is a usage error """
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: torch sees no CUDA GPU here (torch.cuda.is_available() is False); "
                         "use --device cpu or auto")
    return name


def _defaults(cls):
    return {f.name: f.default for f in fields(cls)}


# (flag, config field, parser type, help): the model options of `train lfads`, defaults from LFADSConfig
LFADS_MODEL_OPTIONS = [
    ("--gen-dim", "gen_dim", _number(int, 1, 4096), "generator GRU size"),
    ("--fac-dim", "fac_dim", _number(int, 1, 1024), "number of factors (the generator's low-dimensional read-out)"),
    ("--ic-enc-dim", "ic_enc_dim", _number(int, 1, 4096), "initial-condition encoder GRU size, per direction"),
    ("--co-dim", "co_dim", _number(int, 0, 256), "inferred-input dimension (0: no controller)"),
    ("--ci-enc-dim", "ci_enc_dim", _number(int, 1, 4096), "controller-input encoder size per direction (with --co-dim)"),
    ("--con-dim", "con_dim", _number(int, 1, 4096), "controller GRU size (with --co-dim)"),
    ("--ci-lag", "ci_lag", _number(int, 0, 100000), "bins the controller's forward encoding is delayed by "
     "(less than the trial's bins)"),
    ("--kl-co-scale", "kl_co_scale", _number(float, 0), "weight of the inferred-input KL (AR(1) prior); 1e-4 "
     "recovered the pulse times on the chaotic-RNN benchmark, 1e-5 and 1e-3 did not"),
    ("--co-prior-tau", "co_prior_tau", _number(float, 0, lo_open=True), "initial time constant of the AR(1) "
     "prior, in bins (learned); short (e.g. 2) for brief inputs such as one-bin pulses"),
    ("--recon", "recon", None, "reconstruction likelihood (gaussian/gamma/zig take continuous data)"),
    ("--zig-loc", "zig_loc", _number(float, 0), "zero-inflated Gamma: smallest nonzero value"),
    ("--cd-rate", "cd_rate", _number(float, 0, 1, hi_open=True), "coordinated dropout rate (0: off)"),
    ("--dropout", "dropout", _number(float, 0, 1, hi_open=True), "dropout on the inputs, encodings and generator states"),
]
SPARKS_MODEL_OPTIONS = [
    ("--embed-dim", "embed_dim", _number(int, 1, 4096), "features per neuron after the Hebbian attention"),
    ("--latent-dim", "latent_dim", _number(int, 1, 4096), "dimension of the Gaussian latent per bin"),
    ("--tau-p", "tau_p", _number(int, 1, 10000), "the decoder sees the last TAU_P latents"),
]
# The command line's LFADS defaults where they differ from LFADSConfig() and TrainerConfig(). They were chosen on the
# dataset suite of synthetic.SUITE (benchmarks/lfads_datasets.py; README, "LFADS on the dataset suite"): on the sparse
# Lorenz data of issue 11 (60 neurons at 1.8 Hz, 640 training trials, 300 s) a generator of 128 units, 40 factors,
# coordinated dropout 0.5, a peak learning rate of 3e-3 and batches of 64 took the rate R2 from 0.885 to 0.93 and
# the latent R2 from 0.976 / 0.925 / 0.945 to 0.99 / 0.98 / 0.98. The dataclasses keep the smaller model that the
# lessons train in a minute and whose posterior average is 2-2.5x cheaper.
LFADS_CLI_DEFAULTS = {"gen_dim": 128, "fac_dim": 40, "cd_rate": 0.5}
LFADS_CLI_LR = 3e-3
LFADS_BATCH = (16, 64)          # --batch-size default: a tenth of the training trials, within these bounds
LFADS_BATCH_HELP = (f"trials per optimiser step (default: a tenth of the training trials, at least {LFADS_BATCH[0]} "
                    f"and at most {LFADS_BATCH[1]})")


def lfads_batch_size(n_train):
    """ the default batch for n_train training trials: about 10 optimiser steps per epoch, between 16 and 64 trials
    (larger batches cost less CPU time per trial; fewer than ~10 steps per epoch learn too slowly on small data) """
    lo, hi = LFADS_BATCH
    return int(min(hi, max(lo, n_train // 10)))


NO_EPOCH_LIMIT = 10**7          # --epochs when only --max-seconds is given


def _budget(epochs, seconds):
    return " or ".join(([f"{epochs} epochs"] if epochs < NO_EPOCH_LIMIT else []) + ([f"{seconds:g} s"] if seconds else []))


BUDGET_OPTIONS = ("epochs", "max_seconds", "samples", "truth_units")   # may change on --resume


def _add_common(p, epochs, batch_size, lr, lr_note, batch_note="trials per optimiser step"):
    """ the options every train subcommand shares """
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (see 'run folders' below)")
    p.add_argument("--epochs", type=_number(int, 1, 10**7), default=None, help=f"maximum epochs, counted from the "
                   f"start of the run (a resumed run continues to this total) (default: {epochs}; with --max-seconds "
                   f"and no --epochs, the time budget alone ends the run)")
    p.add_argument("--max-seconds", type=_number(float, 0, 1e9, lo_open=True), default=None,
                   help="wall-clock training budget in seconds (a total over resumed runs). The learning rate then "
                   "follows the clock, so the same seed does not reproduce the run: the run prints the epochs it "
                   "reached, and --epochs N alone gives a clock-free run of that length")
    p.add_argument("--seed", type=_number(int, 0, 2**32 - 1), default=0, help="seeds the initial weights, batch "
                   "order, dropout and sampling")
    p.add_argument("--batch-size", type=_number(int, 1, 10**6), default=batch_size, help=batch_note)
    p.add_argument("--lr", type=_number(float, 0, 10, lo_open=True), default=lr, help=lr_note)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to train: auto = cuda "
                   "when torch sees a GPU, else cpu (the package never needs a GPU)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue the run in DIR from DIR/checkpoint.pt (the same "
                   "data and options; --epochs/--max-seconds may grow)")
    g.add_argument("--overwrite", action="store_true", help="replace the run in DIR; the old files stay until the "
                   "new run has finished")


RUN_FOLDERS = """run folders:
  DIR holding a run is refused unless --overwrite or --resume; a DIR in use by a live run is refused.
  A run that replaces or extends a finished run works in DIR/.staging and swaps in at the end, so a failed
  or interrupted run leaves the previous one untouched. --resume refuses changed model/data options,
  --seed, --lr and --batch-size, and accepts new --epochs/--max-seconds (the learning-rate schedule
  continues from where it stood). Exit codes: 0 done, 1 run failed (NaN loss, disk full), 2 bad input,
  130 Ctrl-C, 143 SIGTERM."""


def add_data_options(p):
    """ the data options of train lfads (and tune lfads): held-out neurons, NWB binning """
    p.add_argument("--heldout-neurons", type=_number(int, 1, 100000), default=None, metavar="K",
                    help="hold out K neurons (a random choice seeded by --seed): the encoders never see them, LFADS "
                    "predicts them, and the run reports co-bps (the Neural Latents Benchmark's score on held-out "
                    "neurons); the choice is written to the output (heldin_idx, heldout_idx)")
    p.add_argument("--bin-ms", type=_number(float, 0, 1e6, lo_open=True), default=10.0,
                    help="NWB input: bin width in milliseconds")
    p.add_argument("--align", default=None, metavar="COLUMN", help="NWB input: trials-table column the trials are "
                    "aligned to, e.g. move_onset_time (default: each trial's start_time)")
    p.add_argument("--window", type=_number(float), nargs=2, default=None, metavar=("START", "END"),
                    help="NWB input: milliseconds around the align column (default: each trial's start to its stop, "
                    "cut to the shortest trial)")


SPARKS_CLI_BATCH = 5   # train sparks: 2x the optimiser steps per epoch of batch 10 (benchmarks/sparks_vs_reference.py)


def build_parser():
    from .lfads import LFADSConfig, LIKELIHOODS
    from .sparks import SPARKSConfig
    from .trainer import TrainerConfig
    from .datafiles import TRUTH_UNITS
    prog = "python -m minilatent"
    ap = _Parser(prog=prog, formatter_class=_Formatter, description="minilatent: train latent-dynamics models of "
                 "neural data (LFADS, SPARKS) from the command line.", epilog=f"""examples:
  {prog} train lfads --out runs/lorenz --max-seconds 90      # the shipped Lorenz example
  {prog} train lfads my_data.h5 --out runs/mine --epochs 100
  {prog} train sparks --out runs/rotation --epochs 10
  {prog} train lfads --help                                  # every option with its default""")
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND", required=True, parser_class=_Parser)
    tr = sub.add_parser("train", help="train a model on an HDF5 dataset", formatter_class=_Formatter,
                        description="Train a model and write its outputs into a run folder.", epilog=f"""examples:
  {prog} train lfads data.h5 --out runs/a --epochs 50
  {prog} train sparks --out runs/s --epochs 10 --online""")
    trs = tr.add_subparsers(dest="model", metavar="MODEL", required=True, parser_class=_Parser)

    d = {**_defaults(LFADSConfig), **LFADS_CLI_DEFAULTS}
    t = _defaults(TrainerConfig)
    lf = trs.add_parser("lfads", help="LFADS (lfads-torch or original LFADS HDF5 keys)", formatter_class=_Formatter,
                        description="Train LFADS on spike counts (or continuous data with --recon) and write the "
                        "posterior-mean rates and latents in lfads-torch's output layout.",
                        epilog=f"""examples:
  {prog} train lfads --out runs/lorenz --max-seconds 90
  {prog} train lfads a.h5 b.h5 --out runs/two --epochs 100          # two sessions
  {prog} train lfads rec.nwb --out runs/rec --bin-ms 10 --align move_onset_time --window -250 450
  {prog} train lfads data.h5 --out runs/ho --heldout-neurons 10     # co-bps on 10 held-out neurons
  {prog} train lfads eg_data/chaotic_rnn_inputs.h5 --out runs/pulses --co-dim 1 --co-prior-tau 2 --ramp-epochs 3
  {prog} train lfads data.h5 --out runs/a --resume --epochs 300     # continue to 300 epochs

{RUN_FOLDERS}""")
    lf.add_argument("data", nargs="*", metavar="DATA.h5", help="HDF5 or NWB file (default: the shipped Lorenz "
                    "example); NWB recordings are binned with --bin-ms/--align/--window; several files = several sessions sharing the dynamics, each with its own read-in/out (outputs "
                    "lfads_output_<name>.h5)")
    _add_common(lf, t["max_epochs"], None, LFADS_CLI_LR, "peak learning rate (cosine decay to 5%% of it)",
                batch_note=LFADS_BATCH_HELP)
    for flag, field, typ, h in LFADS_MODEL_OPTIONS:
        if field == "recon":
            lf.add_argument(flag, default=d[field], choices=sorted(LIKELIHOODS), help=h)
        else:
            lf.add_argument(flag, type=typ, default=d[field], help=h)
    lf.add_argument("--ramp-epochs", type=_number(int, 0), default=d["kl_ramp_epochs"],
                    help="epochs over which the KL and L2 weights rise to 1 (a few for short runs with a controller)")
    lf.add_argument("--read-in-dim", type=_number(int, 1, 4096), default=None,
                    help="several sessions: read-in size (default: --fac-dim)")
    lf.add_argument("--samples", type=_number(int, 0, 100000), default=50,
                    help="posterior samples averaged for the outputs (0: the posterior means)")
    add_data_options(lf)
    lf.add_argument("--truth-units", default="auto", choices=TRUTH_UNITS, help="units of *_truth when the file has "
                    "no conversion_factor: hz (spikes/s, needs dt), counts (per bin), or auto (inferred when evident "
                    "from the data, else the rate R2 is skipped)")
    lf.set_defaults(fn=train_lfads)

    s = _defaults(SPARKSConfig)
    sp = trs.add_parser("sparks", help="SPARKS (Hebbian attention VAE) on binary spikes", formatter_class=_Formatter,
                        description="Train SPARKS to decode a target from binary spikes (or to reconstruct them) and "
                        "write the latents and predictions.", epilog=f"""examples:
  {prog} train sparks --out runs/rotation --epochs 10
  {prog} train sparks my_spikes.h5 --out runs/unsup --target none
  {prog} train sparks --out runs/rotation --resume --epochs 20

{RUN_FOLDERS}""")
    sp.add_argument("data", nargs="?", metavar="DATA.h5", help="HDF5 file (default: the shipped rotation example)")
    _add_common(sp, 30, SPARKS_CLI_BATCH, 3e-3, "learning rate (constant)", batch_note="trials per optimiser step "
                "(5: on the rotation benchmark, test R2 0.910 after 10 epochs against 0.881 with 10, for ~25%% more time "
                "per epoch)")
    sp.add_argument("--target", default=None, help="key suffix of the target to decode ('latents' -> train_latents); "
                    "default: latents when present; 'none' for unsupervised")
    for flag, field, typ, h in SPARKS_MODEL_OPTIONS:
        sp.add_argument(flag, type=typ, default=s[field], help=h)
    sp.add_argument("--online", action="store_true", help="online learning: an optimiser step per bin")
    sp.set_defaults(fn=train_sparks)

    from .tune import add_tune_parser
    add_tune_parser(sub, prog, _Formatter, _Parser, RUN_FOLDERS.split("\n")[0].replace("run folders:", "the run folder: as train lfads (--resume continues DIR/ray, --overwrite replaces)."))

    eg = sub.add_parser("make-eg-data", help="regenerate the example datasets in eg_data/ bit for bit",
                        formatter_class=_Formatter, description="Regenerate the shipped example datasets from their "
                        "generators (a test checks they come out bit for bit).", epilog=f"""examples:
  {prog} make-eg-data
  {prog} make-eg-data --out /tmp/eg""")
    eg.add_argument("--out", default=None, metavar="FOLDER", help="folder (default: the package's eg_data/)")
    eg.set_defaults(fn=make_eg_data)
    from .lessons import add_lessons_parser
    add_lessons_parser(sub)  # python -m minilatent lessons {student,instructor,html} OUT_DIR
    return ap


# -----------------------------------------------------------------------------
# writing: metrics, figures


def write_metrics_csv(path, rows):
    keys = []
    for r in rows:
        keys += [k for k in r if k not in keys]

    def w(f):
        wr = csv.DictWriter(f, fieldnames=keys)
        wr.writeheader()
        wr.writerows(rows)
    atomic_write(path, w, binary=False)


def _save_fig(fig, path):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def save_figures(folder, history, rates_valid, data, truth_valid, recon):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from .widgets import plot_raster_rates

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    ep = history.column("epoch")
    for k, c in (("train_recon", "C0"), ("valid_recon", "C1")):
        y = history.column(k)
        ax[0].plot(ep[~np.isnan(y)], y[~np.isnan(y)], color=c, label=k)
    ax[0].set_xlabel("epoch"); ax[0].set_ylabel(f"{recon} NLL per entry"); ax[0].legend()
    for k in ("train_kl_ic", "train_kl_co"):
        y = history.column(k)
        if not np.all(np.isnan(y)):
            ax[1].plot(ep, y, label=k)
    ax[1].set_xlabel("epoch"); ax[1].set_ylabel("KL (nats)"); ax[1].legend()
    fig.tight_layout()
    _save_fig(fig, folder.file("loss.png"))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 5))
    plot_raster_rates(data["valid_recon_data"][0], None, truth_valid[0] if truth_valid is not None else None,
                      rates_valid[0], dt=float(data.get("dt", 0.01)), ax=ax,
                      title="validation trial 0: spikes, true (grey) and inferred (orange) rates")
    _save_fig(fig, folder.file("rates.png"))
    plt.close(fig)


# -----------------------------------------------------------------------------
# the run: folder rules, resume checks, training with failures and signals reported in one line


def _fingerprint(arrays):
    """ a short hash of the data arrays a run trains on (to refuse resuming on other data) """
    import numpy as np
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a, np.float32))
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def plan_folder(args):
    """ Apply the run-folder rules (module docstring) without writing anything; returns (RunFolder, staged). """
    folder = RunFolder(args.out)
    try:
        folder.check_path()
    except RunFolderError as e:
        raise UsageError(str(e)) from None
    pid = folder.active_pid()
    if pid is not None:
        raise UsageError(f"--out {args.out} is in use by another run (process {pid}); wait for it to end or choose "
                         "another folder")
    previous = folder.previous_run()
    if args.resume:
        if not os.path.exists(folder.final("checkpoint.pt")):
            raise UsageError(f"--resume: no checkpoint at {folder.final('checkpoint.pt')}")
        return folder, folder.finished()
    if previous and args.overwrite:
        return folder, True
    if previous:
        state = "a finished run" if folder.finished() else "an unfinished run"
        raise UsageError(f"--out {args.out} already holds {state} ({', '.join(previous)}); add --resume to continue "
                         "it or --overwrite to replace it")
    return folder, False


def read_checkpoint_for_resume(folder, command, options, fingerprint):
    """ The stored options of DIR/checkpoint.pt, checked against this run's: one line naming every difference. """
    import torch
    path = folder.final("checkpoint.pt")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        extra = ck.get("extra") or {}
        if not isinstance(ck, dict) or "model" not in ck:
            raise ValueError("not a minilatent checkpoint")
    except Exception as e:  # truncated, corrupt, another program's file: say so in one line
        msg = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise UsageError(f"--resume: {path} cannot be read (truncated or corrupt?): {msg}") from None
    if extra.get("command") not in (None, command):
        raise UsageError(f"--resume: {path} is from 'train {extra['command']}', not 'train {command}'")
    old = extra.get("options")
    if old is None:
        raise UsageError(f"--resume: {path} stores no options (written by another version); start again with --overwrite")
    diffs = [f"--{k.replace('_', '-')} {options.get(k)} (checkpoint: {old.get(k)})"
             for k in sorted(set(old) | set(options)) if k not in BUDGET_OPTIONS and old.get(k) != options.get(k)]
    if extra.get("data") != fingerprint:
        diffs.insert(0, "the data differ from those the checkpoint was trained on")
    if diffs:
        raise UsageError(f"--resume: options differ from the checkpointed run: {'; '.join(diffs)}; use the run's "
                         "options, or start again with --overwrite")
    return ck


def _open(folder, staged, trainer, ck, extra_state):
    """ take the folder (lock, staging) and, with --resume, load the checkpoint; the lock is released if that fails """
    try:
        folder.open(staged)
    except RunFolderError as e:
        raise UsageError(str(e)) from None
    try:
        if ck is not None:
            trainer.load_checkpoint(folder.final("checkpoint.pt"))
            print(f"resumed from {folder.final('checkpoint.pt')} at epoch {trainer.epoch}")
        trainer.extra_state = extra_state
    except BaseException:
        folder.release()
        raise


def run_training(args, folder, staged, trainer, extra, write_outputs):
    """ Take the folder, train (reporting each epoch), write the outputs, finish the folder. Failures and
    signals end in one line (module docstring); the lock is always released. """
    import torch
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

        def report(tr):
            r = tr.history.rows[-1]
            print(f"epoch {r['epoch']:4d}  {r['seconds']:7.1f} s  train {r['train_recon']:.5f}  "
                  f"valid {r.get('valid_recon', float('nan')):.5f}  {extra(r)}", flush=True)
        trainer.add_callback("on_epoch_end", report)
        t0 = time.perf_counter()
        history = trainer.fit()
        print(f"stopped after {trainer.epoch} epochs ({trainer.stop_reason}) in {time.perf_counter() - t0:.1f} s")
        if trainer.stop_reason == "time budget":
            print(f"with --max-seconds the learning rate followed the clock; a clock-free run of the same length: "
                  f"--epochs {trainer.epoch}")
        if not os.path.exists(ck):      # a resumed run that had nothing left to train: carry its checkpoint over
            shutil.copy2(folder.final("checkpoint.pt"), ck)
        stage = "writing outputs"
        torch.set_num_threads(1)
        write_metrics_csv(folder.file("metrics.csv"), history.rows)
        summary = write_outputs(history)
        summary.update(epochs=trainer.epoch, stop_reason=trainer.stop_reason, seconds=round(trainer.elapsed, 2),
                       finished=True)
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


# -----------------------------------------------------------------------------
# train lfads: read inputs -> build the model -> train -> write outputs


def read_lfads_inputs(args):
    """ Load and check every DATA file and the options that depend on the data; raises UsageError. """
    import numpy as np
    import torch
    from .datafiles import load_h5, load_dataset, eg_path, lfads_tensors, truth_conversion
    from .lfads import LFADSConfig, LIKELIHOODS

    paths = args.data or [eg_path("lorenz")]
    nwb = [p for p in paths if p.lower().endswith(".nwb")]
    if (args.align is not None or args.window is not None) and not nwb:
        raise UsageError("--align and --window apply to NWB recordings (.nwb); HDF5 data are binned already")
    if args.heldout_neurons and len(paths) > 1:
        raise UsageError("--heldout-neurons needs a single DATA file (held-out neurons are one session's)")
    datasets = []
    for path in paths:
        try:
            if path.lower().endswith(".nwb") or args.heldout_neurons:
                datasets.append(load_dataset(path, counts=args.recon == "poisson", nonnegative=args.recon != "gaussian",
                                             bin_ms=args.bin_ms, align=args.align,
                                             window=tuple(args.window) if args.window else None,
                                             heldout_neurons=args.heldout_neurons, seed=args.seed))
            else:
                datasets.append(load_h5(path, counts=args.recon == "poisson", nonnegative=args.recon != "gaussian"))
        except (KeyError, ValueError, TypeError, FileNotFoundError, ImportError) as e:
            msg = e.args[0] if e.args else str(e)
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
    chosen = None
    if args.batch_size is None:                       # chosen from the data (the smallest session's training trials)
        n_train = min(t[0].shape[0] for t in train)
        args.batch_size = lfads_batch_size(n_train)
        chosen = f"batch size {args.batch_size} (from {n_train} training trials; --batch-size sets it)"
    return dict(paths=paths, names=names, datasets=datasets, train=train, valid=valid, multi=multi,
                ext_dim=ext_dims.pop(), truth=truth, chosen=chosen)


def lfads_options(args):
    """ the options a resumed run must share with the checkpoint's (plus the budgets, which may differ) """
    keep = [f for _, f, _, _ in LFADS_MODEL_OPTIONS] + ["ramp_epochs", "read_in_dim", "seed", "batch_size", "lr",
                                                         "epochs", "max_seconds", "samples", "truth_units",
                                                         "heldout_neurons", "bin_ms", "align", "window"]
    return {k: getattr(args, k) for k in keep}


def build_lfads(args, inp):
    """ The model for the inputs (initialised, seeded); raises UsageError for options the data cannot take. """
    import numpy as np
    import torch
    from .metrics import psths
    from .lfads import LFADS, LFADSConfig, check_sessions

    kw = {f: getattr(args, f) for _, f, _, _ in LFADS_MODEL_OPTIONS}
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
    note = ""
    if inp["multi"]:
        conds = [set(np.unique(d["train_cond_idx"]).tolist()) if "train_cond_idx" in d else None for d in inp["datasets"]]
        if all(c is not None and c == conds[0] for c in conds):
            model.init_pcr([psths(d, "train") for d in inp["datasets"]])
            note = "read-in/out initialised by PCR on the condition averages"
        else:
            note = "no shared condition labels (train_cond_idx): read-in/out start at random"
        for s, t in enumerate(train):
            model.init_readout_bias(t[1], session=s)
    else:
        model.init_readout_bias(train[0][1])
    return model, note


def open_run(args, folder, staged, trainer, command, options, arrays):
    """ the last checks of a training run (a resumed run must match its checkpoint; the trainer checks the data),
    then open the run folder and load the checkpoint to resume from """
    fingerprint = _fingerprint(arrays)
    ck = read_checkpoint_for_resume(folder, command, options, fingerprint) if args.resume else None
    try:
        trainer.check_data()
    except ValueError as e:
        raise UsageError(e.args[0]) from None
    _open(folder, staged, trainer, ck, {"command": command, "options": options, "data": fingerprint})
    if staged:
        print(f"{args.out} holds a previous run: this one works in {folder.work} and replaces it when it has finished")


def train_lfads(args):
    from .trainer import Trainer, TrainerConfig

    inp = read_lfads_inputs(args)                       # everything is checked before DIR is touched
    folder, staged = plan_folder(args)
    model, init_note = build_lfads(args, inp)
    cfg = model.cfg
    multi = inp["multi"]
    tcfg = TrainerConfig(max_epochs=args.epochs, max_seconds=args.max_seconds, seed=args.seed,
                         device=resolve_device(args.device),
                         batch_size=args.batch_size, lr=args.lr, progress=False)
    trainer = Trainer(model, inp["train"] if multi else inp["train"][0], inp["valid"] if multi else inp["valid"][0], tcfg)
    open_run(args, folder, staged, trainer, "lfads", lfads_options(args),
             [x for t in inp["train"] + inp["valid"] for x in t])

    for p, t, v in zip(inp["paths"], inp["train"], inp["valid"]):
        print(f"data: {p}\n  train {tuple(t[0].shape)}, valid {tuple(v[0].shape)} (trials, bins, neurons)")
    for name, (factor, note) in zip(inp["names"], inp["truth"]):
        if note:
            print((f"{name}: " if multi else "") + note)
    parts = [f"{cfg.recon} likelihood"] + ([f"controller with {cfg.co_dim} inferred inputs"] if cfg.co_dim else []) \
        + ([f"{len(inp['names'])} sessions, read-in dim {cfg.read_in_dim}"] if multi else [])
    print(f"model: LFADS with {model.n_params:,} parameters ({', '.join(parts)}); budget: "
          f"{_budget(tcfg.max_epochs, args.max_seconds)}")
    if init_note:
        print(init_note)
    if inp["chosen"]:
        print(f"chosen for this data: {inp['chosen']}")

    def extra(r):
        return f"kl_ic {r['train_kl_ic']:.2f}" + (f"  kl_co {r['train_kl_co']:.2f}" if "train_kl_co" in r else "")
    return run_training(args, folder, staged, trainer, extra,
                        lambda history: write_lfads_outputs(args, folder, inp, model, history))


def write_lfads_outputs(args, folder, inp, model, history):
    """ posterior sample-and-average, lfads-torch's output layout (one file per session), figures, results """
    import numpy as np
    from .datafiles import save_h5
    from .metrics import rate_r2, bits_per_spike, pulse_timing_accuracy, heldout_figures
    cfg, multi = model.cfg, inp["multi"]
    written, lines, first = [], [], None
    for s, (name, data) in enumerate(zip(inp["names"], inp["datasets"])):
        out = dict(data)
        results = {}
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
        save_h5(folder.file(fname), out)
        written.append(fname)
        rates = results["valid"]["output_params"]
        truth_valid = data["valid_truth"] / factor if factor is not None and "valid_truth" in data else None
        if first is None:
            first = (rates, data, truth_valid)
        line = f"{name}: " if multi else ""
        nlb = heldout_figures(rates, data) if cfg.recon == "poisson" else {}
        if nlb:   # held-out neurons / forward bins: NLB's figures; bits/spike of the held-in neurons is in-sample
            line += f"valid bits/spike (held-in neurons) {nlb['bps']:.4f}" + "".join(
                f"  {k.replace('_', '-')} {nlb[k]:.4f}" for k in ("co_bps", "fp_bps") if k in nlb)
        elif cfg.recon == "poisson":
            line += f"valid bits/spike {bits_per_spike(rates, data['valid_recon_data']):.4f}"
        else:
            line += f"valid {cfg.recon} NLL per entry {history.rows[-1].get('valid_recon', float('nan')):.5f}"
        if truth_valid is not None:
            line += f"  valid rate R2 {rate_r2(rates, truth_valid):.4f}"
        elif "valid_truth" in data:
            line += "  (" + note.split(";")[0] + ")"
        if cfg.co_dim and "valid_inputs" in data:
            acc, chance = pulse_timing_accuracy(results["valid"]["co_means"], data["valid_inputs"])
            line += f"  pulse timing accuracy {acc:.3f} (chance {chance:.3f})"
        lines.append(line)
    print("writing metrics.csv, loss.png, rates.png ...", flush=True)
    save_figures(folder, history, first[0], first[1], first[2], cfg.recon)
    print(f"wrote {args.out}/{', '.join(written)}, metrics.csv, loss.png, rates.png, checkpoint.pt, run.json")
    for line in lines:
        print(line)
    return {"command": "train lfads", "options": lfads_options(args), "data": inp["paths"], "results": lines}


def make_eg_data(args):
    from .synthetic import make_eg_data as make
    for p in make(args.out) if args.out else make():
        print(f"wrote {p}")
    return 0


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:                 # --help
        return e.code
    if args.cmd == "train" and args.epochs is None:          # --max-seconds alone is the budget
        from .trainer import TrainerConfig
        args.epochs = NO_EPOCH_LIMIT if args.max_seconds else _defaults(TrainerConfig)["max_epochs"]
    try:
        return args.fn(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:               # before training started: nothing to save
        print("error: interrupted before training started; nothing was written", file=sys.stderr)
        return 130


# -----------------------------------------------------------------------------
# SPARKS: python -m minilatent train sparks [DATA.h5] --out DIR [--epochs N] [--max-seconds S] [--seed K]
#
# DATA defaults to the shipped rotation example. Spikes are `train_encod_data` / `valid_encod_data` (binary,
# (trials, time, neurons)); with a target key (--target, default `*_latents` when present) the model learns to
# decode it (supervised, MSE), else to reconstruct the spikes (unsupervised, Bernoulli). Writes into DIR:
#     checkpoint.pt, metrics.csv, loss.png, decoding.png (target vs decoded on a validation trial, or
#     spike probabilities), sparks_output.h5 ({split}_mu, _logvar, _prediction: posterior means), run.json.
# Prints the validation R^2 of the decoded target (supervised) or bits/spike (unsupervised).


def read_sparks_inputs(args):
    import numpy as np
    import torch
    from .datafiles import load_h5, eg_path
    path = args.data or eg_path("rotation")
    try:
        data = load_h5(path)
    except (KeyError, ValueError, FileNotFoundError) as e:
        raise UsageError(e.args[0] if e.args else str(e)) from None
    for split in ("train", "valid"):
        x = data[f"{split}_encod_data"]
        if x.max() > 1:
            raise UsageError(f"{split}_encod_data: SPARKS (ephys) needs binary spikes (0/1 per bin), found counts up "
                             f"to {x.max():g}; use finer bins or clip the counts")
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
                valid=tensors("valid"), dt=float(np.asarray(data.get("dt", 0.01))))


def sparks_options(args):
    keep = [f for _, f, _, _ in SPARKS_MODEL_OPTIONS] + ["online", "target", "seed", "batch_size", "lr", "epochs",
                                                          "max_seconds"]
    return {k: getattr(args, k) for k in keep}


def train_sparks(args):
    import torch
    from .sparks import SPARKS, SPARKSConfig
    from .trainer import Trainer, TrainerConfig

    inp = read_sparks_inputs(args)                      # everything is checked before DIR is touched
    folder, staged = plan_folder(args)
    train, valid, supervised = inp["train"], inp["valid"], inp["supervised"]
    try:
        cfg = SPARKSConfig(n_neurons=train[0].shape[2], n_outputs=train[1].shape[2] if supervised else None,
                           embed_dim=args.embed_dim, latent_dim=args.latent_dim, tau_p=args.tau_p, dt=inp["dt"],
                           online=args.online)
    except (ValueError, TypeError) as e:
        raise UsageError(e.args[0]) from None
    torch.manual_seed(args.seed)
    model = SPARKS(cfg)
    tcfg = TrainerConfig(max_epochs=args.epochs, max_seconds=args.max_seconds, seed=args.seed,
                         device=resolve_device(args.device),
                         batch_size=args.batch_size, lr=args.lr, lr_schedule="constant", ema_decay=None,
                         grad_clip=None, progress=False)
    trainer = Trainer(model, train, valid, tcfg)
    open_run(args, folder, staged, trainer, "sparks", sparks_options(args), list(train + valid))
    print(f"data: {inp['path']}\n  train {tuple(train[0].shape)}, valid {tuple(valid[0].shape)} (trials, bins, neurons); "
          + (f"decoding '{inp['target']}' ({train[1].shape[2]} outputs)" if supervised else "unsupervised (reconstruct spikes)"))
    print(f"model: SPARKS with {model.n_params:,} parameters; budget: {_budget(tcfg.max_epochs, args.max_seconds)}")
    return run_training(args, folder, staged, trainer, lambda r: f"kl {r['train_kl']:.2f}",
                        lambda history: write_sparks_outputs(args, folder, inp, model, history))


def write_sparks_outputs(args, folder, inp, model, history):
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
    _sparks_figures(folder, history, res["valid"]["now"], valid, supervised, inp["dt"], model.loss_kind())
    save_h5(folder.file("sparks_output.h5"), out)
    if supervised:
        line = f"valid decoding R2 {r2_score(res['valid']['now'], valid[1].numpy()):.4f}"
    else:
        line = f"valid bits/spike {bits_per_spike(res['valid']['now'], valid[0].numpy()):.4f}"
    print(f"wrote {args.out}/sparks_output.h5, metrics.csv, loss.png, decoding.png, checkpoint.pt, run.json")
    print(line)
    return {"command": "train sparks", "options": sparks_options(args), "data": inp["path"], "results": [line]}


def _sparks_figures(folder, history, pred_valid, valid, supervised, dt, loss_kind):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ep = history.column("epoch")
    for k in ("train_recon", "valid_recon"):
        y = history.column(k)
        ax.plot(ep[~np.isnan(y)], y[~np.isnan(y)], label=k)
    names = {"mse": "squared error", "bernoulli": "Bernoulli NLL", "poisson": "Poisson NLL"}
    ax.set_xlabel("epoch"); ax.set_ylabel(f"{names.get(loss_kind, loss_kind)} per bin"); ax.legend()
    fig.tight_layout()
    _save_fig(fig, folder.file("loss.png"))
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    tt = np.arange(pred_valid.shape[1]) * dt
    if supervised:
        y = valid[1][0].numpy()
        for d in range(min(y.shape[1], 4)):
            ax.plot(tt, y[:, d], color=f"C{d}", lw=2, alpha=0.4, label=f"target {d}")
            ax.plot(tt, pred_valid[0, :, d], color=f"C{d}", lw=1, label=f"decoded {d}")
        ax.set_title("validation trial 0: target (thick) and decoded (thin)")
    else:
        ax.imshow(pred_valid[0].T, aspect="auto", origin="lower", extent=(0, tt[-1] + dt, 0, pred_valid.shape[2]))
        ax.set_title("validation trial 0: predicted spike probabilities"); ax.set_ylabel("neuron")
    ax.set_xlabel("time (s)"); ax.legend(fontsize=7, ncol=4) if supervised else None
    fig.tight_layout()
    _save_fig(fig, folder.file("decoding.png"))
    plt.close(fig)


if __name__ == "__main__":
    # `python -m minilatent` runs this file as __main__; modules that import minilatent.__main__ (tune.py) must
    # get this same module, so that their UsageError is the one main() catches
    sys.modules.setdefault("minilatent.__main__", sys.modules[__name__])
    sys.exit(main())
