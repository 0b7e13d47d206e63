"""
Command line: parses the arguments and dispatches; the work is elsewhere.

    python -m minilatent train lfads [DATA.h5 ...] --out DIR [--epochs N] [--max-seconds S] [--seed K] [...]
    python -m minilatent train sparks [DATA.h5] --out DIR [--epochs N] [--max-seconds S] [--seed K] [...]
    python -m minilatent tune lfads [DATA.h5 ...] --out DIR --trials N --max-seconds S [...]
    python -m minilatent lessons {student,instructor,html} OUT_DIR
    python -m minilatent make-eg-data [--out FOLDER]

A training run (inputs, model, run folder, outputs) is minilatent/run.py; the search is minilatent/tune.py; the
lessons' two versions are minilatent/lessons.py. Every option's default is read from the config dataclasses or
from run.py's stated command-line choices, so help and behaviour cannot drift apart.
"""

import argparse
import math
import sys
from dataclasses import fields

from .run import (UsageError, RunFailed, LFADS_CLI_DEFAULTS, LFADS_CLI_LR, LFADS_BATCH, SPARKS_CLI_BATCH,
                  SMALL_DATA, SMALL_DATA_TRIALS,
                  SPARKS_CLI_LR, DEFAULT_EPOCHS)

# -----------------------------------------------------------------------------
# argparse with one-line errors and typed, range-checked numbers


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
    ("--kl-ic-scale", "kl_ic_scale", _number(float, 0), "weight of the initial-condition KL (per entry of the "
     "reconstruction mean); larger squeezes the initial condition"),
    ("--l2-gen-scale", "l2_gen_scale", _number(float, 0), "weight of the L2 penalty on the generator's recurrent "
     "kernel"),
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
LFADS_BATCH_HELP = (f"trials per optimiser step (default: a tenth of the training trials, at least {LFADS_BATCH[0]} "
                    f"and at most {LFADS_BATCH[1]})")
RUN_FOLDERS = """run folders:
  DIR holding a run is refused unless --overwrite or --resume; a DIR in use by a live run is refused.
  A run that replaces or extends a finished run works in DIR/.staging and swaps in at the end, so a failed
  or interrupted run leaves the previous one untouched. --resume refuses changed model/data options,
  --seed, --lr and --batch-size, and accepts new --epochs/--max-seconds (the learning-rate schedule
  continues from where it stood). Exit codes: 0 done, 1 run failed (NaN loss, disk full), 2 bad input,
  130 Ctrl-C, 143 SIGTERM."""
PROG = "python -m minilatent"


def _add_budget_and_folder(p, epochs, batch_size, lr, lr_note, batch_note="trials per optimiser step"):
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


