"""
Training-step time of LFADS (autonomous and with a controller) and SPARKS (full BPTT and online) through the
generic Trainer: each batch is timed on its own (a callback at the end of every batch), and the minimum and
median per optimiser step are printed. The minimum is the figure to compare on a shared, loaded machine.
Used to check that input validation left the hot path (issue 13): run it before and after a change.
It also times the value checks on their own (NaN/negative scans of a batch): what every training step paid
before they moved to Trainer.fit (once per fit), against the shape checks that stay in every step.

    .venv/bin/python benchmarks/train_step_time.py
"""
import statistics
import time

import torch

from minilatent import LFADS, LFADSConfig, Trainer, TrainerConfig
from minilatent.sparks import SPARKS, SPARKSConfig
from minilatent.synthetic import make_lorenz
from minilatent.datafiles import lfads_tensors
from minilatent.lfads import check_counts, check_shape, PoissonLikelihood


def mean_us(fn, n=2000):
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def check_costs():
    x = torch.poisson(torch.ones(32, 100, 30))                   # one LFADS batch
    values = lambda: (check_counts(x, "x", 30, spikes=False), check_counts(x, "r", 30, spikes=False),
                      PoissonLikelihood.check(x, "r"))            # forward + compute_losses + likelihood, as before
    shapes = lambda: (check_shape(x, "x", 30), check_shape(x, "r", 30))
    print(f"LFADS per-step checks, batch (32, 100, 30): value scans {mean_us(values):.0f} us, shape checks "
          f"{mean_us(shapes):.0f} us")
    m = SPARKS(SPARKSConfig(n_neurons=60))
    xs = (torch.rand(10, 100, 60) < 0.1).float()
    print(f"SPARKS input check, batch (10, 100, 60): values {mean_us(lambda: m._check_input(xs, 0)):.0f} us, shape "
          f"{mean_us(lambda: m._check_input(xs, 0, values=False)):.0f} us; one online bin (10, 1, 60): values "
          f"{mean_us(lambda: m._check_input(xs[:, :1], 0)):.0f} us, shape "
          f"{mean_us(lambda: m._check_input(xs[:, :1], 0, values=False)):.0f} us")


def per_step(model, train, epochs, batch_size, steps_per_batch=1):
    tr = Trainer(model, train, None, TrainerConfig(max_epochs=epochs, batch_size=batch_size, progress=False,
                                                   ema_decay=None))
    stamps = [time.perf_counter()]
    tr.add_callback("on_batch_end", lambda t: stamps.append(time.perf_counter()))
    tr.fit()
    dts = [(b - a) / steps_per_batch for a, b in zip(stamps[1:], stamps[2:])]   # the first batch warms up
    return min(dts), statistics.median(dts)


if __name__ == "__main__":
    torch.set_num_threads(1)
    if hasattr(SPARKS, "check_data"):                            # this version has both kinds of check
        check_costs()
    torch.manual_seed(0)
    d = make_lorenz(seed=0)
    tr = lfads_tensors(d, "train")[:2]
    x = (torch.rand(40, 100, 60) < 0.1).float()
    cases = {
        "LFADS autonomous (1040 trials x 100 bins x 30 neurons, batch 32)": (LFADS(LFADSConfig(n_neurons=30)), tr, 1, 32, 1),
        "LFADS controller co_dim=1 (batch 32)": (LFADS(LFADSConfig(n_neurons=30, co_dim=1)), (tr[0][:320], tr[1][:320]), 1, 32, 1),
        "SPARKS full BPTT (40 trials x 100 bins x 60 neurons, batch 10)": (SPARKS(SPARKSConfig(n_neurons=60)), (x,), 2, 10, 1),
        "SPARKS online, one step per bin (batch 10)": (SPARKS(SPARKSConfig(n_neurons=60, online=True)), (x[:30],), 1, 10, 100),
    }
    for name, (model, data, epochs, bs, spb) in cases.items():
        lo, med = per_step(model, data, epochs, bs, spb)
        print(f"{name}: min {1e3 * lo:.2f} ms, median {1e3 * med:.2f} ms per optimiser step", flush=True)
