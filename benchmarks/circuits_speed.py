"""
Speed and exactness of minilatent.circuits on the balanced two-population network of van Vreeswijk &
Sompolinsky (1996, 1998).

Network: N = 10,000 (5,000 E + 5,000 I), K = 500 from each population (Bernoulli, 10M synapses), threshold-linear
units, gain 0.5, float32, dt = 1 ms. Figures (medians of several repetitions):

  steps/s, one network                  target >= 130   (NeuroFlame dense fp32: 64.5)
  settings x steps/s, batch of 16       target >= 1500  (NeuroFlame: 346)
  max error of the rates vs an exact dense float32 simulation (W as a dense matrix, h = W r), relative to
  the largest rate                      target <= 1e-5
  (also printed: the per-neuron relative error, and the same figures for dense float32 itself against a
  float64 simulation: a float32 sum of ~1000 terms of both signs is only that exact, in any order)
  bytes read per step and the fraction of this machine's memory bandwidth (measured here: a large sum)
  widget latency: re-simulate the tutorial network (N = 2,000, K = 100, 1 s) after a parameter change
                                        target < 0.5 s

    python benchmarks/circuits_speed.py              # one thread (the 2 cores here are shared; see --threads)
    python benchmarks/circuits_speed.py --threads 2  # both cores: faster on an idle machine, far slower under load
    python benchmarks/circuits_speed.py --torch-only # the pure-torch path (embedding_bag), no compiled kernel
"""

import argparse
import math
import statistics
import time

import torch

from minilatent.circuits import CircuitConfig, Circuit, native_kernel, _NATIVE


def timed(fn, reps):
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out), out


def bandwidth(reps):
    """ GB/s reading a 400 MB float32 tensor (torch.sum), median of reps """
    x = torch.ones(100_000_000)
    x.sum()
    t, _ = timed(lambda: x.sum(), reps)
    return x.numel() * 4 / t / 1e9


def dense_reference(net, n_steps, dtype=torch.float32):
    """ the update equations with the weights as one dense matrix (h = W r), an independent loop """
    p = net.batch_params()
    W = net.dense_weights(p).to(dtype)             # (N, N): 400 MB in float32 at N = 10k
    ext = net.external_input(p)[0].to(dtype)
    decay = torch.cat([torch.full((n,), math.exp(-net.cfg.dt / tau), dtype=dtype) for n, tau in zip(net.sizes, net.cfg.tau)])
    r = torch.zeros(net.N, dtype=dtype)
    for _ in range(n_steps):
        h = W @ r
        r = r * decay + torch.clamp(h + ext, min=0) * (1 - decay)
    return r


