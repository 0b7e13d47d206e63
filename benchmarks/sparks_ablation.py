"""
SPARKS: which of the differences from sparks-ai 0.2.1 change how well the model trains? An ablation on the
benchmark's data (make_rotation(): 100 Bernoulli neurons, 80 train / 20 test trials x 150 bins of 10 ms,
supervised decoding of the 2-D rotation), 10 epochs, batch 10, one torch thread, test R^2 of the posterior mean.

Every variant starts from SPARKSConfig(n_neurons=100, n_outputs=2) with the optimiser of the row ('ref opt' =
the reference's: Adam lr 1e-3, betas (0.9, 0.999), no clipping) and changes one thing:

    base           sparks.py as it is
    lr 3e-3        learning rate 3e-3 (the CLI's default)
    beta/8         the KL weighted as sparks-ai weights it: it averages the KL over the 8 latent dimensions where
                   sparks.py sums, so the same beta is 8x weaker there
    init sqrt(1/N) log-w spread sqrt(1/N) = 0.1 (sparks-ai) instead of 1/N = 0.01
    V init linear  V and its bias as nn.Linear(N, D) starts them (uniform +-1/sqrt(N)), as sparks-ai does,
                   instead of randn/sqrt(N) and zero bias
    FF glu         sparks-ai's block after the attention: output projection Linear(D, D) (also with one head)
                   and RMSNorm-Linear-GLU-Linear-GLU (no biases) instead of Linear-ReLU-Linear
    clip value     sparks-ai's gradient clipping (each gradient value to +-0.5 of its loss, which sums over the
                   150 bins where ours averages: +-0.5/150 here)
    layers post    one conventional self-attention block, PyTorch's post-norm nn.TransformerEncoderLayer (ours)
    layers pre     one conventional block as sparks-ai builds it (LayerNorm first, then attention and the GLU
                   feed-forward, each with a residual)
    cfg:KEY=VALUE  any SPARKSConfig field (VALUE in JSON), e.g. cfg:w_start=0.1
    train:KEY=VALUE  with --cli: any TrainerConfig field, e.g. train:batch_size=10

    python benchmarks/sparks_ablation.py [--seeds 3] [--epochs 10] [--variants base,beta/8,...] [--out FILE.jsonl]
    python benchmarks/sparks_ablation.py --cli --variants "base,train:batch_size=10,cfg:embed_dim=16"

--cli trains every variant as `train sparks` does instead (the generic Trainer: AdamW with weight decay 0, betas
0.9/0.99, the CLI's constant learning rate and batch size, no clipping or EMA), which is how the CLI's defaults
were chosen.

Prints one line per run and a table of medians (test R^2, CPU s per epoch). Each variant runs in its own process.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VARIANTS = ["base", "lr 3e-3", "beta/8", "init sqrt(1/N)", "V init linear", "FF glu", "clip value",
            "layers post", "layers pre"]


def build(variant, n_neurons, n_outputs, seed):
    import torch
    import torch.nn as nn
    sys.path.insert(0, ROOT)
    from minilatent.sparks import SPARKS, SPARKSConfig
    torch.manual_seed(seed)
    parts = set(variant.split("+"))
    over = {k: json.loads(v) for k, v in (p[4:].split("=") for p in parts if p.startswith("cfg:"))}
    cfg = SPARKSConfig(n_neurons=n_neurons, n_outputs=n_outputs, n_layers=1 if parts & {"layers post", "layers pre"} else 0,
                       **over)
    if "beta/8" in parts:
        cfg.beta = cfg.beta / cfg.latent_dim
    model = SPARKS(cfg)
    D, N = cfg.embed_dim, n_neurons
    g = torch.Generator().manual_seed(1000 + seed)
    for blk in model.blocks:
        att = blk.attn
        with torch.no_grad():
            if "init sqrt(1/N)" in parts:
                att.log_wpre.copy_(math.log(cfg.w_start) + math.sqrt(1 / N) * torch.randn(att.log_wpre.shape, generator=g))
                att.log_wpost.copy_(math.log(cfg.w_start * cfg.alpha) + math.sqrt(1 / N) * torch.randn(att.log_wpost.shape, generator=g))
            if "V init linear" in parts:
                att.value.uniform_(-1 / math.sqrt(N), 1 / math.sqrt(N), generator=g)
                att.value_bias.uniform_(-1 / math.sqrt(N), 1 / math.sqrt(N), generator=g)
        if "FF glu" in parts or "layers pre" in parts:
            blk.proj = nn.Linear(D, D)
            blk.ff = glu_ff(D)
    if "layers pre" in parts:
        model.layers = nn.ModuleList([PreNormBlock(D, cfg.n_heads)])
    return model


def glu_ff(D):
    import torch.nn as nn
    return nn.Sequential(nn.RMSNorm(D), nn.Linear(D, 2 * D, bias=False), nn.GLU(), nn.Linear(D, 2 * D, bias=False), nn.GLU())


def PreNormBlock(D, n_heads):
    import torch.nn as nn

    class _Block(nn.Module):
        """ sparks-ai's conventional block: x = LN(x); x = attn(x) + x; x = ff(x) + x """

        def __init__(self):
            super().__init__()
            self.norm, self.attn, self.ff = nn.LayerNorm(D), nn.MultiheadAttention(D, n_heads, batch_first=True), glu_ff(D)

        def forward(self, x):
            x = self.norm(x)
            x = self.attn(x, x, x, need_weights=False)[0] + x
            return self.ff(x) + x
    return _Block()


