"""
The posterior average on the shipped Lorenz example (1040 + 260 trials x 100 bins x 30 neurons), 50 samples,
with a freshly initialised default model (the cost does not depend on the weights): CPU time, wall time and the
process's peak memory of LFADS.posterior_average (encoders once per trial, samples batched) next to the slow
path it replaced (the whole model, encoders included, once per sample; 2000 trial-samples per pass).
Target (issue 11): <= 10 s with 50 samples, < 1 GB.

    python benchmarks/lfads_posterior.py            # fast path, then the slow path for comparison
    python benchmarks/lfads_posterior.py --fast-only
    python benchmarks/lfads_posterior.py --fast-only --gen-dim 128 --fac-dim 40    # the command line's model

CPU time is what an idle core would take as wall time; on a loaded machine the wall time is longer, so the
script prints the load average as well.
"""

import argparse
import os
import resource
import time

import torch

from minilatent.datafiles import load_h5, eg_path, lfads_tensors
from minilatent.lfads import LFADS, LFADSConfig


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fast-only", action="store_true")
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--gen-dim", type=int, default=None, help="generator size (default: LFADSConfig's; the command "
                    "line's default is 128)")
    ap.add_argument("--fac-dim", type=int, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    d = load_h5(eg_path("lorenz"))
    splits = [lfads_tensors(d, s)[0] for s in ("train", "valid")]
    torch.manual_seed(0)
    sizes = {k: v for k, v in (("gen_dim", args.gen_dim), ("fac_dim", args.fac_dim)) if v is not None}
    m = LFADS(LFADSConfig(n_neurons=30, **sizes)).eval()
    print(f"model: gen_dim {m.cfg.gen_dim}, fac_dim {m.cfg.fac_dim}")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    c0, w0 = time.process_time(), time.perf_counter()
    for x in splits:
        m.posterior_average(x, n_samples=args.samples)
    c1, w1 = time.process_time(), time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"posterior_average, {args.samples} samples: CPU {c1 - c0:.1f} s, wall {w1 - w0:.1f} s, peak memory "
          f"{peak:.0f} MB (of which {rss0:.0f} MB before: torch, data, model); load average {os.getloadavg()[0]:.1f}")
    print(f"target <= 10 s and < 1 GB: {'MET' if c1 - c0 <= 10 and peak < 1024 else 'NOT MET'} (CPU time)")
    if args.fast_only:
        return
    S, chunk = args.samples, max(1, 2000 // args.samples)
    c0, w0 = time.process_time(), time.perf_counter()
    with torch.no_grad():
        for x in splits:
            for i in range(0, x.shape[0], chunk):
                out = m(x[i:i + chunk].repeat_interleave(S, 0), sample=True)
                torch.exp(out["params"]).reshape(-1, S, *out["params"].shape[1:]).mean(1)
    c1, w1 = time.process_time(), time.perf_counter()
    print(f"slow path (encoders once per sample): CPU {c1 - c0:.1f} s, wall {w1 - w0:.1f} s; load average "
          f"{os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
