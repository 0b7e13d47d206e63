"""
Hyperparameter search for LFADS by population-based training (PBT) on Ray Tune, as in AutoLFADS.

This file has one job: run a population of LFADS models, each trained by the unchanged generic
`Trainer`, and let Ray Tune's PBT scheduler copy the weights of good members into poor ones
(exploit) and perturb their hyperparameters (explore). The model files and the trainer know nothing
of Ray; Ray is an optional extra (`pip install minilatent[tune]`).

References
- Jaderberg et al. (2017) "Population based training of neural networks".
- Keshtkaran, Sedler et al. (2022) "A large-scale neural network training framework for generalized
  estimation of single-trial population dynamics", Nature Methods (AutoLFADS).
- Liaw et al. (2018) "Tune: a research platform for distributed model selection and training".

How a member trains. Each member is a Ray Tune function trainable: it builds LFADS from the data and
its hyperparameters, wraps it in `Trainer`, and, through the trainer's `on_epoch_end` callback,
writes a trainer checkpoint and reports the validation metric after every epoch. When PBT decides
that a member in the bottom quantile should exploit one in the top quantile, Ray restarts the member
with the donor's checkpoint and a perturbed config: the member loads the weights, optimiser and EMA
state, applies its new hyperparameters, and continues. Checkpoints go through Ray's own checkpoint
API, so a search interrupted by Ctrl-C or a lost node resumes with `--resume`.

Generations. As in AutoLFADS, the population moves in generations (Ray's synchronous PBT): every
`perturbation_interval` epochs all members stop, are ranked together, and the bottom quarter takes the
weights and perturbed hyperparameters of the top quarter. (Asynchronous PBT ranks each member against
the others' stale scores, and a member it copies may not have saved at its own last decision; in a small
population on a busy machine it then skipped every exploit.) A search ends at its time budget, or
when every member has trained `--max-epochs`.

The metric. Members differ in their KL and L2 weights, so their total losses are not comparable;
like AutoLFADS we rank them by the validation reconstruction loss (the likelihood term alone, with
coordinated dropout off), exponentially smoothed over epochs ('valid_recon_smth'). With held-out neurons it is
the reconstruction of the held-in neurons alone: co-bps scores the held-out neurons of these validation trials,
so they must not pick the winner (as in train lfads).

The search space (SEARCH_SPACE below). AutoLFADS searched the learning rate, dropout and
coordinated-dropout rates and the KL and L2 weights; the ranges are the paper's, in this package's
loss convention (reconstruction as a mean per entry, KL summed over latent dimensions and averaged
over trials, L2 as 0.5 |W|^2 per recurrent weight: the same convention as lfads-torch), with two
deviations, each so that the package's defaults lie inside the range: the learning rate reaches up to
2e-2 (this package trains with batches of 32 at 1e-2; AutoLFADS used larger batches at <= 5e-3), and
kl_ic_scale reaches down to 1e-7 (the package default is 1e-6). The population's first member starts
from the package defaults; the others are drawn from the space. Exploration multiplies a value by 0.8
or 1.2 (Ray's default) or, with probability 0.25, resamples it, and clips it to the range.
"""

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import fields as dataclass_fields

import numpy as np
import torch

from . import run
from .files import RunFolder, RunFolderError, write_csv, write_figure, write_json, write_torch

# name: (low, high, log-scale?, which config holds it)
SEARCH_SPACE = {
    "lr":           (1e-5, 2e-2, True,  "trainer"),
    "dropout":      (0.0,  0.6,  False, "model"),
    "cd_rate":      (0.01, 0.7,  False, "model"),
    "kl_ic_scale":  (1e-7, 1e-3, True,  "model"),
    "kl_co_scale":  (1e-6, 1e-4, True,  "model"),
    "l2_gen_scale": (1e-4, 1.0,  True,  "model"),
    "l2_con_scale": (1e-4, 1.0,  True,  "model"),
}
METRIC = "valid_recon_smth"
SMOOTHING = 0.7          # weight of the previous smoothed value in the metric's exponential smoothing


def require_ray():
    """ import Ray Tune, or raise ImportError with one line naming the extra to install """
    try:
        import ray
        from ray import tune
    except ImportError:
        raise ImportError("hyperparameter search needs Ray Tune: pip install 'minilatent[tune]'") from None
    return ray, tune