def _add_lfads_options(p, skip=()):
    """ the LFADS model and data options, shared by train lfads and tune lfads (skip: the searched ones) """
    from .lfads import LFADSConfig, LIKELIHOODS
    from .datafiles import TRUTH_UNITS
    d = {**_defaults(LFADSConfig), **LFADS_CLI_DEFAULTS}
    for flag, field, typ, h in LFADS_MODEL_OPTIONS:
        if field in skip:
            continue
        if field == "recon":
            p.add_argument(flag, default=d[field], choices=sorted(LIKELIHOODS), help=h)
        elif field in SMALL_DATA:                      # chosen from the data (run.lfads_data_defaults)
            p.add_argument(flag, type=typ, default=None, help=f"{h} (default: {d[field]:g}; {SMALL_DATA[field]:g} with "
                           f"fewer than {SMALL_DATA_TRIALS} training trials)")
        else:
            p.add_argument(flag, type=typ, default=d[field], help=h)
    p.add_argument("--ramp-epochs", type=_number(int, 0), default=d["kl_ramp_epochs"],
                   help="epochs over which the KL and L2 weights rise to 1 (a few for short runs with a controller)")
    p.add_argument("--read-in-dim", type=_number(int, 1, 4096), default=None,
                   help="several sessions: read-in size (default: --fac-dim)")
    p.add_argument("--samples", type=_number(int, 0, 100000), default=50,
                   help="posterior samples averaged for the outputs (0: the posterior means)")
    p.add_argument("--heldout-neurons", type=_number(int, 1, 100000), default=None, metavar="K",
                   help="hold out K neurons (a random choice seeded by --seed): the encoders never see them, LFADS "
                   "predicts them, and the run reports co-bps (the Neural Latents Benchmark's score on held-out "
                   "neurons); the choice is written to the output (heldin_idx, heldout_idx). With held-out neurons "
                   "(these or the file's own) the epoch kept is the one that best reconstructs the held-in neurons "
                   "of the validation trials: the held-out ones, which co-bps scores, choose nothing")
    p.add_argument("--bin-ms", type=_number(float, 0, 1e6, lo_open=True), default=None,
                   help="NWB input: bin width in milliseconds (default: 10; HDF5 files carry their own dt)")
    p.add_argument("--valid-fraction", type=_number(float, 0, 1, lo_open=True, hi_open=True), default=None,
                   metavar="F", help="a file with training trials only: hold out this fraction of them for validation "
                   "(seeded by --seed, within each condition when the file has train_cond_idx); NWB files without a "
                   "split column: the fraction validated (default 0.2)")
    p.add_argument("--align", default=None, metavar="COLUMN", help="NWB input: trials-table column the trials are "
                   "aligned to, e.g. move_onset_time (default: each trial's start_time)")
    p.add_argument("--window", type=_number(float), nargs=2, default=None, metavar=("START", "END"),
                   help="NWB input: milliseconds around the align column (default: each trial's start to its stop, "
                   "cut to the shortest trial)")
    p.add_argument("--truth-units", default="auto", choices=TRUTH_UNITS, help="units of *_truth when the file has "
                   "no conversion_factor: hz (spikes/s, needs dt), counts (per bin), or auto (inferred when evident "
                   "from the data, else the rate R2 is skipped)")


def _sub(parent, name, help, description, examples, **kw):
    return parent.add_parser(name, help=help, formatter_class=_Formatter, description=description,
                             epilog="examples:\n" + "\n".join(f"  {PROG} {e}" for e in examples)
                             + (f"\n\n{kw.pop('notes')}" if "notes" in kw else ""), **kw)


