"""
LFADS on the Lorenz benchmark of the LFADS papers (Sussillo et al. 2016, Pandarinath et al. 2018): how fast
do the defaults a user gets reach a validation rate R^2 of 0.95?

Data: make_lorenz() — 30 neurons, 65 conditions x 20 trials (1040 train / 260 valid), 100 bins of 10 ms.
Model and training: LFADSConfig() and TrainerConfig() defaults, exactly what `LFADS(LFADSConfig(n_neurons=30))`
and `Trainer(model, train, valid)` give, with a wall-clock budget (--seconds, default 60).
Reported per run: wall seconds of training, epochs, validation rate R^2 of the 50-sample posterior
average, latent R^2 (affine map from factors to the Lorenz state, fit on 80% of validation trials,
tested on the rest) and bits/spike; then the median over runs.

Reference (lfads-torch, measured on the same machine class when this benchmark was written): lfads-torch needs 899 s for 150 epochs to reach R^2 0.944
(0.95 after ~500 s). Target: R^2 >= 0.95 within 60 s of training.

    python benchmarks/lfads_lorenz.py                 # 3 runs of 60 s (seeds 0, 1, 2)
    python benchmarks/lfads_lorenz.py --trace         # also R^2 after every epoch (evaluation time excluded)
"""

import argparse
import statistics
import time

import torch

from minilatent.synthetic import make_lorenz
from minilatent.datafiles import lfads_tensors
from minilatent.metrics import true_rates, rate_r2, latent_r2, bits_per_spike
from minilatent.lfads import LFADS, LFADSConfig
from minilatent.trainer import Trainer, TrainerConfig


def one_run(data, seed, seconds, trace):
    train, valid = lfads_tensors(data, "train"), lfads_tensors(data, "valid")
    truth = true_rates(data, "valid")
    torch.manual_seed(seed)
    model = LFADS(LFADSConfig(n_neurons=train[0].shape[2]))
    model.init_readout_bias(train[1])
    trainer = Trainer(model, train, valid, TrainerConfig(max_seconds=seconds, seed=seed, progress=False))
    if trace:
        def show(tr):  # evaluated with the EMA weights; the time is taken off the training clock
            t0 = time.perf_counter()
            raw = tr._swap_in_ema()
            r2 = rate_r2(model.posterior_average(valid[0], n_samples=0)["output_params"], truth)
            if raw is not None:
                model.load_state_dict(raw, strict=False)
            model.train()
            print(f"    epoch {tr.epoch:3d}  {tr.history.rows[-1]['seconds']:6.1f} s  R2 (posterior mean) {r2:.4f}",
                  flush=True)
            tr.elapsed_offset = getattr(tr, "elapsed_offset", 0.0) + time.perf_counter() - t0
        trainer.add_callback("on_epoch_end", show)
    t0 = time.perf_counter()
    trainer.fit()
    wall = time.perf_counter() - t0 - getattr(trainer, "elapsed_offset", 0.0)
    torch.set_num_threads(1)
    t1 = time.perf_counter()
    out = model.posterior_average(valid[0], n_samples=50)
    t_post = time.perf_counter() - t1
    rates = out["output_params"]
    return dict(seed=seed, wall=wall, epochs=trainer.epoch, r2=rate_r2(rates, truth),
                latent=latent_r2(out["factors"], data["valid_latents"]),
                bps=bits_per_spike(rates, data["valid_encod_data"]), post=t_post)


def main():
    torch.set_num_threads(1)    # the library leaves threads alone; one is fastest for these small GRUs
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=60.0, help="training budget per run")
    ap.add_argument("--trace", action="store_true")
    args = ap.parse_args()
    data = make_lorenz(seed=0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads available, training on 1 thread")
    print(f"data: train {data['train_encod_data'].shape}, valid {data['valid_encod_data'].shape}; "
          f"budget {args.seconds:g} s per run")
    rows = []
    for seed in range(args.runs):
        r = one_run(data, seed, args.seconds, args.trace)
        rows.append(r)
        lat = "/".join(f"{v:.3f}" for v in r["latent"])
        print(f"run {seed}: {r['wall']:.1f} s, {r['epochs']} epochs, valid rate R2 {r['r2']:.4f}, latent R2 {lat}, "
              f"bits/spike {r['bps']:.4f} (posterior average of 50 samples: {r['post']:.1f} s)", flush=True)
    med = lambda k: statistics.median(r[k] for r in rows)
    print(f"\nmedian of {len(rows)}: {med('wall'):.1f} s training, {med('epochs'):.0f} epochs, "
          f"valid rate R2 {med('r2'):.4f}, bits/spike {med('bps'):.4f}, posterior average {med('post'):.1f} s")
    print(f"target: R2 >= 0.95 within 60 s -> {'MET' if med('r2') >= 0.95 and med('wall') <= 60.5 else 'NOT MET'}"
          f"   (lfads-torch: 0.944 after 899 s)")


if __name__ == "__main__":
    main()
