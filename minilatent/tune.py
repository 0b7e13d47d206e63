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

The metric. Members differ in their KL and L2 weights, so their total losses are not comparable;
like AutoLFADS we rank them by the validation reconstruction loss (the likelihood term alone, with
coordinated dropout off), exponentially smoothed over epochs ('valid_recon_smth').

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

import csv
import json
import math
import os
import shutil
import tempfile
import time

import numpy as np
import torch

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
    model.init_readout_bias(train[1])
    tcfg = TrainerConfig(**{**setup["trainer_kw"], "lr": hps["lr"], "lr_schedule": "constant",
                            "seed": setup["seed"] + config["member"], "monitor": "recon", "progress": False,
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
        recon = float(row.get("valid_recon", math.nan))
        meta["smooth"] = recon if meta["smooth"] is None or not math.isfinite(meta["smooth"]) \
            else SMOOTHING * meta["smooth"] + (1 - SMOOTHING) * recon
        metrics = {METRIC: meta["smooth"], "valid_recon": recon, "epoch": row["epoch"],
                   "train_recon": float(row.get("train_recon", math.nan)), "exploits": meta["exploits"],
                   "parent": meta["lineage"][-2] if len(meta["lineage"]) > 1 else "", **hps}
        if row["epoch"] % setup["checkpoint_every"]:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            tr.save_checkpoint(os.path.join(d, "checkpoint.pt"))
            with open(os.path.join(d, "member.json"), "w") as f:
                json.dump(meta, f)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    trainer.add_callback("on_epoch_end", report)
    trainer.fit()


# -----------------------------------------------------------------------------
# the search


def run_pbt(train, valid, model_kw, out_dir, trials=8, max_seconds=600.0, seed=0, trainer_kw=None,
            perturbation_interval=4, cpus_per_trial=1.0, gpus_per_trial=0.0, address=None, num_cpus=None,
            resume=False, verbose=0):
    """ Run AutoLFADS-style PBT. train/valid: tuples of tensors as the Trainer takes them (one session).
    model_kw: LFADSConfig fields that are not searched (sizes, likelihood, ...). Returns the Ray
    ResultGrid; results and Ray's state live in out_dir/ray. """
    ray, tune = require_ray()
    from ray.tune.schedulers import PopulationBasedTraining

    names = searched_names(model_kw.get("co_dim", 0))
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=bool(verbose))
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=bool(verbose),
                     configure_logging=bool(verbose))
    # members checkpoint at each perturbation point (when PBT may copy them); Ray keeps the last few
    setup = {"train": train, "valid": valid, "model_kw": model_kw, "seed": seed,
             "checkpoint_every": perturbation_interval,
             "trainer_kw": {"max_epochs": 10 ** 6, **(trainer_kw or {})}}
    trainable = tune.with_resources(tune.with_parameters(_member, setup=setup),
                                    {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
    storage = os.path.abspath(out_dir)
    exp_dir = os.path.join(storage, "ray")
    if resume:
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
    pbt = PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=perturbation_interval,
                                  hyperparam_mutations=mutations, quantile_fraction=0.25,
                                  resample_probability=0.25, custom_explore_fn=clip_config, synch=False)
    tuner = tune.Tuner(
        trainable,
        # the member index is grid-searched; each member's starting hyperparameters follow from it
        param_space={"member": tune.grid_search(list(range(trials))),
                     **{k: tune.sample_from(_starter(starts, k)) for k in names}},
        tune_config=tune.TuneConfig(metric=METRIC, mode="min", scheduler=pbt, time_budget_s=max_seconds,
                                    reuse_actors=False),
        run_config=tune.RunConfig(name="ray", storage_path=storage, verbose=verbose,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=4)),
    )
    return tuner.fit()


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
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_trials_csv(rows, path):
    keys = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


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