def build_parser():
    from .sparks import SPARKSConfig
    ap = _Parser(prog=PROG, formatter_class=_Formatter, description="minilatent: train latent-dynamics models of "
                 "neural data (LFADS, SPARKS) from the command line.", epilog="examples:\n" + "\n".join(
                     f"  {PROG} {e}" for e in ("train lfads --out runs/lorenz --max-seconds 90      # the shipped Lorenz example",
                                               "train lfads my_data.h5 --out runs/mine --epochs 100",
                                               "train sparks --out runs/rotation --epochs 10",
                                               "train lfads --help                                  # every option with its default")))
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND", required=True, parser_class=_Parser)
    tr = _sub(sub, "train", "train a model on an HDF5 dataset", "Train a model and write its outputs into a run folder.",
              ["train lfads data.h5 --out runs/a --epochs 50", "train sparks --out runs/s --epochs 10 --online"])
    trs = tr.add_subparsers(dest="model", metavar="MODEL", required=True, parser_class=_Parser)

    lf = _sub(trs, "lfads", "LFADS (lfads-torch or original LFADS HDF5 keys)", "Train LFADS on spike counts (or "
              "continuous data with --recon) and write the posterior-mean rates and latents in lfads-torch's output "
              "layout.", ["train lfads --out runs/lorenz --max-seconds 90",
                          "train lfads a.h5 b.h5 --out runs/two --epochs 100          # two sessions",
                          "train lfads rec.nwb --out runs/rec --bin-ms 10 --align move_onset_time --window -250 450",
                          "train lfads data.h5 --out runs/ho --heldout-neurons 10     # co-bps on 10 held-out neurons",
                          "train lfads eg_data/chaotic_rnn_inputs.h5 --out runs/pulses --co-dim 1 --co-prior-tau 2 --ramp-epochs 3",
                          "train lfads data.h5 --out runs/a --resume --epochs 300     # continue to 300 epochs"],
              notes=RUN_FOLDERS)
    lf.add_argument("data", nargs="*", metavar="DATA.h5", help="HDF5 or NWB file (default: the shipped Lorenz "
                    "example); NWB recordings are binned with --bin-ms/--align/--window; several files = several "
                    "sessions sharing the dynamics, each with its own read-in/out (outputs lfads_output_<name>.h5)")
    _add_budget_and_folder(lf, DEFAULT_EPOCHS["lfads"], None, LFADS_CLI_LR, "peak learning rate (cosine decay to 5%% "
                           "of it)", batch_note=LFADS_BATCH_HELP)
    _add_lfads_options(lf)
    lf.set_defaults(fn="train_lfads")

    s = _defaults(SPARKSConfig)
    sp = _sub(trs, "sparks", "SPARKS (Hebbian attention VAE) on binary spikes", "Train SPARKS to decode a target from "
              "binary spikes (or to reconstruct them) and write the latents and predictions.",
              ["train sparks --out runs/rotation --epochs 10", "train sparks my_spikes.h5 --out runs/unsup --target none",
               "train sparks --out runs/rotation --resume --epochs 20"], notes=RUN_FOLDERS)
    sp.add_argument("data", nargs="?", metavar="DATA.h5", help="HDF5 file (default: the shipped rotation example)")
    _add_budget_and_folder(sp, DEFAULT_EPOCHS["sparks"], SPARKS_CLI_BATCH, SPARKS_CLI_LR, "learning rate (constant)",
                           batch_note="trials per optimiser step (5: on the rotation benchmark, test R2 0.910 after 10 "
                           "epochs against 0.881 with 10, for ~25%% more time per epoch)")
    sp.add_argument("--target", default=None, help="key suffix of the target to decode ('latents' -> train_latents); "
                    "default: latents when present; 'none' for unsupervised")
    for flag, field, typ, h in SPARKS_MODEL_OPTIONS:
        sp.add_argument(flag, type=typ, default=s[field], help=h)
    sp.add_argument("--online", action="store_true", help="online learning: an optimiser step per bin")
    sp.add_argument("--binarize", action="store_true", help="spike counts: a bin with any spikes counts as one spike "
                    "(the Hebbian rule sees whether a neuron spiked in a bin; the share of spikes lost is printed)")
    sp.set_defaults(fn="train_sparks")

    _add_tune_parser(sub)
    eg = _sub(sub, "make-eg-data", "regenerate the example datasets in eg_data/ bit for bit", "Regenerate the shipped "
              "example datasets from their generators (a test checks they come out bit for bit).",
              ["make-eg-data", "make-eg-data --out /tmp/eg", "make-eg-data --raw ../shared/data"])
    eg.add_argument("--out", default=None, metavar="FOLDER", help="folder (default: the package's eg_data/)")
    eg.add_argument("--raw", default=None, metavar="FOLDER", help="folder holding the raw recordings that examples "
                    "such as m1_reaching.h5 are derived from (default: $MINILATENT_RAW_DATA, else ../shared/data beside "
                    "the checkout); an example whose raw file is absent is skipped with one line")
    eg.set_defaults(fn="make_eg_data")
    from .lessons import add_lessons_parser
    add_lessons_parser(sub, _sub)  # python -m minilatent lessons {student,instructor,html} OUT_DIR
    return ap


