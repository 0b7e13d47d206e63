"""
Command line: the headless main job.

    python -m minilatent train lfads [DATA.h5] --out DIR [--epochs N] [--max-seconds S] [--seed K]
    python -m minilatent make-eg-data [--out FOLDER]

`train lfads` reads DATA (lfads-torch keys or original LFADS keys; default: the shipped Lorenz example),
trains LFADS with the package defaults, and writes into DIR:
    checkpoint.pt        trainer checkpoint (model, optimiser, EMA, RNG states; resumable with --resume)
    metrics.csv          one row per epoch
    loss.png, rates.png  loss curves; inferred vs true rates of a validation trial
    lfads_output.h5      lfads-torch's output layout: a copy of the input plus {train,valid}_output_params
                         (posterior-mean rates, counts per bin), _factors, _ic_mean, _ic_std, _gen_states,
                         _gen_init (and _co_means, _co_stds, _gen_inputs, _con_states with a controller)
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


def train_lfads(args):
    import numpy as np
    import torch
    from .data import load_h5, save_h5, eg_path, lfads_tensors, true_rates, rate_r2, bits_per_spike
    from .lfads import LFADS, LFADSConfig
    from .trainer import Trainer, TrainerConfig

    # --- everything that can be wrong with the input is checked before DIR is touched
    path = args.data or eg_path("lorenz")
    try:
        data = load_h5(path)
    except (KeyError, ValueError, FileNotFoundError) as e:
        raise UsageError(e.args[0] if e.args else str(e)) from None
    if args.epochs is not None and args.epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {args.epochs}")
    if args.max_seconds is not None and args.max_seconds <= 0:
        raise UsageError(f"--max-seconds must be > 0, got {args.max_seconds}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out {args.out} exists and is not a directory")
    ckpt = os.path.join(args.out, "checkpoint.pt")
    if args.resume and not os.path.exists(ckpt):
        raise UsageError(f"--resume: no checkpoint at {ckpt}")

    train, valid = lfads_tensors(data, "train"), lfads_tensors(data, "valid")
    n_neurons, n_recon = train[0].shape[2], train[1].shape[2]
    ext_dim = train[2].shape[2] if len(train) == 3 else 0
    cfg = LFADSConfig(n_neurons=n_neurons, n_recon=n_recon if n_recon != n_neurons else 0,
                      ext_input_dim=ext_dim, gen_dim=args.gen_dim, fac_dim=args.fac_dim, co_dim=args.co_dim)
    torch.manual_seed(args.seed)
    model = LFADS(cfg)
    model.init_readout_bias(train[1])
    tcfg = TrainerConfig(max_epochs=args.epochs or 200, max_seconds=args.max_seconds, seed=args.seed,
                         batch_size=args.batch_size, lr=args.lr, checkpoint_path=ckpt, progress=False)
    trainer = Trainer(model, train, valid, tcfg)
    os.makedirs(args.out, exist_ok=True)
    if args.resume:
        trainer.load_checkpoint(ckpt)
        print(f"resumed from {ckpt} at epoch {trainer.epoch}")

    print(f"data: {path}\n  train {tuple(train[0].shape)}, valid {tuple(valid[0].shape)} (trials, bins, neurons)")
    print(f"model: LFADS with {model.n_params:,} parameters; budget: "
          f"{tcfg.max_epochs} epochs" + (f" or {args.max_seconds:g} s" if args.max_seconds else ""))

    def report(tr):
        r = tr.history.rows[-1]
        print(f"epoch {r['epoch']:4d}  {r['seconds']:7.1f} s  train {r['train_recon']:.5f}  "
              f"valid {r.get('valid_recon', float('nan')):.5f}  kl_ic {r['train_kl_ic']:.2f}", flush=True)
    trainer.add_callback("on_epoch_end", report)
    t0 = time.perf_counter()
    history = trainer.fit()
    print(f"stopped after {trainer.epoch} epochs ({trainer.stop_reason}) in {time.perf_counter() - t0:.1f} s")

    # --- outputs: posterior sample-and-average, lfads-torch's output layout
    torch.set_num_threads(1)
    out = dict(data)
    results = {}
    for split, tensors in (("train", train), ("valid", valid)):
        ext = tensors[2] if len(tensors) == 3 else None
        res = model.posterior_average(tensors[0], ext_input=ext, n_samples=args.samples,
                                      n_steps=tensors[1].shape[1])
        results[split] = res
        for k, v in res.items():
            out[f"{split}_{k}"] = v.astype(np.float32)
    write_metrics_csv(os.path.join(args.out, "metrics.csv"), history.rows)
    save_figures(args.out, history, results["valid"]["output_params"], data)
    save_h5(os.path.join(args.out, "lfads_output.h5"), out)

    rates = results["valid"]["output_params"]
    bps = bits_per_spike(rates, data["valid_recon_data"])
    line = f"valid bits/spike {bps:.4f}"
    if "valid_truth" in data:
        line += f"  valid rate R2 {rate_r2(rates, true_rates(data, 'valid')):.4f}"
    print(f"wrote {args.out}/lfads_output.h5, metrics.csv, loss.png, rates.png, checkpoint.pt")
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
    lf.add_argument("data", nargs="?", help="HDF5 file (default: the shipped Lorenz example)")
    lf.add_argument("--out", required=True, help="output directory")
    lf.add_argument("--epochs", type=int, default=None, help="maximum epochs (default 200)")
    lf.add_argument("--max-seconds", type=float, default=None, help="wall-clock training budget")
    lf.add_argument("--seed", type=int, default=0)
    lf.add_argument("--batch-size", type=int, default=32)
    lf.add_argument("--lr", type=float, default=1e-2, help="peak learning rate (cosine decay)")
    lf.add_argument("--gen-dim", type=int, default=64)
    lf.add_argument("--fac-dim", type=int, default=20)
    lf.add_argument("--co-dim", type=int, default=0, help="inferred-input dimension (0: no controller)")
    lf.add_argument("--samples", type=int, default=50, help="posterior samples to average for the outputs")
    lf.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    lf.set_defaults(fn=train_lfads)
    eg = sub.add_parser("make-eg-data", help="regenerate the example datasets in eg_data/ bit for bit")
    eg.add_argument("--out", default=None, help="folder (default: the package's eg_data/)")
    eg.set_defaults(fn=make_eg_data)
    args = ap.parse_args(argv)
    try:
        return args.fn(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
