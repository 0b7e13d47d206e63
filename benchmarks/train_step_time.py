"""
Training-step time of LFADS (autonomous and with a controller) and SPARKS (full BPTT and online), through
the generic Trainer, on the shipped-size data: median seconds per optimiser step over a few epochs.
Used to check that input validation left the hot path (issue 13): run it before and after a change.

    .venv/bin/python benchmarks/train_step_time.py
"""
import statistics
import time

import torch

from minilatent import LFADS, LFADSConfig, Trainer, TrainerConfig
from minilatent.sparks import SPARKS, SPARKSConfig
from minilatent.data import make_lorenz, lfads_tensors


def per_step(model, train, epochs=3, batch_size=32, repeats=3):
    times = []
    for r in range(repeats):
        tr = Trainer(model, train, None, TrainerConfig(max_epochs=epochs, batch_size=batch_size, progress=False,
                                                       ema_decay=None))
        t0 = time.perf_counter()
        tr.fit()
        times.append((time.perf_counter() - t0) / tr.step)
    return statistics.median(times)


if __name__ == "__main__":
    torch.manual_seed(0)
    d = make_lorenz(seed=0)
    tr = lfads_tensors(d, "train")[:2]
    cases = {
        "LFADS autonomous (1040 trials x 100 bins x 30, batch 32)": (LFADS(LFADSConfig(n_neurons=30)), tr, 3, 32),
        "LFADS controller co_dim=1 (batch 32)": (LFADS(LFADSConfig(n_neurons=30, co_dim=1)), (tr[0][:256], tr[1][:256]), 1, 32),
    }
    x = (torch.rand(40, 100, 60) < 0.1).float()
    cases["SPARKS full BPTT (40 trials x 100 bins x 60, batch 10)"] = (SPARKS(SPARKSConfig(n_neurons=60)), (x,), 2, 10)
    cases["SPARKS online, one step per bin (batch 10)"] = (SPARKS(SPARKSConfig(n_neurons=60, online=True)), (x[:10],), 1, 10)
    for name, (model, data, epochs, bs) in cases.items():
        print(f"{name}: {1e3 * per_step(model, data, epochs, bs):.2f} ms per optimiser step", flush=True)
