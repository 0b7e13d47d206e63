"""
AutoLFADS-style population-based training (`tune lfads`) against the default single run (`train lfads`) at
equal wall time, on datasets of the suite (synthetic.SUITE, issue 11). Both run exactly as a user would, each in
its own process, one after the other:

    python -m minilatent train lfads FILE --out A --max-seconds S --seed K
    python -m minilatent tune lfads  FILE --out B --max-seconds S --trials N --seed K [--cpus-per-trial C]

and the script reads A/lfads_output.h5 and B/best/lfads_output.h5 and prints, on the validation trials, the
bits/spike (next to the true rates'), the rate R2 and, for Lorenz data, the latent R2 per axis (an affine map
from the factors to the true Lorenz state fit on the training trials, data.affine_latent_r2).

    python benchmarks/lfads_pbt.py                                      # lorenz_sparse, 900 s each, 4 members
    python benchmarks/lfads_pbt.py --datasets lorenz_sparse lorenz_small --seconds 600 --trials 4 --seeds 0 1 2

Equal wall time is the fair comparison for a user with one machine: the population shares the cores that the
single run has to itself. With 2 cores and N members, each member trains at 2/N of a core's speed (and Ray
itself takes some of the time), so PBT pays off only when the default hyperparameters are far from good for
the data; on a cluster, the same command with --address and --cpus-per-trial 1 gives each member a core.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from minilatent import synthetic, datafiles, metrics


def _run(cmd):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return time.perf_counter() - t0


def scores(out_file, data):
    import h5py
    with h5py.File(out_file, "r") as f:
        rates = f["valid_output_params"][()]
        tf, vf = f["train_factors"][()], f["valid_factors"][()]
    spikes = data["valid_recon_data"] if "valid_recon_data" in data else data["valid_data"]
    dt = float(data.get("dt", 0.01))
    truth = np.asarray(data["valid_truth"]) * dt                        # Hz -> counts per bin
    res = {"bps": metrics.bits_per_spike(rates, spikes), "true_bps": metrics.bits_per_spike(truth, spikes),
           "rate_r2": metrics.rate_r2(rates, truth)}
    if "train_latents" in data:
        res["latent_r2"] = metrics.affine_latent_r2(tf, data["train_latents"], vf, data["valid_latents"])
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["lorenz_sparse"])
    ap.add_argument("--seconds", type=float, default=900.0, help="wall-clock budget of each run and each search")
    ap.add_argument("--trials", type=int, default=4, help="population size")
    ap.add_argument("--cpus-per-trial", type=float, default=None, help="default: the machine's cores / trials")
    ap.add_argument("--perturbation-interval", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--keep", default=None, help="keep the run folders here")
    a = ap.parse_args()
    cpus = a.cpus_per_trial or max(0.25, (os.cpu_count() or 1) / a.trials)
    root = a.keep or tempfile.mkdtemp(prefix="lfads_pbt_")
    print(f"load average before: {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores; {a.seconds:g} s each; "
          f"{a.trials} members x {cpus:g} CPU")
    table = []
    for name in a.datasets:
        data = synthetic.make_suite(name)
        path = os.path.join(root, f"{name}.h5")
        datafiles.save_h5(path, data)
        for seed in a.seeds:
            single = os.path.join(root, f"{name}_single_s{seed}")
            pbt = os.path.join(root, f"{name}_pbt_s{seed}")
            w1 = _run([sys.executable, "-m", "minilatent", "train", "lfads", path, "--out", single, "--max-seconds",
                       str(a.seconds), "--seed", str(seed), "--overwrite"])
            w2 = _run([sys.executable, "-m", "minilatent", "tune", "lfads", path, "--out", pbt, "--max-seconds",
                       str(a.seconds), "--trials", str(a.trials), "--cpus-per-trial", str(cpus),
                       "--perturbation-interval", str(a.perturbation_interval), "--seed", str(seed), "--overwrite"])
            for kind, f, w in (("single", os.path.join(single, "lfads_output.h5"), w1),
                               ("pbt", os.path.join(pbt, "best", "lfads_output.h5"), w2)):
                s = scores(f, data)
                table.append((name, seed, kind, w, s))
                lat = " / ".join(f"{x:.3f}" for x in s.get("latent_r2", []))
                print(f"{name:16s} seed {seed} {kind:6s} wall {w:6.0f} s  bits/spike {s['bps']:.4f} (true "
                      f"{s['true_bps']:.4f})  rate R2 {s['rate_r2']:.3f}  latent R2 {lat or '-'}", flush=True)
    print("\nmedians over seeds")
    for name in a.datasets:
        for kind in ("single", "pbt"):
            rows = [s for n, _, k, _, s in table if n == name and k == kind]
            med = lambda key: statistics.median(r[key] for r in rows)
            lat = ""
            if "latent_r2" in rows[0]:
                lat = " / ".join(f"{statistics.median(r['latent_r2'][i] for r in rows):.3f}"
                                 for i in range(len(rows[0]["latent_r2"])))
            print(f"{name:16s} {kind:6s} bits/spike {med('bps'):.4f}  rate R2 {med('rate_r2'):.3f}  latent R2 {lat or '-'}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