def start_ray(address=None, num_cpus=None, verbose=0):
    """ Join the Ray cluster at address, or start a local Ray with num_cpus (default: this machine's cores). """
    ray, _ = require_ray()
    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if address:
        ray.init(address=address, log_to_driver=bool(verbose))
        return ray
    for attempt in (1, 2):     # a raylet that misses Ray's 30 s start-up deadline on a loaded machine: try once more
        try:
            ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=bool(verbose),
                     configure_logging=bool(verbose))
            return ray
        except Exception as e:
            if attempt == 2 or "timed out during startup" not in str(e):
                raise
            ray.shutdown()


def searched_names(co_dim):
    """ the hyperparameters searched for a model with (co_dim > 0) or without a controller """
    skip = set() if co_dim else {"kl_co_scale", "l2_con_scale"}
    return [k for k in SEARCH_SPACE if k not in skip]


def sample_config(rng, names):
    """ one random point of the search space (numpy Generator rng) """
    out = {}
    for k in names:
        lo, hi, log, _ = SEARCH_SPACE[k]
        out[k] = float(math.exp(rng.uniform(math.log(lo), math.log(hi))) if log else rng.uniform(lo, hi))
    return out


def clip_config(config):
    """ PBT's explore step may leave the range: clip each searched value back into it """
    out = dict(config)
    for k, (lo, hi, _, _) in SEARCH_SPACE.items():
        if k in out:
            out[k] = float(min(max(out[k], lo), hi))
    return out


# -----------------------------------------------------------------------------
# one member of the population: a Ray Tune function trainable around the generic Trainer


def _member(config, setup=None):
    """ Train one LFADS population member, reporting the smoothed validation metric every epoch. """
    from ray import tune
    from .lfads import LFADS, LFADSConfig
    from .trainer import Trainer, TrainerConfig

    hps = {k: config[k] for k in SEARCH_SPACE if k in config}
    model_hps = {k: v for k, v in hps.items() if SEARCH_SPACE[k][3] == "model"}
    torch.manual_seed(setup["seed"] + config["member"])
    model = LFADS(LFADSConfig(**{**setup["model_kw"], **model_hps}))
    train, valid = setup["train"], setup["valid"]
    setup["init_fn"](model)
    heldout = all(s[1].shape[-1] > s[0].shape[-1] for s in (valid if isinstance(valid, list) else [valid]))
    key = "recon_heldin" if heldout else "recon"                 # the metric (module docstring)
    tcfg = TrainerConfig(**{**setup["trainer_kw"], "lr": hps["lr"], "lr_schedule": "constant",
                            "seed": setup["seed"] + config["member"], "monitor": key, "progress": False,
                            "checkpoint_path": None})
    trainer = Trainer(model, train, valid, tcfg)
    trial_id = tune.get_context().get_trial_id()
    meta = {"smooth": None, "lineage": [trial_id], "exploits": 0}
    ck = tune.get_checkpoint()
    if ck is not None:
        with ck.as_directory() as d:
            trainer.load_checkpoint(os.path.join(d, "checkpoint.pt"))
            with open(os.path.join(d, "member.json")) as f:
                meta = json.load(f)
        if meta["lineage"][-1] != trial_id:          # restored from another member: an exploit
            meta["lineage"].append(trial_id)
            meta["exploits"] += 1

    def report(tr):
        row = tr.history.rows[-1]
        recon = float(row.get(f"valid_{key}", math.nan))
        meta["smooth"] = recon if meta["smooth"] is None or not math.isfinite(meta["smooth"]) \
            else SMOOTHING * meta["smooth"] + (1 - SMOOTHING) * recon
        metrics = {METRIC: meta["smooth"], "valid_recon": float(row.get("valid_recon", math.nan)), "epoch": row["epoch"],
                   "train_recon": float(row.get("train_recon", math.nan)), "exploits": meta["exploits"],
                   "parent": meta["lineage"][-2] if len(meta["lineage"]) > 1 else "", **hps}
        if row["epoch"] % setup["checkpoint_every"] and row["epoch"] > 1:   # the first epoch too: a member
            # always has something to be judged and copied by
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            tr.save_checkpoint(os.path.join(d, "checkpoint.pt"))
            write_json(os.path.join(d, "member.json"), meta)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    trainer.add_callback("on_epoch_end", report)
    trainer.fit()


