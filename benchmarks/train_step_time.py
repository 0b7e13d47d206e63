"""
Training-step time of LFADS (autonomous and with a controller) and SPARKS (full BPTT and online) through the
generic Trainer: each batch is timed on its own (a callback at the end of every batch), and the minimum and
median per optimiser step are printed. The minimum is the figure to compare on a shared, loaded machine.
Used to check that input validation left the hot path (issue 13): run it before and after a change.

    .venv/bin/python benchmarks/train_step_time.py
"""
import statistics
import time

import torch

from minilatent import LFADS, LFADSConfig, Trainer, TrainerConfig
from minilatent.sparks import SPARKS, SPARKSConfig
from minilatent.data import make_lorenz, lfads_tensors


def per_step(model, train, epochs, batch_size, steps_per_batch=1):
    tr = Trainer(model, train, None, TrainerConfig(max_epochs=epochs, batch_size=batch_size, progress=False,
                                                   ema_decay=None))
    stamps = [time.perf_counter()]
    tr.add_callback("on_batch_end", lambda t: stamps.append(time.perf_counter()))
    tr.fit()
    dts = [(b - a) / steps_per_batch for a, b in zip(stamps[1:], stamps[2:])]   # the first batch warms up
    return min(dts), statistics.median(dts)


if __name__ == "__main__":
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
