"""
Command line: the headless main job.

    python -m minilatent train lfads [DATA.h5 ...] --out DIR [--epochs N] [--max-seconds S] [--seed K]
        [--co-dim K --kl-co-scale W] [--recon poisson|gaussian|gamma|zig] [--cd-rate R] [--read-in-dim D]
    python -m minilatent train sparks [DATA.h5] --out DIR [--epochs N] [--max-seconds S] [--seed K]
    python -m minilatent make-eg-data [--out FOLDER]

`train lfads` reads DATA (lfads-torch keys or original LFADS keys; default: the shipped Lorenz example),
trains LFADS with the package defaults, and writes into DIR:
    checkpoint.pt        trainer checkpoint (model, optimiser, EMA, RNG states; resumable with --resume)
    metrics.csv          one row per epoch
    loss.png, rates.png  loss curves; inferred vs true rates of a validation trial
    lfads_output.h5      lfads-torch's output layout: a copy of the input plus {train,valid}_output_params
                         (posterior-mean rates, counts per bin), _factors, _ic_mean, _ic_std, _gen_states,
                         _gen_init (and _co_means, _co_stds, _gen_inputs, _con_states with a controller).
                         Several DATA files are several sessions: one lfads_output_<name>.h5 per session.
Bad input ends with exit code 2 and one line on stderr, before anything is written to DIR.
"""

import argparse
import csv
import io
import os
import sys
import time


class UsageError(Exception):
    """ a problem with the user's input: reported in one line, exit code 2 """


