"""
From circuits to latents (lesson 07), at full size: LFADS fitted to the spikes of a ring attractor and of a bistable
E/I network, scored against the circuits' truth. Medians over seeds (default 3: 0, 1, 2); each seed draws new data
(new trials and recorded neurons) and a new model initialisation.

Ring: synthetic.make_ring_trials(n_trials=500, n_valid=100, n_bins=100) — 60 of 120 neurons, 2-s trials of 20-ms bins,
a cue on half the trials. Autonomous LFADS (ic_enc 32, ic 32, gen 32, fac 8; trainer defaults), --ring-epochs epochs.
  1. median circular error of the bump phase decoded from the factors (linear map to (cos, sin), fitted on the
     400 training trials) on the 100 held-out trials                                          target <= 15 deg
  2. slow points of the generator (find_fixed_points from 300 held-out generator states + noise 0.02, stop_q 3e-5,
     slow points 1e-10 <= q < 3e-4; lesson 07's settings: the median q along the trajectories is ~7e-5): the fraction with exactly one eigenvalue |lambda| > 0.9    target >= 0.8
  3. the phase attached to each slow point (its factors through the decoder of 1) against its position along the
     ring (angle in the plane of the slow points' first two principal components): |circular correlation|
     (Fisher & Lee; the sign is the arbitrary direction of the principal components)            target >= 0.9
Bistable: synthetic.make_bistable_trials(n_trials=500, n_valid=100, pulse_prob=0) (an autonomous model cannot explain a
pulse at a random time), autonomous LFADS (gen 16, fac 4, cell_clip 1; batch 16, lr 0.02), --bi-epochs epochs;
find_fixed_points polished to the end from 400 held-out generator states + noise 0.05, and from 41 points on the
segment joining the two stable points found (where a saddle must lie).
  4. for each of the circuit's two stable states, the model's stable fixed point whose read-out rates are closest:
     mean |rate difference| / mean circuit rate (the rates the circuit's fixed point gives the recorded neurons,
     synthetic.bistable_readout); the worse of the two                                           target <= 10 %

    nice -n 5 python benchmarks/circuit_to_latents.py                  # 3 seeds, about 5 min each on one core
    python benchmarks/circuit_to_latents.py --seeds 1 --ring-epochs 4 --bi-epochs 4      # a quick smoke run
"""

import argparse
import statistics
import time

import numpy as np
import torch

from minilatent import synthetic, datafiles, metrics
from minilatent.fixed_points import find_fixed_points
from minilatent.lfads import LFADS, LFADSConfig, lfads_generator_step, lfads_factors
from minilatent.trainer import Trainer, TrainerConfig


def train_lfads(train, valid, seed, epochs, batch_size=32, lr=0.01, **kw):
    torch.manual_seed(seed)
    model = LFADS(LFADSConfig(n_neurons=train[0].shape[2], ic_enc_dim=32, **kw))
    model.init_readout_bias(train[1])
    t0 = time.time()
    Trainer(model, train, valid, TrainerConfig(max_epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                                               progress=False)).fit()
    return model, time.time() - t0


def ring_run(seed, epochs):
    ring = synthetic.make_ring_trials(n_trials=500, n_valid=100, n_bins=100, seed=seed)
    train, valid = datafiles.lfads_tensors(ring, "train"), datafiles.lfads_tensors(ring, "valid")
    model, secs = train_lfads(train, valid, seed, epochs, ic_dim=32, gen_dim=32, fac_dim=8)
    o_tr = model.posterior_average(train[0], n_samples=0)
    o_va = model.posterior_average(valid[0], n_samples=0)
    W = metrics.fit_phase_decoder(o_tr["factors"], ring["train_phase"])
    err = float(np.median(metrics.circular_distance(metrics.decode_phase(o_va["factors"], W), ring["valid_phase"])))
    G = torch.tensor(o_va["gen_states"], dtype=torch.float64)
    pool = G[:, 10:].reshape(-1, G.shape[-1])
    starts = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:300]]
    fp = find_fixed_points(lfads_generator_step(model), starts, tol=1e-10, slow_tol=3e-4, stop_q=3e-5, noise=0.02,
                           max_iters=200, seed=seed)
    S = fp["slow_points"]
    mods = fp["slow_eigvals"].abs().numpy()
    one = float(np.mean((mods > 0.9).sum(1) == 1)) if len(S) else float("nan")
    if len(S) >= 3:
        phase = metrics.decode_phase(lfads_factors(model, S).numpy(), W)
        _, _, Vt = torch.linalg.svd(S - S.mean(0), full_matrices=False)
        p2 = ((S - S.mean(0)) @ Vt[:2].T).numpy()
        rho = abs(metrics.circular_correlation(phase, np.arctan2(p2[:, 1], p2[:, 0])))
    else:
        rho = float("nan")
    return dict(train_s=secs, phase_err=err, n_slow=len(S), n_fixed=len(fp["points"]), one_eig=one, rho=rho,
                lam1=float(np.median(mods[:, 0])) if len(S) else float("nan"),
                lam2=float(np.median(mods[:, 1])) if len(S) else float("nan"))