def run_cli(variant, seed, epochs, xtr, ytr):
    """ train as `train sparks` does (its defaults, with train:KEY=VALUE overrides); returns the model, the median
    CPU s per epoch and the learning rate """
    sys.path.insert(0, ROOT)
    from minilatent.__main__ import build_parser
    from minilatent.trainer import Trainer, TrainerConfig
    cli = build_parser().parse_args(["train", "sparks", "--out", "unused"])
    over = {k: json.loads(v) for k, v in (p[6:].split("=") for p in variant.split("+") if p.startswith("train:"))}
    kw = dict(max_epochs=epochs, batch_size=cli.batch_size, lr=cli.lr, lr_schedule="constant", ema_decay=None,
              grad_clip=None, progress=False, seed=seed, num_threads=1, keep_freed_memory=True)   # as the CLI asks
    kw.update(over)
    model = build("+".join(p for p in variant.split("+") if not p.startswith("train:")), xtr.shape[2], ytr.shape[2], seed)
    epoch_s, last = [], [time.process_time()]

    def tick(tr):
        epoch_s.append(time.process_time() - last[0])
        last[0] = time.process_time()
    trainer = Trainer(model, (xtr, ytr), None, TrainerConfig(**kw))
    trainer.add_callback("on_epoch_end", tick)
    trainer.fit()
    return model, statistics.median(epoch_s), kw["lr"]


def run_one(variant, seed, epochs, data_path, cli=False):
    import numpy as np
    import torch
    torch.set_num_threads(1)
    d = dict(np.load(data_path))
    xtr, ytr, xte, yte = (torch.tensor(d[k]) for k in ("xtr", "ytr", "xte", "yte"))
    if cli:
        model, epoch_med, lr = run_cli(variant, seed, epochs, xtr, ytr)
    else:
        model, epoch_med, lr = run_own_loop(variant, seed, epochs, xtr, ytr)
    pred = model.predict(xte)["now"]
    y = yte.numpy()
    r2 = float(np.mean(1 - ((pred - y) ** 2).sum((0, 1)) / ((y - y.mean((0, 1))) ** 2).sum((0, 1))))
    return {"variant": variant, "seed": seed, "r2": r2, "epoch_s": epoch_med, "lr": lr, "cli": cli}


def run_own_loop(variant, seed, epochs, xtr, ytr):
    """ train with the row's optimiser (see the top): Adam, batch 10 """
    import torch
    model = build(variant, xtr.shape[2], ytr.shape[2], seed)
    parts = set(variant.split("+"))
    lr = 3e-3 if "lr 3e-3" in parts else 1e-3
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    T = xtr.shape[1]
    epoch_s = []
    for _ in range(epochs):
        t0 = time.process_time()
        model.train()
        for idx in torch.randperm(len(xtr), generator=gen).split(10):
            loss = model.compute_losses((xtr[idx], ytr[idx]))["loss"]
            opt.zero_grad()
            loss.backward()
            if "clip value" in parts:
                torch.nn.utils.clip_grad_value_(model.parameters(), 0.5 / T)
            opt.step()
        epoch_s.append(time.process_time() - t0)
    return model, statistics.median(epoch_s), lr

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated; '+' combines changes")
    ap.add_argument("--out", default=None, help="also append every run as a JSON line to this file")
    ap.add_argument("--worker", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=None)
    ap.add_argument("--cli", action="store_true", help="train as `train sparks` does (see above)")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(run_one(args.worker, args.seed, args.epochs, args.data, args.cli)))
        return
    import tempfile
    import numpy as np
    sys.path.insert(0, ROOT)
    from minilatent.synthetic import make_rotation
    d = make_rotation()
    path = os.path.join(tempfile.mkdtemp(prefix="sparks_ablation_"), "rotation.npz")
    np.savez(path, xtr=d["train_encod_data"], ytr=d["train_latents"], xte=d["valid_encod_data"], yte=d["valid_latents"])
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    how = "as `train sparks` trains" if args.cli else "batch 10, Adam"
    print(f"make_rotation(): 80/20 trials x 150 bins x 100 neurons; {args.epochs} epochs, {how}; one thread; "
          f"load {os.getloadavg()[0]:.1f} (2 shared cores)", flush=True)
    rows = {v: [] for v in variants}
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    for seed in range(args.seeds):          # interleaved: every variant once per seed, so load changes hit all alike
        for v in variants:
            r = subprocess.run([sys.executable, __file__, "--worker", v, "--seed", str(seed), "--epochs",
                                str(args.epochs), "--data", path] + (["--cli"] if args.cli else []),
                               capture_output=True, text=True, env=env)
            lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
            if not lines:
                print(f"{v} seed {seed}: failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}", flush=True)
                continue
            res = json.loads(lines[-1])
            res["load"] = round(os.getloadavg()[0], 1)
            rows[v].append(res)
            print(json.dumps(res), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(res) + "\n")
    print(f"\n{'variant':32s}{'median R2':>10s}{'runs':>24s}{'CPU s/epoch':>13s}")
    for v in variants:
        if rows[v]:
            r2s = [r["r2"] for r in rows[v]]
            print(f"{v:32s}{statistics.median(r2s):10.3f}{' '.join(f'{x:.3f}' for x in r2s):>24s}"
                  f"{statistics.median(r['epoch_s'] for r in rows[v]):13.2f}")


if __name__ == "__main__":
    main()
