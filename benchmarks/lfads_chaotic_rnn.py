"""
LFADS with a controller on the chaotic RNN with input pulses (the synthetic data of the original LFADS paper,
Sussillo et al. 2016): does LFADS find the hidden pulses, how well does it infer the rates, and what does the controller's
per-step loop cost against the autonomous (fused-kernel) model?

Data (standard variant): make_chaotic_rnn(with_inputs=True) — 50 neurons, g = 2.5, 400 conditions x 10 trials
(3200 train / 800 valid), 100 bins of 10 ms, rates up to 30 Hz, one pulse of size 20 per trial at a random bin in
[25, 75) through an input vector b ~ N(0, 1). The 'easy' variant is notebook 02's: 30 neurons, g = 1.5, 100 Hz,
50 bins, the same pulses of size 20.

Reported:
  seconds per epoch, autonomous (co_dim=0) vs with a controller (co_dim=1), same sizes otherwise (median of
    --speed-epochs epochs each; the machine is shared, so the figures are noisy);
  per run: wall seconds of training, epochs, validation rate R^2 (10-sample posterior average);
  pulse-timing accuracy: the fraction of validation trials whose peak of ||u_t - mean over trials of u_t||
    (u = posterior mean of the inferred input) lies within +-3 bins of the true pulse; chance = the same score
    against pulse times shuffled across trials (metrics.pulse_timing_accuracy);
  the rate error in the bin of the pulse relative to the 10 bins before it (1 = the pulse is tracked perfectly).
Target (ours; the issue sets none): pulse-timing accuracy >= 0.5 and >= chance + 0.3, a clear recovery.

Measured here (2 shared CPU cores under load, one run each), on the data as fixed on 2 Dec: the input vector is now
b ~ N(0, 1) as in the original generator (it was N(0, 1/N), which made the pulses ~7x too weak to see; every earlier
run on the standard data was at chance and those numbers are obsolete). The two standard runs ran side by side,
through this file's one_run with MODEL and RAMP_EPOCHS as below (the batch-64 one is the default command):
  standard, batch 64, 451 s (21 epochs): valid R^2 0.738, pulse-timing accuracy 1.000, chance 0.139 (MET)
  standard, batch 32, 451 s (14 epochs): valid R^2 0.700, accuracy 0.709, chance 0.127 (MET)
  seconds per epoch at batch 32: 22.2 autonomous vs 44.9 with the controller (2.0x)
  easy (KL/L2 ramps of 10 epochs), 100 s (69 epochs, --batch-size 16 --lr 0.03): valid R^2 0.822, accuracy 1.000,
    chance 0.275 (MET); 0.8 vs 2.0 s/epoch. With ramps of 3 epochs instead: accuracy 0.000, chance 0.000 (every
    peak of |u - mean u| outside the bins where pulses occur), so each variant has its own ramp (RAMP_EPOCHS).
Tuning (co_dim 1, ci_enc/con 32, AR(1) tau 2, lr 2e-2; accuracy from posterior means):
  smaller standard data (100 conditions: 800 / 200 trials), batch 32, KL/L2 ramps of 10 epochs:
    kl_co_scale 1e-4, 150 s (26 epochs): accuracy 1.000, chance 0.142, R^2 0.686
    kl_co_scale 1e-3, 150 s (26 epochs): accuracy 0.01 (chance 0.06), R^2 0.562
    kl_co_scale 1e-5, 120 s (10 epochs, heavier load): accuracy 0.00 (chance 0.08)
    kl_co_scale 1e-4, ci_enc/con 16, 120 s (11 epochs): accuracy 0.12 (chance 0.09)
  full standard data, kl_co_scale 1e-4, batch 32, ramps of 10 epochs, 422 s (14 epochs): R^2 0.763, accuracy 0.140,
    chance 0.090 (NOT MET); with KL/L2 ramps of 3 epochs (now the default here) and otherwise the same settings,
    0.709 (the batch-32 run above): one run each, but ramps that end at epoch 10 of 14 look too late.
The rates after the kick are still modelled poorly: the rate error in the pulse bin stays 4.7-6.6x the error
before it (the last figure printed), and the valid R^2 is below that of the run that ignored the pulses. Within
minutes of CPU the model learns when the kick comes sooner than how the network responds to it.
The original LFADS results on these data came from far longer training; we have not matched their R^2.

    python benchmarks/lfads_chaotic_rnn.py                       # standard data, one run of 450 s
    python benchmarks/lfads_chaotic_rnn.py --variant easy --seconds 120
"""

import argparse
import statistics
import time

import numpy as np
import torch

from minilatent.synthetic import make_chaotic_rnn
from minilatent.datafiles import lfads_tensors
from minilatent.metrics import true_rates, rate_r2, pulse_timing_accuracy
from minilatent.lfads import LFADS, LFADSConfig
from minilatent.trainer import Trainer, TrainerConfig