def bistable_run(seed, epochs):
    bi = synthetic.make_bistable_trials(n_trials=500, n_valid=100, pulse_prob=0.0, seed=seed)
    train, valid = datafiles.lfads_tensors(bi, "train"), datafiles.lfads_tensors(bi, "valid")
    model, secs = train_lfads(train, valid, seed, epochs, batch_size=16, lr=0.02, ic_dim=16, gen_dim=16, fac_dim=4,
                              cell_clip=1.0)
    o = model.posterior_average(valid[0], n_samples=0)
    G = torch.tensor(o["gen_states"], dtype=torch.float64).reshape(-1, 16)
    starts = G[torch.randperm(len(G), generator=torch.Generator().manual_seed(seed))[:400]]
    step = lfads_generator_step(model)
    fp = find_fixed_points(step, starts, noise=0.05, max_iters=300, seed=seed)
    if int(fp["stable"].sum()) == 2:  # a saddle lies between the two stable points: search the segment joining them
        a, b = fp["points"][fp["stable"]]
        seg = find_fixed_points(step, a + torch.linspace(0, 1, 41, dtype=torch.float64)[:, None] * (b - a),
                                max_iters=300)
        new = seg["points"][~seg["stable"]]
        if len(new):
            fp["points"] = torch.cat([fp["points"], new])
            fp["stable"] = torch.cat([fp["stable"], seg["stable"][~seg["stable"]]])
            fp["eigvals"] = torch.cat([fp["eigvals"], seg["eigvals"][~seg["stable"]]])
    hz = torch.exp(model.readout(lfads_factors(model, fp["points"]).float())).detach().numpy() / float(bi["dt"])
    theory = synthetic.bistable_readout(bi, bi["fixed_points"][:, :2])          # (3, N)
    stable_th = theory[bi["fixed_points"][:, 2] == 1]                            # low, high
    stable_model = hz[fp["stable"].numpy()]
    errs = []
    for th in stable_th:
        rel = np.abs(stable_model - th).mean(1) / th.mean() if len(stable_model) else np.array([np.inf])
        errs.append(float(rel.min()))
    n_saddle = int(sum(((ev.abs() > 1).sum() == 1).item() for ev in fp["eigvals"][~fp["stable"]]))
    return dict(train_s=secs, n_fixed=len(fp["points"]), n_stable=int(fp["stable"].sum()), n_saddle=n_saddle,
                err_low=errs[0], err_high=errs[1], rate_err=max(errs))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--ring-epochs", type=int, default=20)
    ap.add_argument("--bi-epochs", type=int, default=40)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for seed in range(args.seeds):
        r = ring_run(seed, args.ring_epochs)
        b = bistable_run(seed, args.bi_epochs)
        rows.append((r, b))
        print(f"seed {seed}: ring ({r['train_s']:.0f} s training): phase error {r['phase_err']:.1f} deg; "
              f"{r['n_slow']} slow + {r['n_fixed']} fixed points; exactly one |lambda| > 0.9: {r['one_eig']:.2f} "
              f"(median |lambda_1| {r['lam1']:.4f}, |lambda_2| {r['lam2']:.3f}); |circular corr| {r['rho']:.3f}", flush=True)
        print(f"        bistable ({b['train_s']:.0f} s training): {b['n_fixed']} fixed points, {b['n_stable']} stable, "
              f"{b['n_saddle']} saddle(s) with one |lambda| > 1; read-out rate error low {100 * b['err_low']:.1f}%, "
              f"high {100 * b['err_high']:.1f}%", flush=True)
    med = lambda xs: statistics.median(xs)
    figs = [("median circular phase error (deg)", med([r["phase_err"] for r, _ in rows]), "<=", 15.0),
            ("fraction of slow points with exactly one |lambda| > 0.9", med([r["one_eig"] for r, _ in rows]), ">=", 0.8),
            ("|circular correlation| of slow-point phase vs ring position", med([r["rho"] for r, _ in rows]), ">=", 0.9),
            ("bistable: worse stable-state read-out rate error", med([b["rate_err"] for _, b in rows]), "<=", 0.10)]
    print(f"\nmedians over {args.seeds} seed(s):")
    for name, v, op, target in figs:
        met = v <= target if op == "<=" else v >= target
        print(f"  {name}: {v:.3f}   target {op} {target}: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