def _write_atomic(path, write_fn, mode="w"):
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, mode) as f:
            write_fn(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_metrics_csv(path, rows):
    keys = []
    for r in rows:
        keys += [k for k in r if k not in keys]

    def w(f):
        wr = csv.DictWriter(f, fieldnames=keys)
        wr.writeheader()
        wr.writerows(rows)
    _write_atomic(path, w)


def save_figures(out_dir, history, rates_valid, data):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from .widgets import plot_raster_rates
    from .data import true_rates

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    ep = history.column("epoch")
    for k, c in (("train_recon", "C0"), ("valid_recon", "C1")):
        y = history.column(k)
        ax[0].plot(ep[~np.isnan(y)], y[~np.isnan(y)], color=c, label=k)
    ax[0].set_xlabel("epoch"); ax[0].set_ylabel("Poisson NLL per bin"); ax[0].legend()
    for k in ("train_kl_ic", "train_kl_co"):
        y = history.column(k)
        if not np.all(np.isnan(y)):
            ax[1].plot(ep, y, label=k)
    ax[1].set_xlabel("epoch"); ax[1].set_ylabel("KL (nats)"); ax[1].legend()
    fig.tight_layout()
    _save_fig(fig, os.path.join(out_dir, "loss.png"))
    plt.close(fig)

    truth = true_rates(data, "valid") if "valid_truth" in data else None
    fig, ax = plt.subplots(figsize=(8, 5))
    plot_raster_rates(data["valid_recon_data"][0], None, truth[0] if truth is not None else None,
                      rates_valid[0], dt=float(data.get("dt", 0.01)), ax=ax,
                      title="validation trial 0: spikes, true (grey) and inferred (orange) rates")
    _save_fig(fig, os.path.join(out_dir, "rates.png"))
    plt.close(fig)


def _save_fig(fig, path):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    _write_atomic(path, lambda f: f.write(buf.getvalue()), mode="wb")


def check_run_args(args):
    """ the options every train subcommand shares: --epochs, --max-seconds, --out """
    if args.epochs is not None and args.epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {args.epochs}")
    if args.max_seconds is not None and args.max_seconds <= 0:
        raise UsageError(f"--max-seconds must be > 0, got {args.max_seconds}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out {args.out} exists and is not a directory")


def fit_with_progress(trainer, extra):
    """ trainer.fit() printing one line per epoch: losses, then extra(row) (the model's KL terms) """
    def report(tr):
        r = tr.history.rows[-1]
        print(f"epoch {r['epoch']:4d}  {r['seconds']:7.1f} s  train {r['train_recon']:.5f}  "
              f"valid {r.get('valid_recon', float('nan')):.5f}  {extra(r)}", flush=True)
    trainer.add_callback("on_epoch_end", report)
    t0 = time.perf_counter()
    history = trainer.fit()
    print(f"stopped after {trainer.epoch} epochs ({trainer.stop_reason}) in {time.perf_counter() - t0:.1f} s")
    return history


def train_lfads(args):
    import numpy as np
    import torch
    from .data import (load_h5, save_h5, eg_path, lfads_tensors, true_rates, rate_r2, bits_per_spike, psths,
                       pulse_timing_accuracy)
    from .lfads import LFADS, LFADSConfig, LIKELIHOODS, check_sessions
    from .trainer import Trainer, TrainerConfig

    # --- everything that can be wrong with the input is checked before DIR is touched
    paths = args.data or [eg_path("lorenz")]
    counts = args.recon == "poisson"               # other likelihoods take continuous data
    datasets = []
    for path in paths:
        try:
            datasets.append(load_h5(path, counts=counts, nonnegative=args.recon != "gaussian"))
        except (KeyError, ValueError, FileNotFoundError) as e:
            msg = e.args[0] if e.args else str(e)
            raise UsageError(msg if len(paths) == 1 else f"{path}: {msg}") from None
    check_run_args(args)
    for name, lo in (("read_in_dim", 1), ("co_dim", 0), ("samples", 0), ("ramp_epochs", 0)):
        v = getattr(args, name)
        if v is not None and v < lo:
            raise UsageError(f"--{name.replace('_', '-')} must be >= {lo}, got {v}")
    if not args.co_prior_tau > 0:
        raise UsageError(f"--co-prior-tau must be > 0, got {args.co_prior_tau}")
    if not 0 <= args.cd_rate < 1:
        raise UsageError(f"--cd-rate must be in [0, 1), got {args.cd_rate}")
    ckpt = os.path.join(args.out, "checkpoint.pt")
    if args.resume and not os.path.exists(ckpt):
        raise UsageError(f"--resume: no checkpoint at {ckpt}")

    multi = len(datasets) > 1
    names = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    if len(set(names)) < len(names):
        names = [f"{n}_{i}" for i, n in enumerate(names)]
    train = [lfads_tensors(d, "train") for d in datasets]
    valid = [lfads_tensors(d, "valid") for d in datasets]
    ext_dims = {t[2].shape[2] if len(t) == 3 else 0 for t in train}
    if len(ext_dims) > 1:
        raise UsageError(f"all sessions must have the same external inputs; ext_input dims: {sorted(ext_dims)}")
    ext_dim = ext_dims.pop()
    model_kw = dict(ext_input_dim=ext_dim, gen_dim=args.gen_dim, fac_dim=args.fac_dim, co_dim=args.co_dim,
                    ci_enc_dim=args.ci_enc_dim, con_dim=args.con_dim, ci_lag=args.ci_lag, kl_co_scale=args.kl_co_scale,
                    co_prior_tau=args.co_prior_tau, cd_rate=args.cd_rate, dropout=args.dropout, recon=args.recon,
                    zig_loc=args.zig_loc)
    if args.ramp_epochs is not None:
        model_kw.update(kl_ramp_epochs=args.ramp_epochs, l2_ramp_epochs=args.ramp_epochs)
    try:
        if multi:
            neurons = check_sessions(train, names)
            for name, d, t in zip(names, datasets, train):
                if t[1].shape[2] != t[0].shape[2]:
                    raise ValueError(f"{name}: held-out channels (recon_data wider than encod_data) need a single session")
            cfg = LFADSConfig(n_neurons=neurons[0], session_neurons=neurons,
                              read_in_dim=args.read_in_dim or args.fac_dim, **model_kw)
        else:
            n_neurons, n_recon = train[0][0].shape[2], train[0][1].shape[2]
            cfg = LFADSConfig(n_neurons=n_neurons, n_recon=n_recon if n_recon != n_neurons else 0, **model_kw)
        lik = LIKELIHOODS[cfg.recon](cfg)
        for name, d in zip(names, datasets):
            for split in ("train", "valid"):
                lik.check(torch.as_tensor(d[f"{split}_recon_data"]), f"{name}: {split}_recon_data" if multi else f"{split}_recon_data")
    except ValueError as e:
        raise UsageError(e.args[0]) from None

    torch.manual_seed(args.seed)
    model = LFADS(cfg)
    init_note = ""
    if multi:
        conds = [set(np.unique(d["train_cond_idx"]).tolist()) if "train_cond_idx" in d else None for d in datasets]
        if all(c is not None and c == conds[0] for c in conds):
            model.init_pcr([psths(d, "train") for d in datasets])
            init_note = "read-in/out initialised by PCR on the condition averages"
        else:
            init_note = "no shared condition labels (train_cond_idx): read-in/out start at random"
        for s, t in enumerate(train):
            model.init_readout_bias(t[1], session=s)
    else:
        model.init_readout_bias(train[0][1])
    tcfg = TrainerConfig(max_epochs=args.epochs or 200, max_seconds=args.max_seconds, seed=args.seed,
                         batch_size=args.batch_size, lr=args.lr, checkpoint_path=ckpt, progress=False)
    trainer = Trainer(model, train if multi else train[0], valid if multi else valid[0], tcfg)
    os.makedirs(args.out, exist_ok=True)
    if args.resume:
        trainer.load_checkpoint(ckpt)
        print(f"resumed from {ckpt} at epoch {trainer.epoch}")

    for p, name, t, v in zip(paths, names, train, valid):
        print(f"data: {p}\n  train {tuple(t[0].shape)}, valid {tuple(v[0].shape)} (trials, bins, neurons)")
    parts = [f"{cfg.recon} likelihood"] + ([f"controller with {cfg.co_dim} inferred inputs"] if cfg.co_dim else []) \
        + ([f"{len(names)} sessions, read-in dim {cfg.read_in_dim}"] if multi else [])
    print(f"model: LFADS with {model.n_params:,} parameters ({', '.join(parts)}); budget: "
          f"{tcfg.max_epochs} epochs" + (f" or {args.max_seconds:g} s" if args.max_seconds else ""))
    if init_note:
        print(init_note)

    history = fit_with_progress(trainer, lambda r: f"kl_ic {r['train_kl_ic']:.2f}"
                                + (f"  kl_co {r['train_kl_co']:.2f}" if "train_kl_co" in r else ""))

    # --- outputs: posterior sample-and-average, lfads-torch's output layout (one file per session)
    torch.set_num_threads(1)
    write_metrics_csv(os.path.join(args.out, "metrics.csv"), history.rows)
    written, lines, first_rates = [], [], None
    for s, (name, data) in enumerate(zip(names, datasets)):
        out = dict(data)
        results = {}
        for split, tensors in (("train", train[s]), ("valid", valid[s])):
            ext = tensors[2] if len(tensors) == 3 else None
            res = model.posterior_average(tensors[0], ext_input=ext, n_samples=args.samples,
                                          n_steps=tensors[1].shape[1], session=s if multi else None)
            results[split] = res
            for k, v in res.items():
                out[f"{split}_{k}"] = v.astype(np.float32)
        fname = f"lfads_output_{name}.h5" if multi else "lfads_output.h5"
        save_h5(os.path.join(args.out, fname), out)
        written.append(fname)
        rates = results["valid"]["output_params"]
        first_rates = rates if first_rates is None else first_rates
        line = (f"{name}: " if multi else "")
        if cfg.recon == "poisson":
            line += f"valid bits/spike {bits_per_spike(rates, data['valid_recon_data']):.4f}"
        else:
            line += f"valid {cfg.recon} NLL per entry {history.rows[-1].get('valid_recon', float('nan')):.5f}"
        if "valid_truth" in data:
            line += f"  valid rate R2 {rate_r2(rates, true_rates(data, 'valid')):.4f}"
        if cfg.co_dim and "valid_inputs" in data:
            acc, chance = pulse_timing_accuracy(results["valid"]["co_means"], data["valid_inputs"])
            line += f"  pulse timing accuracy {acc:.3f} (chance {chance:.3f})"
        lines.append(line)
    save_figures(args.out, history, first_rates, datasets[0])
    print(f"wrote {args.out}/{', '.join(written)}, metrics.csv, loss.png, rates.png, checkpoint.pt")
    for line in lines:
        print(line)
    return 0


def make_eg_data(args):
    from .data import make_eg_data as make
    for p in make(args.out) if args.out else make():
        print(f"wrote {p}")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m minilatent", description="minilatent command line")
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="train a model on an HDF5 dataset")
    trs = tr.add_subparsers(dest="model", required=True)
    lf = trs.add_parser("lfads", help="LFADS (lfads-torch or original LFADS HDF5 keys)")
    lf.add_argument("data", nargs="*", help="HDF5 file (default: the shipped Lorenz example); several files = several "
                    "sessions sharing the dynamics, each with its own read-in/out (outputs lfads_output_<name>.h5)")
    lf.add_argument("--out", required=True, help="output directory")
    lf.add_argument("--epochs", type=int, default=None, help="maximum epochs (default 200)")
    lf.add_argument("--max-seconds", type=float, default=None, help="wall-clock training budget")
    lf.add_argument("--seed", type=int, default=0)
    lf.add_argument("--batch-size", type=int, default=32)
    lf.add_argument("--lr", type=float, default=1e-2, help="peak learning rate (cosine decay)")
    lf.add_argument("--gen-dim", type=int, default=64)
    lf.add_argument("--fac-dim", type=int, default=20)
    lf.add_argument("--co-dim", type=int, default=0, help="inferred-input dimension (0: no controller)")
    lf.add_argument("--ci-enc-dim", type=int, default=64, help="controller-input encoder size per direction")
    lf.add_argument("--con-dim", type=int, default=64, help="controller GRU size")
    lf.add_argument("--ci-lag", type=int, default=1, help="bins the controller's forward encoding is delayed by")
    lf.add_argument("--kl-co-scale", type=float, default=1e-4, help="weight of the inferred-input KL (AR(1) prior); "
                    "1e-4 found the pulses of eg_data/chaotic_rnn_inputs.h5 in minutes, 1e-5 did not")
    lf.add_argument("--ramp-epochs", type=int, default=None, help="epochs over which the KL and L2 weights rise "
                    "to 1 (default 20; a few for short runs with a controller)")
    lf.add_argument("--co-prior-tau", type=float, default=10.0, help="initial time constant of the AR(1) prior, in "
                    "bins (learned); short (e.g. 2) for brief inputs such as one-bin pulses")
    lf.add_argument("--recon", default="poisson", choices=["poisson", "gaussian", "gamma", "zig"],
                    help="reconstruction likelihood (gaussian/gamma/zig take continuous data)")
    lf.add_argument("--zig-loc", type=float, default=0.0, help="zero-inflated Gamma: smallest nonzero value")
    lf.add_argument("--cd-rate", type=float, default=0.3, help="coordinated dropout rate (0: off)")
    lf.add_argument("--dropout", type=float, default=0.1)
    lf.add_argument("--read-in-dim", type=int, default=None, help="several sessions: read-in size (default: --fac-dim)")
    lf.add_argument("--samples", type=int, default=50, help="posterior samples to average for the outputs")
    lf.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    lf.set_defaults(fn=train_lfads)
    _add_sparks_parser(trs)
    eg = sub.add_parser("make-eg-data", help="regenerate the example datasets in eg_data/ bit for bit")
    eg.add_argument("--out", default=None, help="folder (default: the package's eg_data/)")
    eg.set_defaults(fn=make_eg_data)
    from .lessons import add_lessons_parser
    add_lessons_parser(sub)  # python -m minilatent lessons {student,instructor,html} OUT_DIR
    args = ap.parse_args(argv)
    try:
        return args.fn(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130



# -----------------------------------------------------------------------------
# SPARKS: python -m minilatent train sparks [DATA.h5] --out DIR [--epochs N] [--max-seconds S] [--seed K]
#
# DATA defaults to the shipped rotation example. Spikes are `train_encod_data` / `valid_encod_data` (binary,
# (trials, time, neurons)); with a target key (--target, default `*_latents` when present) the model learns to
# decode it (supervised, MSE), else to reconstruct the spikes (unsupervised, Bernoulli). Writes into DIR:
#     checkpoint.pt, metrics.csv, loss.png, decoding.png (target vs decoded on a validation trial, or
#     spike probabilities), sparks_output.h5 ({split}_mu, _logvar, _prediction: posterior means).
# Prints the validation R^2 of the decoded target (supervised) or bits/spike (unsupervised).


def _add_sparks_parser(trs):
    sp = trs.add_parser("sparks", help="SPARKS (Hebbian attention VAE) on binary spikes, e.g. the rotation example")
    sp.add_argument("data", nargs="?", help="HDF5 file (default: the shipped rotation example)")
    sp.add_argument("--out", required=True, help="output directory")
    sp.add_argument("--epochs", type=int, default=None, help="maximum epochs (default 30)")
    sp.add_argument("--max-seconds", type=float, default=None, help="wall-clock training budget")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--target", default=None, help="key suffix of the target to decode ('latents' -> "
                    "train_latents); default: latents when present; 'none' for unsupervised")
    sp.add_argument("--batch-size", type=int, default=10)
    sp.add_argument("--lr", type=float, default=3e-3, help="learning rate (constant)")
    sp.add_argument("--embed-dim", type=int, default=32)
    sp.add_argument("--latent-dim", type=int, default=8)
    sp.add_argument("--tau-p", type=int, default=5)
    sp.add_argument("--online", action="store_true", help="online learning: an optimiser step per bin")
    sp.set_defaults(fn=train_sparks)


def train_sparks(args):
    import numpy as np
    import torch
    from .data import load_h5, save_h5, eg_path, r2_score, bits_per_spike
    from .sparks import SPARKS, SPARKSConfig
    from .trainer import Trainer, TrainerConfig

    # --- everything that can be wrong with the input is checked before DIR is touched
    path = args.data or eg_path("rotation")
    try:
        data = load_h5(path)
    except (KeyError, ValueError, FileNotFoundError) as e:
        raise UsageError(e.args[0] if e.args else str(e)) from None
    check_run_args(args)
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
            if y.ndim < 2 or y.shape[:2] != x.shape[:2]:
                raise UsageError(f"{k}: expected shape (trials, time, ...) = {x.shape[:2]} + (...), got {y.shape}")
            if not np.isfinite(y).all():
                raise UsageError(f"{k}: contains NaN or infinite values")

    def tensors(split):
        x = torch.as_tensor(np.asarray(data[f"{split}_encod_data"], np.float32))
        if not supervised:
            return (x,)
        y = np.asarray(data[f"{split}_{target}"], np.float32)
        return x, torch.as_tensor(y.reshape(y.shape[0], y.shape[1], -1))

    train, valid = tensors("train"), tensors("valid")
    dt = float(np.asarray(data.get("dt", 0.01)))
    cfg = SPARKSConfig(n_neurons=train[0].shape[2], n_outputs=train[1].shape[2] if supervised else None,
                       embed_dim=args.embed_dim, latent_dim=args.latent_dim, tau_p=args.tau_p, dt=dt,
                       online=args.online)
    torch.manual_seed(args.seed)
    model = SPARKS(cfg)
    ckpt = os.path.join(args.out, "checkpoint.pt")
    tcfg = TrainerConfig(max_epochs=args.epochs or 30, max_seconds=args.max_seconds, seed=args.seed,
                         batch_size=args.batch_size, lr=args.lr, lr_schedule="constant", ema_decay=None,
                         grad_clip=None, checkpoint_path=ckpt, progress=False)
    trainer = Trainer(model, train, valid, tcfg)
    os.makedirs(args.out, exist_ok=True)
    print(f"data: {path}\n  train {tuple(train[0].shape)}, valid {tuple(valid[0].shape)} (trials, bins, neurons); "
          + (f"decoding '{target}' ({train[1].shape[2]} outputs)" if supervised else "unsupervised (reconstruct spikes)"))
    print(f"model: SPARKS with {model.n_params:,} parameters; budget: {tcfg.max_epochs} epochs"
          + (f" or {args.max_seconds:g} s" if args.max_seconds else ""))

    history = fit_with_progress(trainer, lambda r: f"kl {r['train_kl']:.2f}")

    out = dict(data)
    res = {}
    for split, t in (("train", train), ("valid", valid)):
        res[split] = model.predict(t[0])
        for k in ("mu", "logvar", "prediction"):
            out[f"{split}_{k}"] = res[split][k].astype(np.float32)
    write_metrics_csv(os.path.join(args.out, "metrics.csv"), history.rows)
    _sparks_figures(args.out, history, res["valid"]["now"], valid, supervised, dt)
    save_h5(os.path.join(args.out, "sparks_output.h5"), out)
    if supervised:
        line = f"valid decoding R2 {r2_score(res['valid']['now'], valid[1].numpy()):.4f}"
    else:
        line = f"valid bits/spike {bits_per_spike(res['valid']['now'], valid[0].numpy()):.4f}"
    print(f"wrote {args.out}/sparks_output.h5, metrics.csv, loss.png, decoding.png, checkpoint.pt")
    print(line)
    return 0


def _sparks_figures(out_dir, history, pred_valid, valid, supervised, dt):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ep = history.column("epoch")
    for k in ("train_recon", "valid_recon"):
        y = history.column(k)
        ax.plot(ep[~np.isnan(y)], y[~np.isnan(y)], label=k)
    ax.set_xlabel("epoch"); ax.set_ylabel("loss per bin"); ax.legend()
    fig.tight_layout()
    _save_fig(fig, os.path.join(out_dir, "loss.png"))
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
    _save_fig(fig, os.path.join(out_dir, "decoding.png"))
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