# -----------------------------------------------------------------------------
# the search


def run_pbt(train, valid, model_kw, out_dir, trials=8, max_seconds=600.0, seed=0, trainer_kw=None,
            perturbation_interval=4, cpus_per_trial=1.0, gpus_per_trial=0.0, address=None, num_cpus=None,
            resume=False, verbose=0, init_fn=None, max_epochs=None):
    """ Run AutoLFADS-style PBT. train/valid: tuples of tensors as the Trainer takes them (one session).
    model_kw: LFADSConfig fields that are not searched (sizes, likelihood, ...). Returns the Ray
    ResultGrid; results and Ray's state live in out_dir/ray. """
    ray, tune = require_ray()

    names = searched_names(model_kw.get("co_dim", 0))
    start_ray(address, num_cpus, verbose)
    if init_fn is None:                     # one session: start the read-out bias at the mean rates
        init_fn = lambda model: model.init_readout_bias(train[1])
    setup = {"train": train, "valid": valid, "model_kw": model_kw, "seed": seed, "init_fn": init_fn,
             "checkpoint_every": perturbation_interval,
             "trainer_kw": {"max_epochs": 10 ** 6, "num_threads": 1, "keep_freed_memory": True,
                            **(trainer_kw or {})}}
    trainable = tune.with_resources(tune.with_parameters(_member, setup=setup),
                                    {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
    storage = os.path.abspath(out_dir)
    exp_dir = os.path.join(storage, "ray")
    if resume:
        _pbt_class(), _stopper_class()      # the classes of the saved state, for unpickling it
        tuner = tune.Tuner.restore(exp_dir, trainable=trainable, resume_unfinished=True, resume_errored=True)
        return tuner.fit()

    from .lfads import LFADSConfig
    defaults = LFADSConfig(n_neurons=1)
    from .trainer import TrainerConfig
    first = {k: float(getattr(defaults, k) if SEARCH_SPACE[k][3] == "model"
                      else (trainer_kw or {}).get("lr", TrainerConfig().lr)) for k in names}
    rng = np.random.default_rng(seed)
    starts = [first] + [sample_config(rng, names) for _ in range(trials - 1)]
    starts = [clip_config({**s, "member": i}) for i, s in enumerate(starts)]
    mutations = {k: (tune.loguniform(*SEARCH_SPACE[k][:2]) if SEARCH_SPACE[k][2]
                     else tune.uniform(*SEARCH_SPACE[k][:2])) for k in names}
    pbt = _pbt_class()(time_attr="training_iteration", perturbation_interval=perturbation_interval,
                       hyperparam_mutations=mutations, quantile_fraction=0.25,
                       resample_probability=0.25, custom_explore_fn=clip_config, synch=True)
    tuner = tune.Tuner(
        trainable,
        # the member index is grid-searched; each member's starting hyperparameters follow from it
        param_space={"member": tune.grid_search(list(range(trials))),
                     **{k: tune.sample_from(_starter(starts, k)) for k in names}},
        tune_config=tune.TuneConfig(metric=METRIC, mode="min", scheduler=pbt, time_budget_s=max_seconds,
                                    reuse_actors=False),
        run_config=tune.RunConfig(name="ray", storage_path=storage, verbose=verbose,
                                  stop=_stopper_class()(trials, max_epochs) if max_epochs else None,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=4)),
    )
    return tuner.fit()


def _pbt_class():
    """ Ray's PBT with one fix: an exploiting member restarts from a copy of the checkpoint it clones. """
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining

    class PBT(PopulationBasedTraining):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.copies = {}                  # trial id -> the copied checkpoint it restarts from

        def on_trial_result(self, tune_controller, trial, result):
            self._drop_copy(trial)
            return super().on_trial_result(tune_controller, trial, result)

        def _exploit(self, tune_controller, trial, trial_to_clone):
            # The member restarts from the cloned checkpoint only once a new process has started, while the member
            # it clones trains on and Ray deletes its older checkpoints (num_to_keep; with PBT's extra saves Ray
            # sometimes deletes one it still points to). Restarting from a deleted checkpoint fails the member
            # ("does not exist on storage anymore"; seen on a loaded machine), so it gets a copy of its own,
            # deleted once it has saved a newer checkpoint.
            state = self._trial_state[trial_to_clone]
            orig = state.last_checkpoint
            src = getattr(orig, "path", None)
            if src and os.path.isdir(src):
                dst = os.path.join(os.path.dirname(os.path.dirname(src)), "exploited",
                                   f"{trial.trial_id}_{self._num_perturbations}")
                shutil.copytree(src, dst, dirs_exist_ok=True)
                state.last_checkpoint = tune.Checkpoint.from_directory(dst)
                self._drop_copy(trial, force=True)
                self.copies[trial.trial_id] = dst
            try:
                super()._exploit(tune_controller, trial, trial_to_clone)
            finally:
                state.last_checkpoint = orig

        def _drop_copy(self, trial, force=False):
            dst = self.copies.get(trial.trial_id)
            ck = trial.checkpoint
            if dst and (force or (ck is not None and getattr(ck, "path", None) != dst)):
                shutil.rmtree(dst, ignore_errors=True)
                del self.copies[trial.trial_id]
    # a module-level name, so that Ray's saved experiment state (pickled) finds the class when a search resumes
    PBT.__name__ = PBT.__qualname__ = "_RayPBT"
    globals()["_RayPBT"] = PBT
    return PBT


def _stopper_class():
    """ --max-epochs: the whole population stops once every member has trained that many epochs. Members never stop
    one by one: in Ray's synchronous PBT a finished member leaves the others paused forever, waiting for it to reach
    the end of the generation (seen with Ray 2.60). """
    from ray.tune import Stopper

    class EpochStopper(Stopper):
        def __init__(self, members, max_epochs):
            self.members, self.max_epochs, self.epochs = members, max_epochs, {}

        def __call__(self, trial_id, result):
            self.epochs[trial_id] = max(self.epochs.get(trial_id, 0), result.get("epoch", 0))
            return False

        def stop_all(self):
            return len(self.epochs) >= self.members and min(self.epochs.values()) >= self.max_epochs
    EpochStopper.__name__ = EpochStopper.__qualname__ = "_RayEpochStopper"
    globals()["_RayEpochStopper"] = EpochStopper
    return EpochStopper


def _starter(starts, key):
    return lambda config: starts[config["member"]][key]


# -----------------------------------------------------------------------------
# what a search leaves behind: the table of all members, a plot, the best member


def trial_rows(results):
    """ one row per member per epoch: trial id, epoch, seconds, metric, exploits, parent, hyperparameters """
    rows = []
    for r in results:
        df = r.metrics_dataframe
        if df is None or len(df) == 0:
            continue
        for rec in df.to_dict("records"):
            row = {"trial_id": rec.get("trial_id"), "epoch": rec.get("epoch"), "seconds": rec.get("time_total_s"),
                   METRIC: rec.get(METRIC), "valid_recon": rec.get("valid_recon"),
                   "train_recon": rec.get("train_recon"), "exploits": rec.get("exploits"),
                   "parent": rec.get("parent") or ""}
            row.update({k: rec[k] for k in SEARCH_SPACE if k in rec})
            rows.append(row)
    return rows


def count_exploits(exp_dir):
    """ how many exploit steps PBT took (Ray logs one line per exploit in pbt_global.txt) """
    try:
        with open(os.path.join(exp_dir, "pbt_global.txt")) as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return 0


def best_result(results):
    """ the member whose last smoothed validation metric is lowest (errored members count with what they reported) """
    best = None
    for r in results:
        m = (r.metrics or {}).get(METRIC)
        if m is not None and math.isfinite(m) and r.checkpoint is not None and (best is None or m < best.metrics[METRIC]):
            best = r
    if best is None:
        raise RuntimeError("no population member reported a finite validation metric with a checkpoint: "
                           "give the search more time (--max-seconds) or check the data")
    return best


def plot_population(rows, path):
    """ the population's smoothed validation metric over wall time, one line per member, exploits marked """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, tid in enumerate(sorted({r["trial_id"] for r in rows})):
        rs = [r for r in rows if r["trial_id"] == tid]
        ax.plot([r["seconds"] for r in rs], [r[METRIC] for r in rs], color=f"C{i % 10}", lw=1, label=tid)
        ex = [r for j, r in enumerate(rs) if j and r["exploits"] != rs[j - 1]["exploits"]]
        ax.plot([r["seconds"] for r in ex], [r[METRIC] for r in ex], "v", color=f"C{i % 10}", ms=5)
    ax.set_xlabel("seconds of training (per member)")
    ax.set_ylabel("smoothed validation reconstruction loss")
    ax.set_title("PBT population (triangles: a member copied a better one)")
    if len(ax.lines) <= 32:
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    write_figure(fig, path)
    plt.close(fig)


def load_best(best, model_kw, device="cpu"):
    """ (model in eval mode with the member's best validated weights, its searched hyperparameters, checkpoint dict) """
    from .lfads import LFADS, LFADSConfig
    hps = {k: best.config[k] for k in SEARCH_SPACE if k in best.config}
    model = LFADS(LFADSConfig(**{**model_kw, **{k: v for k, v in hps.items() if SEARCH_SPACE[k][3] == "model"}}))
    with best.checkpoint.as_directory() as d:
        ck = torch.load(os.path.join(d, "checkpoint.pt"), map_location=device, weights_only=True)
    model.load_state_dict(ck["final_model"])
    model.eval()
    return model, hps, ck


# -----------------------------------------------------------------------------
# the command: python -m minilatent tune lfads [DATA ...] --out DIR --trials N --max-seconds S ... (parsed in
# __main__.py); the inputs, the model, the run folder and the outputs are run.py's, as for train lfads

TUNE_FILES = ("best_config.json", "trials.csv", "pbt.png", "best", "ray", "run.json")
FREE_OPTIONS = ("max_seconds", "samples")       # what a resumed search may change


def search_options(args, inp):
    """ what a resumed search must share with the stored one """
    from .lfads import LFADSConfig
    keep = ["trials", "max_epochs", "perturbation_interval", "seed", "batch_size", "ramp_epochs", "read_in_dim",
            "truth_units", "samples", "max_seconds"]
    out = {k: getattr(args, k) for k in keep}
    out.update({f.name: getattr(args, f.name) for f in dataclass_fields(LFADSConfig)
                if hasattr(args, f.name) and f.name not in SEARCH_SPACE})
    out["data"] = run.fingerprint([x for t in inp["train"] + inp["valid"] for x in t])
    return out


@run.one_thread                                     # the best member's posterior average and evaluation too
def tune_lfads(args):
    """ `python -m minilatent tune lfads`: check everything, search, write the best member's outputs. """
    from .trainer import History
    try:
        ray, _ = require_ray()
    except ImportError as e:
        raise run.UsageError(str(e)) from None
    if args.gpus_per_trial > 0 and not torch.cuda.is_available() and not args.address:
        raise run.UsageError("--gpus-per-trial > 0 but torch sees no CUDA GPU on this machine (with --address the "
                             "cluster's GPUs count)")
    if args.device == "cuda" and args.gpus_per_trial == 0:
        raise run.UsageError("--device cuda needs --gpus-per-trial > 0 (e.g. 0.25: four members share a GPU)")
    if args.device == "cpu" and args.gpus_per_trial > 0:
        raise run.UsageError("--device cpu with --gpus-per-trial > 0 would reserve GPUs that no member uses")
    inp = run.read_lfads_inputs(args)                    # the same checks as train lfads
    model, _ = run.build_lfads(args, inp)                # options the data cannot take fail here, before DIR
    base_kw = {f.name: getattr(model.cfg, f.name) for f in dataclass_fields(model.cfg) if f.name not in SEARCH_SPACE}
    folder, staged = run.plan_folder(args, RunFolder(args.out, files=TUNE_FILES, state=("ray",)), staged_resume=False)
    options = search_options(args, inp)
    if args.resume:
        stored = os.path.join(folder.final("ray"), "minilatent_options.json")
        try:
            with open(stored) as f:
                old = json.load(f)
        except (OSError, ValueError):
            raise run.UsageError(f"--resume: {stored} is missing or unreadable: start again with --overwrite") from None
        diffs = run.option_diffs(old, options, free=FREE_OPTIONS, where="stored")
        if diffs:
            raise run.UsageError(f"--resume: options differ from the stored search: {'; '.join(diffs)}")
    try:                                                  # before DIR is touched
        start_ray(args.address)
    except Exception as e:
        raise run.RunFailed(f"could not {'join the Ray cluster at ' + args.address if args.address else 'start a local Ray'}"
                            f": {run.first_line(e)}; nothing was written") from None
    try:
        folder.open(staged)
    except RunFolderError as e:
        raise run.UsageError(str(e)) from None
    ray_dir = folder.file("ray")
    try:
        write_json(os.path.join(ray_dir, "minilatent_options.json"), options)
        multi = inp["multi"]
        train = inp["train"] if multi else inp["train"][0]
        valid = inp["valid"] if multi else inp["valid"][0]
        device = "cuda" if args.gpus_per_trial > 0 else "cpu"
        print(f"PBT: {args.trials} members, {args.max_seconds:g} s, perturbation every {args.perturbation_interval} "
              f"epochs, {args.cpus_per_trial:g} CPU + {args.gpus_per_trial:g} GPU per member; "
              f"Ray {'at ' + args.address if args.address else 'local'}", flush=True)
        elapsed_file = os.path.join(ray_dir, "minilatent_elapsed.json")
        before = _read_elapsed(elapsed_file) if args.resume else 0.0
        t0 = time.time()
        try:
            results = run_pbt(train, valid, base_kw, os.path.dirname(ray_dir), trials=args.trials,
                              max_seconds=args.max_seconds, seed=args.seed,
                              trainer_kw={"batch_size": args.batch_size, "device": device},
                              max_epochs=args.max_epochs, perturbation_interval=args.perturbation_interval,
                              cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
                              address=args.address, resume=args.resume, init_fn=run.lfads_initialiser(inp)[0])
            errors = list(results.errors)
            if errors and len(errors) == len(results):
                raise run.RunFailed(f"every population member failed; the last line of the first error: "
                                    f"{str(errors[0]).strip().splitlines()[-1][:200]}; Ray's state is in {ray_dir}")
            # members train until the time budget runs out or each has trained --max-epochs; a search that ended
            # before either was stopped (Ctrl-C, SIGTERM): Ray has saved its state, and nothing that looks finished
            # is written
            spent = before + time.time() - t0 >= 0.9 * args.max_seconds     # Ray's budget counts over resumes
            trained = bool(args.max_epochs) and all(
                r.metrics and r.metrics.get("epoch", 0) >= args.max_epochs for r in results if r.error is None)
            interrupted = not (spent or trained)
        except KeyboardInterrupt:
            interrupted = True
        write_json(elapsed_file, {"seconds": before + time.time() - t0})
        if interrupted:
            where = (f"{args.out} still holds the previous search, untouched" if staged else
                     f"its state is in {ray_dir}: continue it with the same command plus --resume")
            print(f"error: the search was interrupted after {time.time() - t0:.0f} s; {where}", file=sys.stderr)
            return 130
        rows = trial_rows(results)
        try:
            best = best_result(results)
        except RuntimeError as e:
            raise run.RunFailed(f"{e}; Ray's state is in {ray_dir}") from None
        model, hps, ck = load_best(best, base_kw)
        write_csv(folder.file("trials.csv"), rows)
        plot_population(rows, folder.file("pbt.png"))
        n_exploits = count_exploits(ray_dir)
        summary = {"metric": METRIC, "value": best.metrics[METRIC], "trial_id": best.metrics.get("trial_id"),
                   "epoch": ck["epoch"], "hyperparameters": hps, "model_config": base_kw,
                   "trainer": {"batch_size": args.batch_size, "lr_schedule": "constant", "lr": hps["lr"]},
                   "exploits": n_exploits, "members": len(results)}
        write_json(folder.file("best_config.json"), summary)
        best_dir = folder.file("best")
        write_torch(ck, os.path.join(best_dir, "checkpoint.pt"))
        print(f"best member {summary['trial_id']}: {METRIC} {summary['value']:.5f} at epoch {ck['epoch']}, "
              + ", ".join(f"{k} {v:.3g}" for k, v in hps.items()) + f"; {n_exploits} exploits in the population")
        best_args = argparse.Namespace(**{**vars(args), "out": os.path.join(args.out, "best")})
        written = run.write_lfads_outputs(best_args, lambda name: os.path.join(best_dir, name), inp, model,
                                          History(list(ck["history"])))
        folder.finish({"command": "tune lfads", "finished": True, **summary, "best_results": written["results"]})
    finally:
        folder.release()
        if ray.is_initialized() and not args.address:
            ray.shutdown()
    return 0


def _read_elapsed(path):
    """ seconds the earlier runs of a resumed search took (0 where no file says) """
    try:
        with open(path) as f:
            return float(json.load(f)["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0