def _add_tune_parser(sub):
    """ tune lfads: the search's own options, then train lfads's model and data options less the searched ones """
    from .lfads import LFADSConfig
    from .tune import SEARCH_SPACE
    t = sub.add_parser("tune", help="hyperparameter search (population-based training on Ray Tune)",
                       formatter_class=_Formatter, description="Search hyperparameters by population-based training "
                       "(AutoLFADS) on Ray Tune; needs the extra: pip install 'minilatent[tune]'.")
    ts = t.add_subparsers(dest="model", metavar="MODEL", required=True, parser_class=_Parser)
    space = "\n".join(f"  {k:13s} {lo:g} .. {hi:g} ({'log' if log else 'linear'})"
                      for k, (lo, hi, log, _) in SEARCH_SPACE.items())
    p = _sub(ts, "lfads", "AutoLFADS: PBT over LFADS's learning rate, dropout, coordinated dropout, KL and L2 weights",
             "Train a population of LFADS models on Ray Tune; population-based training copies good members into "
             "poor ones and perturbs their hyperparameters. Without --address it starts a local Ray with this "
             "machine's cores; with it, it joins an existing Ray cluster. Writes best_config.json, "
             "best/lfads_output.h5 (as train lfads), best/checkpoint.pt, trials.csv and pbt.png into DIR (Ray's own "
             "state in DIR/ray).",
             ["tune lfads --out runs/pbt --trials 8 --max-seconds 900",
              "tune lfads data.h5 --out runs/pbt --trials 32 --max-seconds 7200 --address auto --cpus-per-trial 2",
              "tune lfads data.h5 --out runs/pbt --trials 16 --max-seconds 3600 --gpus-per-trial 0.25",
              "tune lfads data.h5 --out runs/pbt --trials 8 --max-epochs 200 --max-seconds 86400",
              "tune lfads data.h5 --out runs/pbt --resume          # continue an interrupted search"],
             notes=f"searched (AutoLFADS's ranges; see minilatent/tune.py):\n{space}\n\nthe run folder: as train "
             "lfads (--resume continues DIR/ray, --overwrite replaces).")
    p.add_argument("data", nargs="*", metavar="DATA.h5", help="HDF5 file(s) as for train lfads (default: the shipped "
                   "Lorenz example)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--trials", type=_number(int, 2, 10000), default=8, help="population size")
    p.add_argument("--max-seconds", type=_number(float, 0, 1e9, lo_open=True), default=900.0,
                   help="wall-clock budget of the whole search")
    p.add_argument("--max-epochs", type=_number(int, 1, 10**6), default=None,
                   help="the search stops once every member has trained this many epochs (default: no limit; the time "
                   "budget ends the search)")
    p.add_argument("--perturbation-interval", type=_number(int, 1, 100000), default=10,
                   help="epochs per generation: every member trains this long between two exploit/explore decisions")
    p.add_argument("--address", default=None, help="join this Ray cluster ('auto' or HOST:PORT) instead of starting "
                   "a local Ray")
    p.add_argument("--cpus-per-trial", type=_number(float, 0, 1024, lo_open=True), default=1.0,
                   help="CPUs each member reserves (fractions share a core)")
    p.add_argument("--gpus-per-trial", type=_number(float, 0, 64), default=0.0,
                   help="GPUs each member reserves (e.g. 0.25: four members per GPU); > 0 trains on CUDA")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where members train: auto = "
                   "cuda when --gpus-per-trial > 0, else cpu; cuda needs --gpus-per-trial > 0 (Ray hides the GPUs "
                   "from members that reserve none)")
    p.add_argument("--seed", type=_number(int, 0, 2**32 - 1), default=0, help="seeds the population's starting "
                   "hyperparameters and each member's weights")
    p.add_argument("--batch-size", type=_number(int, 1, 10**6), default=None, help=LFADS_BATCH_HELP)
    _add_lfads_options(p, skip=SEARCH_SPACE)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue the interrupted search in DIR (DIR/ray)")
    g.add_argument("--overwrite", action="store_true", help="replace the search in DIR; the old files stay until the "
                   "new search has finished")
    p.set_defaults(fn="tune_lfads", epochs=None, lr=None, dropout=LFADSConfig.dropout, cd_rate=LFADSConfig.cd_rate,
                   kl_co_scale=LFADSConfig.kl_co_scale)


# -----------------------------------------------------------------------------
# dispatch


def _command(name):
    """ the function behind a subcommand, imported only when it runs """
    if name in ("train_lfads", "train_sparks"):
        from . import run
        return getattr(run, name)
    if name == "tune_lfads":
        from .tune import tune_lfads
        return tune_lfads
    return make_eg_data


def make_eg_data(args):
    from .synthetic import make_eg_data as make
    kw = {"raw": args.raw, "log": lambda m: print(m, file=sys.stderr)}
    for p in make(args.out, **kw) if args.out else make(**kw):
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
    fn = args.fn if callable(args.fn) else _command(args.fn)
    try:
        return fn(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:               # before training started: nothing to save
        print("error: interrupted before training started; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