VARIANTS = {
    "standard": dict(with_inputs=True, seed=0),
    "easy": dict(n_conditions=40, n_neurons=30, n_bins=50, g=1.5, input_magnitude=20.0, max_rate=100.0,
                 with_inputs=True, seed=3),
}
# sizes and settings tuned on the easy variant and small versions of the standard one (see the docstring):
# a short AR(1) time constant so one-bin pulses are cheap, a moderate KL weight
MODEL = dict(ic_enc_dim=64, ic_dim=32, gen_dim=64, fac_dim=20, ci_enc_dim=32, con_dim=32, co_prior_tau=2.0,
             kl_co_scale=1e-4)
# epochs of the KL/L2 ramps: the ramp must end early in the budget (standard: ~20 epochs in 450 s; easy: ~70 in 100 s)
RAMP_EPOCHS = {"standard": 3, "easy": 10}


def seconds_per_epoch(data, co_dim, epochs, batch_size):
    train = lfads_tensors(data, "train")
    torch.manual_seed(0)
    model = LFADS(LFADSConfig(n_neurons=train[0].shape[2], co_dim=co_dim, **MODEL))
    trainer = Trainer(model, train, None, TrainerConfig(max_epochs=epochs, batch_size=batch_size, progress=False,
                                                        ema_decay=None))
    trainer.fit()
    secs = np.diff([0.0] + [r["seconds"] for r in trainer.history.rows])
    return statistics.median(secs)


def one_run(data, seed, seconds, batch_size, lr):
    train, valid = lfads_tensors(data, "train"), lfads_tensors(data, "valid")
    truth = true_rates(data, "valid")
    torch.manual_seed(seed)
    model = LFADS(LFADSConfig(n_neurons=train[0].shape[2], co_dim=1, **MODEL))
    model.init_readout_bias(train[1])
    trainer = Trainer(model, train, valid, TrainerConfig(max_seconds=seconds, seed=seed, batch_size=batch_size, lr=lr,
                                                         progress=False))
    t0 = time.perf_counter()
    trainer.fit()
    wall = time.perf_counter() - t0
    torch.set_num_threads(1)
    rates = model.posterior_average(valid[0], n_samples=10)["output_params"]
    u = model.posterior_average(valid[0], n_samples=0)["co_means"]         # posterior mean of the inferred input
    acc, chance = pulse_timing_accuracy(u, data["valid_inputs"], window=3)
    tp = data["valid_inputs"][..., 0].argmax(1)
    err = ((rates - truth) ** 2).mean(-1)
    at = np.mean([err[i, t] for i, t in enumerate(tp)])
    before = np.mean([err[i, t - 10:t].mean() for i, t in enumerate(tp)])
    return dict(seed=seed, wall=wall, epochs=trainer.epoch, r2=rate_r2(rates, truth), acc=acc, chance=chance,
                pulse_err=at / before)


def main():
    torch.set_num_threads(1)    # the library leaves threads alone; one is fastest for these small GRUs
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="standard")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=450.0, help="training budget per run")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--speed-epochs", type=int, default=2, help="epochs timed per model (0: skip the timing)")
    args = ap.parse_args()
    data = make_chaotic_rnn(**VARIANTS[args.variant])
    MODEL.update(kl_ramp_epochs=RAMP_EPOCHS[args.variant], l2_ramp_epochs=RAMP_EPOCHS[args.variant])
    print(f"torch {torch.__version__}, training on 1 thread (shared machine: timings are noisy)")
    print(f"data ({args.variant}): train {data['train_encod_data'].shape}, valid {data['valid_encod_data'].shape}; "
          f"model {MODEL}, batch {args.batch_size}, lr {args.lr}")
    if args.speed_epochs:
        auto = seconds_per_epoch(data, 0, args.speed_epochs, args.batch_size)
        ctrl = seconds_per_epoch(data, 1, args.speed_epochs, args.batch_size)
        print(f"seconds per epoch: autonomous {auto:.1f}, with controller {ctrl:.1f} ({ctrl / auto:.1f}x)", flush=True)
    rows = []
    for seed in range(args.runs):
        r = one_run(data, seed, args.seconds, args.batch_size, args.lr)
        rows.append(r)
        print(f"run {seed}: {r['wall']:.0f} s, {r['epochs']} epochs, valid rate R2 {r['r2']:.4f}, pulse-timing accuracy "
              f"{r['acc']:.3f} (chance {r['chance']:.3f}), rate error at the pulse / before it {r['pulse_err']:.2f}",
              flush=True)
    med = lambda k: statistics.median(r[k] for r in rows)
    print(f"\nmedian of {len(rows)}: {med('wall'):.0f} s, {med('epochs'):.0f} epochs, valid rate R2 {med('r2'):.4f}, "
          f"pulse-timing accuracy {med('acc'):.3f} (chance {med('chance'):.3f})")
    ok = med("acc") >= 0.5 and med("acc") >= med("chance") + 0.3
    print(f"target: pulse-timing accuracy >= 0.5 and >= chance + 0.3 -> {'MET' if ok else 'NOT MET'}")


if __name__ == "__main__":
    main()