def errors(r, ref):
    """ (max |dr| / max |r_ref|, max over neurons of |dr| / |r_ref| with a floor of 1% of the mean rate) """
    r, ref = r.double(), ref.double()
    d = (r - ref).abs()
    return (d.max() / ref.abs().max()).item(), (d / ref.abs().clamp(min=1e-2 * ref.abs().mean())).max().item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--torch-only", action="store_true", help="the pure-torch path, without the compiled kernel")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--steps", type=int, default=50, help="steps per timed repetition")
    ap.add_argument("--check-steps", type=int, default=100, help="steps of the dense comparison")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), float32 matmul precision "
          f"{torch.get_float32_matmul_precision()!r} (left unchanged)")

    bw = bandwidth(args.reps)
    print(f"measured memory bandwidth: {bw:.1f} GB/s (sum of a 400 MB tensor)")

    t0 = time.perf_counter()
    cfg = CircuitConfig(sizes=(5000, 5000), K=500, gain=0.5, M0=0.15, seed=0)
    net = Circuit(cfg, native=False if args.torch_only else None)
    path = "compiled kernel (uint16 indices)" if net.kernel else f"pure torch (embedding_bag; kernel: {_NATIVE['error']})"
    print(f"built {net} in {time.perf_counter() - t0:.1f} s; gathers: {path}")
    nnz = net.n_synapses()

    def run(B):
        st = net.init_state(M0=torch.linspace(0.1, 0.25, B)) if B > 1 else net.init_state()
        st["r"] = torch.rand(B, net.N) * 0.5         # an active state: timing does not depend on zeros
        def go():
            s = st
            for _ in range(args.steps):
                s = net.step(s)
        return go

    t1, _ = timed(run(1), args.reps)
    sps1 = args.steps / t1
    t16, _ = timed(run(16), args.reps)
    sps16 = 16 * args.steps / t16

    # exactness against the dense float32 simulation (and both against float64)
    o = net.simulate(args.check_steps * cfg.dt, record_every=args.check_steps)
    r_sparse = o["rates"][0, -1]
    r32 = dense_reference(net, args.check_steps)
    r64 = dense_reference(net, args.check_steps, torch.float64)
    err_scale, err_neuron = errors(r_sparse, r32)
    floor_scale, floor_neuron = errors(r32, r64)
    ours64_scale, ours64_neuron = errors(r_sparse, r64)

    # bytes read per step from memory: indices + offsets (the rate tables, 20 KB x B per population, stay in cache)
    idx_bytes = sum(b["idx"].numel() * (2 if (net.kernel and net.sizes[ab[1]] <= 65536) else 4) + b["offsets"].numel() * 4
                    for ab, b in net.blocks.items())
    bytes1, bytes16 = idx_bytes + net.N * 4 * 4, idx_bytes + net.N * 16 * 4 * 4
    frac1, frac16 = bytes1 * sps1 / (bw * 1e9), bytes16 * (sps16 / 16) / (bw * 1e9)

    # widget latency: the tutorial network, re-simulated after a slider change
    small = Circuit(CircuitConfig(sizes=(1000, 1000), K=100, gain=0.5, seed=0), native=False if args.torch_only else None)
    vals = iter([0.1 + 0.01 * i for i in range(100)])
    lat, _ = timed(lambda: small.simulate(1.0, M0=torch.tensor([next(vals)]), record_every=10), args.reps)

    ok = lambda c: "MET" if c else "NOT MET"
    print()
    print(f"synapses {nnz:,}   ns per synapse per setting: one {t1 / args.steps / nnz * 1e9:.2f}, "
          f"batch of 16 {t16 / args.steps / nnz / 16 * 1e9:.2f}")
    print(f"{'figure':48s} {'measured':>12s} {'target':>10s}  reference")
    print(f"{'steps/s, one network':48s} {sps1:12.1f} {'>= 130':>10s}  NeuroFlame dense fp32 64.5   {ok(sps1 >= 130)}")
    print(f"{'settings x steps/s, batch of 16':48s} {sps16:12.1f} {'>= 1500':>10s}  NeuroFlame 346              {ok(sps16 >= 1500)}")
    print(f"{'max |dr| / max r vs dense fp32 (%d steps)' % args.check_steps:48s} {err_scale:12.2e} {'<= 1e-5':>10s}  "
          f"{'':27s}  {ok(err_scale <= 1e-5)}")
    print(f"{'  per-neuron relative error vs dense fp32':48s} {err_neuron:12.2e}")
    print(f"{'  vs dense fp64: ours / dense fp32 itself':48s} {ours64_scale:.2e} / {floor_scale:.2e} (per neuron "
          f"{ours64_neuron:.2e} / {floor_neuron:.2e})")
    print(f"{'bytes read per step, one / batch of 16 (MB)':48s} {bytes1 / 1e6:5.1f} / {bytes16 / 1e6:4.1f}")
    print(f"{'fraction of measured bandwidth, one / 16':48s} {frac1:5.2f} / {frac16:4.2f}")
    print(f"{'widget latency, N=2000 K=100, 1 s simulated (s)':48s} {lat:12.3f} {'< 0.5':>10s}  "
          f"{'':27s}  {ok(lat < 0.5)}")
    print(f"mean rates after {args.check_steps} steps: sparse {o['pop_rates'][0, -1].tolist()}")


if __name__ == "__main__":
    main()
