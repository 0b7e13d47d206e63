"""
LFADS with the command line's defaults on the dataset suite (synthetic.SUITE): Lorenz and chaotic-RNN dynamics at
1-20 Hz, 20-200 neurons, 200-2000 trials, 50-200 bins (issue 11). For each dataset and seed this writes the
dataset to a temporary HDF5 file, runs

    python -m minilatent train lfads FILE --out DIR --max-seconds S --seed K [CLI-ARGS]

exactly as a user would (so it measures whatever defaults the command line has), reads DIR/lfads_output.h5
and prints, on the validation trials:
    rate R2       inferred vs true rates (truth converted to counts per bin with the generator's dt)
    latent R2     Lorenz only: per axis, an affine map from the factors to the true Lorenz state, fit on the
                  training trials' factors and scored on the validation trials (data.affine_latent_r2)
    bits/spike    of the inferred rates, next to that of the true rates (the ceiling)
and the medians over seeds. 'lorenz_sparse' is built like the public dataset of issue 11 (60 neurons at
~1.8 Hz, 640/160 trials, original LFADS keys, truth in Hz); its target at 300 s is latent R2 >= 0.988 /
0.982 / 0.954 and rate R2 >= 0.90.

    python benchmarks/lfads_datasets.py                                   # every dataset, 1 seed, 120 s each
    python benchmarks/lfads_datasets.py --datasets lorenz_sparse --seeds 0 1 2 --seconds 300
    python benchmarks/lfads_datasets.py --datasets lorenz_sparse --seconds 60 --cli-args "--gen-dim 100"
    python benchmarks/lfads_datasets.py --seconds 120 \
        --cli-args "--gen-dim 64 --fac-dim 20 --cd-rate 0.3 --lr 0.01 --batch-size 32"     # the defaults before issue 11

The command line's defaults (gen 128, 40 factors, cd 0.5, lr 3e-3, a batch of a tenth of the training trials
within 16-64) were chosen with this script; the README's "LFADS on the dataset suite" has the tables.

Training runs on one thread; the machine's load changes the epochs a budget buys, so the script prints the
load average next to the table.
"""

import argparse
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from minilatent import synthetic, datafiles, metrics


def run_one(name, path, seed, seconds, cli_args, keep):
    out = os.path.join(keep or os.path.dirname(path), f"{name}_s{seed}")   # default: inside the temporary folder
    cmd = [sys.executable, "-m", "minilatent", "train", "lfads", path, "--out", out, "--max-seconds", str(seconds),
           "--seed", str(seed)] + shlex.split(cli_args) + (["--overwrite"] if _has_overwrite() else [])
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{name} seed {seed}: the command line failed ({r.returncode}):\n{r.stderr[-2000:]}")
    m = re.search(r"stopped after (\d+) epochs .* in ([\d.]+) s", r.stdout)
    epochs, train_s = (int(m.group(1)), float(m.group(2))) if m else (-1, float("nan"))
    import h5py
    with h5py.File(os.path.join(out, "lfads_output.h5"), "r") as f:
        res = {k: f[k][()] for k in ("train_factors", "valid_factors", "valid_output_params")}
    return dict(epochs=epochs, train_s=train_s, wall=wall, out=out, **res)


_OVERWRITE = None


def _has_overwrite():
    """ newer command lines refuse a finished --out folder without --overwrite """
    global _OVERWRITE
    if _OVERWRITE is None:
        h = subprocess.run([sys.executable, "-m", "minilatent", "train", "lfads", "--help"], capture_output=True, text=True)
        _OVERWRITE = "--overwrite" in h.stdout
    return _OVERWRITE


def scores(data, res, dt):
    """ rate R2, latent R2 per axis (Lorenz), bits/spike and the true rates' bits/spike on the validation trials """
    truth = np.asarray(data["valid_truth"], np.float64) * dt                    # Hz -> counts per bin
    x = data.get("valid_encod_data", data.get("valid_data"))
    out = dict(rate_r2=metrics.rate_r2(res["valid_output_params"], truth),
               bps=metrics.bits_per_spike(res["valid_output_params"], x), true_bps=metrics.bits_per_spike(truth, x))
    if "train_latents" in data:
        out["latent_r2"] = metrics.affine_latent_r2(res["train_factors"], data["train_latents"], res["valid_factors"],
                                                    data["valid_latents"])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="*", default=list(synthetic.SUITE), choices=list(synthetic.SUITE))
    ap.add_argument("--seeds", nargs="*", type=int, default=[0])
    ap.add_argument("--seconds", type=float, default=120.0, help="training budget per run (--max-seconds)")
    ap.add_argument("--cli-args", default="", help="extra options for the command line, e.g. '--lr 0.005'")
    ap.add_argument("--keep", default=None, help="keep the run folders under this folder")
    args = ap.parse_args()
    print(f"budget {args.seconds:g} s per run, seeds {args.seeds}, extra options: {args.cli_args or '(none)'}")
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            data = synthetic.make_suite(name)
            dt = float(synthetic.SUITE[name][1].get("dt", 0.01))
            path = os.path.join(tmp, f"{name}.h5")
            datafiles.save_h5(path, data)
            x = data.get("train_encod_data", data.get("train_data"))
            runs = []
            for seed in args.seeds:
                res = run_one(name, path, seed, args.seconds, args.cli_args, args.keep)
                sc = scores(data, res, dt)
                runs.append(dict(sc, epochs=res["epochs"], train_s=res["train_s"], wall=res["wall"]))
                lat = "/".join(f"{v:.3f}" for v in sc["latent_r2"]) if "latent_r2" in sc else "-"
                print(f"  {name:14s} seed {seed}: {res['epochs']:4d} epochs in {res['train_s']:6.1f} s (run {res['wall']:.0f} s)"
                      f"  rate R2 {sc['rate_r2']:.3f}  latent R2 {lat}  bits/spike {sc['bps']:.3f} / true {sc['true_bps']:.3f}"
                      f"  [load {os.getloadavg()[0]:.1f}]", flush=True)
            med = lambda k: statistics.median(r[k] for r in runs)
            lat = ("/".join(f"{statistics.median(r['latent_r2'][i] for r in runs):.3f}" for i in range(3))
                   if "latent_r2" in runs[0] else "-")
            rows.append((name, x.shape, float(x.mean()) / dt, med("epochs"), med("rate_r2"), lat, med("bps"), med("true_bps")))
    print(f"\nmedians over {len(args.seeds)} seed(s), {args.seconds:g} s each; load average now {os.getloadavg()[0]:.2f}")
    print("| dataset | train trials x bins x neurons | rate (Hz) | epochs | rate R² | latent R² (x/y/z) | bits/spike | true-rate bits/spike |")
    print("|---|---|---|---|---|---|---|---|")
    for name, shape, hz, ep, r2, lat, bps, tbps in rows:
        print(f"| {name} | {shape[0]} x {shape[1]} x {shape[2]} | {hz:.1f} | {ep:.0f} | {r2:.3f} | {lat} | {bps:.3f} | {tbps:.3f} |")


if __name__ == "__main__":
    main()
