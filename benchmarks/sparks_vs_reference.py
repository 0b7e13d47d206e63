"""
SPARKS: minilatent's sparks.py against the reference package sparks-ai 0.2.1, side by side on the same data.

Data and settings of the SPARKS comparison (Skatchkovsky et al. 2024; sparks-ai 0.2.1): make_rotation() — 100 Bernoulli neurons tuned to the phase of a
2-D rotation (0.5-1.5 Hz), 100 trials x 150 bins of 10 ms (80 train / 20 test); batch 10, embed 32,
latent 8, tau_p 5, tau_f 1, tau_s 0.5 s, Adam lr 1e-3, beta 1e-3; supervised decoding of the 2-D latent
(cos, sin of the phase), posterior means on the test trials. One torch thread. Every run is a fresh
subprocess, so its peak memory (VmHWM) is its own; CPU seconds are process time (user + system).
Ours runs the Hebbian recurrence in sparks.py's optional compiled kernel when a C++ compiler is there (built
and cached here before any timing); --also-torch adds one run of the pure-torch path (MINILATENT_NATIVE=0).

Printed per package: CPU s per epoch (training, median over epochs), peak memory (VmHWM) of offline
(full BPTT) training, also above the worker's own baseline (libraries imported, data loaded), test R^2 after 10 epochs, and one training batch's CPU time and peak memory at N = 100, 200, 400
(ours measured; the reference's quoted from our earlier sparks-ai runs unless --ref-batches). Then the online mode's
memory at T = 150 and 600 (flat in T) and MET / NOT MET against the targets:
    >= 5x less CPU time per epoch, >= 4x less peak memory offline, R^2 >= 0.9 after 10 epochs.

    python benchmarks/sparks_vs_reference.py                  # ours + the reference if it is installed
    python benchmarks/sparks_vs_reference.py --install-ref    # first install sparks-ai into /tmp/sparks_ref
    python benchmarks/sparks_vs_reference.py --no-ref         # ours beside the quoted reference figures
    python benchmarks/sparks_vs_reference.py --runs 3 --also-torch   # medians of 3 seeds; + the pure-torch path

The reference venv: `python3 -m venv /tmp/sparks_ref && /tmp/sparks_ref/bin/pip install torch==2.13.0
sparks-ai==0.2.1` (what --install-ref does; where the PyPI torch wheel is too big to fetch it links this
environment's torch instead and installs sparks-ai with --no-deps).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
REF_VENV = "/tmp/sparks_ref"
QUOTED = {  # sparks-ai 0.2.1 as measured earlier for this project on 2 shared CPU cores, one torch thread
    "epoch_s": 11.2, "peak_mb": 1260, "r2": 0.918,
    "batch": {100: (1.2, 1240), 200: (3.5, 4000), 400: (17.1, 15000)},
}
SETTINGS = dict(embed_dim=32, latent_dim=8, tau_p=5, tau_s=0.5, lr=1e-3, beta=1e-3, batch=10)
OUR_LR = 3e-3   # our recommended learning rate (the CLI default); the reference runs at its 1e-3


def peak_mb():
    """ this process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so a
    worker started by a parent that had imported torch would report the parent's peak as its own """
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -----------------------------------------------------------------------------
# workers: each runs in its own process and prints one JSON line


def worker_ours(args, data):
    import numpy as np
    import torch
    sys.path.insert(0, ROOT)
    from minilatent.sparks import SPARKS, SPARKSConfig, saved_tensor_bytes, native_kernel
    from minilatent.trainer import Trainer, TrainerConfig
    torch.set_num_threads(1)
    native = native_kernel() is not None            # loads the cached build (the driver built it)
    xtr, ytr = torch.tensor(data["xtr"]), torch.tensor(data["ytr"])
    xte, yte = torch.tensor(data["xte"]), torch.tensor(data["yte"])
    base = peak_mb()                     # libraries imported, data loaded: what training adds comes on top
    S = SETTINGS
    torch.manual_seed(args.seed)
    cfg = SPARKSConfig(n_neurons=xtr.shape[2], n_outputs=ytr.shape[2], embed_dim=S["embed_dim"],
                       latent_dim=S["latent_dim"], tau_p=S["tau_p"], tau_s=S["tau_s"], beta=S["beta"],
                       online=args.mode == "online")
    model = SPARKS(cfg)
    if args.what == "batch":
        opt = torch.optim.Adam(model.parameters(), lr=OUR_LR)
        times, kept = [], 0.0
        for _ in range(args.repeats):
            t0 = time.process_time()
            if args.mode == "online":
                steps = model.training_step((xtr[:S["batch"]], ytr[:S["batch"]]))
                while True:        # autograd memory of each online step's graph
                    try:
                        losses, b = saved_tensor_bytes(lambda: next(steps))
                    except StopIteration:
                        break
                    kept = max(kept, b / 2**20)
                    opt.zero_grad(); losses["loss"].backward(); opt.step()
                times.append(time.process_time() - t0)
                continue
            loss = model.compute_losses((xtr[:S["batch"]], ytr[:S["batch"]]))["loss"]
            opt.zero_grad(); loss.backward(); opt.step()
            times.append(time.process_time() - t0)
        if args.mode != "online":
            kept = saved_tensor_bytes(lambda: model.compute_losses((xtr[:S["batch"]], ytr[:S["batch"]])))[1] / 2**20
        return {"batch_s": statistics.median(times), "peak_mb": peak_mb(), "base_mb": base, "autograd_mb": kept,
                "native": native}
    tc = TrainerConfig(max_epochs=args.epochs, batch_size=S["batch"], lr=OUR_LR, lr_schedule="constant",
                       ema_decay=None, progress=False, seed=args.seed, grad_clip=None)
    trainer = Trainer(model, (xtr, ytr), None, tc)
    epoch_s, last = [], [time.process_time()]

    def tick(tr):
        now = time.process_time()
        epoch_s.append(now - last[0])
        last[0] = now
    trainer.add_callback("on_epoch_end", tick)
    trainer.fit()
    t0 = time.process_time()
    pred = model.predict(xte)["now"]
    test_s = time.process_time() - t0
    r2 = float(np.mean(1 - ((pred - data["yte"]) ** 2).sum((0, 1)) / ((data["yte"] - data["yte"].mean((0, 1))) ** 2).sum((0, 1))))
    return {"epoch_s": statistics.median(epoch_s), "epochs": epoch_s, "test_s": test_s, "r2": r2,
            "peak_mb": peak_mb(), "base_mb": base, "native": native}


def worker_ref(args, data):
    import numpy as np
    import torch
    from sparks.models.sparks import SPARKS
    from sparks.models.dataclasses import HebbianAttentionConfig
    from sparks.utils.train import train
    from sparks.utils.test import test
    torch.set_num_threads(1)
    # the reference wants (trials, neurons, time) and (trials, outputs, time)
    xtr = torch.tensor(data["xtr"]).transpose(1, 2).contiguous()
    ytr = torch.tensor(data["ytr"]).transpose(1, 2).contiguous()
    xte = torch.tensor(data["xte"]).transpose(1, 2).contiguous()
    yte = torch.tensor(data["yte"]).transpose(1, 2).contiguous()
    base = peak_mb()
    S = SETTINGS
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    model = SPARKS(n_neurons_per_session=xtr.shape[1], embed_dim=S["embed_dim"], latent_dim=S["latent_dim"],
                   tau_p=S["tau_p"], tau_f=1, output_dim_per_session=ytr.shape[1],
                   hebbian_config=HebbianAttentionConfig(tau_s=S["tau_s"], dt=0.01))
    opt = torch.optim.Adam(model.parameters(), lr=S["lr"])
    loss_fn = torch.nn.MSELoss()
    if args.what == "batch":
        from sparks.utils.train import train_on_batch
        from sparks.data.providers import StandardTargetProvider
        times = []
        for _ in range(args.repeats):
            t0 = time.process_time()
            train_on_batch(model, xtr[:S["batch"]], StandardTargetProvider(ytr[:S["batch"]]), loss_fn, opt,
                           beta=S["beta"], online=args.mode == "online")
            times.append(time.process_time() - t0)
        return {"batch_s": statistics.median(times), "peak_mb": peak_mb(), "base_mb": base}
    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xtr, ytr), batch_size=S["batch"], shuffle=True)
    tdl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xte, yte), batch_size=S["batch"], shuffle=False)
    epoch_s = []
    for _ in range(args.epochs):
        t0 = time.process_time()
        train(model, [dl], loss_fn, opt, beta=S["beta"], online=args.mode == "online")
        epoch_s.append(time.process_time() - t0)
    t0 = time.process_time()
    _, _, dec = test(model, [tdl], loss_fn=loss_fn)
    test_s = time.process_time() - t0
    pred = dec.numpy().reshape(len(xte), -1, xte.shape[2]).transpose(0, 2, 1)      # (trials, T, outputs)
    y = data["yte"]
    r2 = float(np.mean(1 - ((pred - y) ** 2).sum((0, 1)) / ((y - y.mean((0, 1))) ** 2).sum((0, 1))))
    return {"epoch_s": statistics.median(epoch_s), "epochs": epoch_s, "test_s": test_s, "r2": r2,
            "peak_mb": peak_mb(), "base_mb": base}


# -----------------------------------------------------------------------------
# the driver


def make_data(path, n_neurons=100, n_bins=150, seed=0):
    import numpy as np
    sys.path.insert(0, ROOT)
    from minilatent.data import make_rotation
    d = make_rotation(n_neurons=n_neurons, n_bins=n_bins, seed=seed)
    np.savez(path, xtr=d["train_encod_data"], ytr=d["train_latents"], xte=d["valid_encod_data"],
             yte=d["valid_latents"])
    return path


def run_worker(python, pkg, data_path, what, mode="offline", epochs=10, repeats=3, seed=0, timeout=3600, native=True):
    cmd = [python, os.path.abspath(__file__), "--worker", pkg, "--data", data_path, "--what", what, "--mode", mode,
           "--epochs", str(epochs), "--repeats", str(repeats), "--seed", str(seed)]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    if not native:
        env["MINILATENT_NATIVE"] = "0"
    env.pop("PYTHONPATH", None)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=tempfile.gettempdir())
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if r.returncode != 0 or not lines:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": tail[0][:200]}
    return json.loads(lines[-1])


def ref_python():
    p = os.path.join(REF_VENV, "bin", "python")
    if not os.path.exists(p):
        return None, f"no reference environment at {REF_VENV} (run with --install-ref)"
    r = subprocess.run([p, "-c", "import sparks, torch; print(torch.__version__)"], capture_output=True, text=True)
    if r.returncode != 0:
        return None, "the reference environment cannot import sparks: " + (r.stderr.strip().splitlines() or ["?"])[-1]
    return p, None


def install_ref():
    """ sparks-ai 0.2.1 into its own venv. PyPI's torch wheel for Linux pulls the CUDA stack (GBs); when this
    environment already has torch, link it in (a .pth file) and install sparks-ai with --no-deps. """
    import site
    subprocess.run([sys.executable, "-m", "venv", REF_VENV], check=True)
    pip = os.path.join(REF_VENV, "bin", "pip")
    try:
        import torch  # noqa: F401
        sp = [p for p in site.getsitepackages() if os.path.isdir(os.path.join(p, "torch"))][0]
        out = subprocess.run([os.path.join(REF_VENV, "bin", "python"), "-c",
                              "import site; print(site.getsitepackages()[0])"], capture_output=True, text=True)
        with open(os.path.join(out.stdout.strip(), "host_torch.pth"), "w") as f:
            f.write(sp + "\n")
        r = subprocess.run([pip, "install", "--no-deps", "sparks-ai==0.2.1", "scipy", "tqdm"],
                           capture_output=True, text=True)
    except (ImportError, IndexError):
        r = subprocess.run([pip, "install", "torch==2.13.0", "sparks-ai==0.2.1"], capture_output=True, text=True)
    if r.returncode != 0:
        print("could not install sparks-ai 0.2.1: " + (r.stderr.strip().splitlines() or ["?"])[-1])


def fmt(v, unit="", nd=2):
    return "n/a" if v is None else f"{v:.{nd}f}{unit}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--no-ref", action="store_true", help="skip the reference; print the quoted figures")
    ap.add_argument("--install-ref", action="store_true", help="install sparks-ai 0.2.1 into /tmp/sparks_ref first")
    ap.add_argument("--ref-batches", action="store_true", help="also measure the reference's one-batch figures (slow)")
    ap.add_argument("--runs", type=int, default=1, help="training runs per package (seeds 0..runs-1)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--also-torch", action="store_true", help="also time ours in pure torch (MINILATENT_NATIVE=0)")
    # worker mode (internal)
    ap.add_argument("--worker", choices=["ours", "ref"])
    ap.add_argument("--data"); ap.add_argument("--what", default="train"); ap.add_argument("--mode", default="offline")
    ap.add_argument("--repeats", type=int, default=3); ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.worker:
        import numpy as np
        data = dict(np.load(args.data))
        fn = worker_ours if args.worker == "ours" else worker_ref
        print(json.dumps(fn(args, data)))
        return

    if args.install_ref:
        install_ref()
    py_ref, why = (None, "--no-ref") if args.no_ref else ref_python()
    tmp = tempfile.mkdtemp(prefix="sparks_bench_")
    data = make_data(os.path.join(tmp, "rotation.npz"))
    print(f"data: make_rotation(), 80 train / 20 test trials x 150 bins x 100 neurons; settings {SETTINGS}; "
          f"ours at lr {OUR_LR:g}")
    sys.path.insert(0, ROOT)
    from minilatent.sparks import native_kernel, _NATIVE
    kernel = native_kernel() is not None        # build (or load) it once, before anything is timed
    print("one torch thread; CPU seconds are process time; the machine is shared (figures under load)")
    print("ours: the Hebbian recurrence in " + ("the compiled kernel (sparks.native_kernel)" if kernel else
          f"pure torch (no compiled kernel: {_NATIVE['error']})") + "\n")

    res = {"ours": [], "ref": []}
    for seed in range(args.runs):
        res["ours"].append(run_worker(sys.executable, "ours", data, "train", epochs=args.epochs, seed=seed))
        print(f"ours  seed {seed}: {res['ours'][-1]}", flush=True)
        if py_ref:
            res["ref"].append(run_worker(py_ref, "ref", data, "train", epochs=args.epochs, seed=seed))
            print(f"ref   seed {seed}: {res['ref'][-1]}", flush=True)

    if args.also_torch:
        res["torch"] = [run_worker(sys.executable, "ours", data, "train", epochs=args.epochs, seed=0, native=False)]
        print(f"ours, pure torch, seed 0: {res['torch'][-1]}", flush=True)

    def med(rows, k):
        v = [r[k] for r in rows if k in r]
        return statistics.median(v) if v else None

    ours = {k: med(res["ours"], k) for k in ("epoch_s", "peak_mb", "base_mb", "r2", "test_s")}
    if py_ref and res["ref"] and "error" not in res["ref"][0]:
        ref = {k: med(res["ref"], k) for k in ("epoch_s", "peak_mb", "base_mb", "r2", "test_s")}
        ref_src = "measured here, side by side"
    else:
        ref = {"epoch_s": QUOTED["epoch_s"], "peak_mb": QUOTED["peak_mb"], "r2": QUOTED["r2"], "base_mb": None}
        ref_src = f"quoted from our earlier sparks-ai runs ({why or res['ref'][0].get('error')})"

    print(f"\n--- offline (full BPTT) training, {args.epochs} epochs; reference: {ref_src}")
    print(f"{'':28s}{'minilatent':>14s}{'sparks-ai 0.2.1':>18s}{'ratio':>9s}")
    sp = ref["epoch_s"] / ours["epoch_s"] if ours["epoch_s"] else None
    mp = ref["peak_mb"] / ours["peak_mb"] if ours["peak_mb"] else None
    print(f"{'CPU s / epoch':28s}{fmt(ours['epoch_s']):>14s}{fmt(ref['epoch_s']):>18s}{fmt(sp, 'x', 1):>9s}")
    print(f"{'peak memory (MB, RSS)':28s}{fmt(ours['peak_mb'], '', 0):>14s}{fmt(ref['peak_mb'], '', 0):>18s}{fmt(mp, 'x', 1):>9s}")
    if ref.get("base_mb"):
        inc_o, inc_r = ours["peak_mb"] - ours["base_mb"], ref["peak_mb"] - ref["base_mb"]
        print(f"{'  above the import baseline':28s}{fmt(inc_o, '', 0):>14s}{fmt(inc_r, '', 0):>18s}{fmt(inc_r / inc_o, 'x', 1):>9s}")
    else:
        print(f"{'  import baseline (ours)':28s}{fmt(ours['base_mb'], '', 0):>14s}")
    print(f"{'test R2 after training':28s}{fmt(ours['r2'], '', 3):>14s}{fmt(ref['r2'], '', 3):>18s}")
    print(f"{'CPU s to evaluate 20 trials':28s}{fmt(ours['test_s']):>14s}{fmt(ref.get('test_s')):>18s}")
    if res.get("torch") and "epoch_s" in res["torch"][0]:
        t = res["torch"][0]
        print(f"{'  ours in pure torch: CPU s / epoch':28s}{fmt(t['epoch_s']):>8s} ({fmt(ref['epoch_s'] / t['epoch_s'], 'x', 1)} "
              f"less than sparks-ai), peak {fmt(t['peak_mb'], ' MB', 0)}, R2 {fmt(t['r2'], '', 3)}")

    print("\n--- one offline training batch (B=10, T=150): CPU s and peak MB")
    batch = {}
    for N in (100, 200, 400):
        dp = make_data(os.path.join(tmp, f"rotation_{N}.npz"), n_neurons=N)
        o = run_worker(sys.executable, "ours", dp, "batch", repeats=3)
        r = run_worker(py_ref, "ref", dp, "batch", repeats=1) if (py_ref and args.ref_batches) else None
        rq = (r["batch_s"], r["peak_mb"], "measured") if r and "error" not in r else QUOTED["batch"][N] + ("quoted",)
        batch[N] = (o, rq)
        print(f"N={N:4d}  ours {fmt(o.get('batch_s'), ' s')} / {fmt(o.get('peak_mb'), ' MB', 0)}   "
              f"sparks-ai {fmt(rq[0], ' s')} / {fmt(rq[1], ' MB', 0)} ({rq[2]})   "
              f"speed {fmt(rq[0] / o['batch_s'] if o.get('batch_s') else None, 'x', 1)}, "
              f"memory {fmt(rq[1] / o['peak_mb'] if o.get('peak_mb') else None, 'x', 1)}", flush=True)

    print("\n--- online mode (an optimiser step per bin, state detached) vs full BPTT: one batch (N=100, B=10);")
    print("    'kept' = what autograd holds for the backward pass (the part that grows with T), peak = process RSS")
    for T in (150, 600):
        dp = make_data(os.path.join(tmp, f"rotation_T{T}.npz"), n_bins=T)
        o = run_worker(sys.executable, "ours", dp, "batch", mode="online", repeats=1)
        f = run_worker(sys.executable, "ours", dp, "batch", mode="offline", repeats=1)
        print(f"T={T:4d}  online {fmt(o.get('batch_s'), ' s')}, kept {fmt(o.get('autograd_mb'), ' MB', 2)}, "
              f"peak {fmt(o.get('peak_mb'), ' MB', 0)}   |   BPTT {fmt(f.get('batch_s'), ' s')}, kept "
              f"{fmt(f.get('autograd_mb'), ' MB', 1)}, peak {fmt(f.get('peak_mb'), ' MB', 0)}", flush=True)
        batch[f"online{T}"] = o.get("autograd_mb")
    on150, on600 = batch["online150"], batch["online600"]

    print("\n--- targets")
    ok = lambda c: "MET" if c else "NOT MET"
    print(f"speed  >= 5x less CPU time per epoch : {fmt(sp, 'x', 1)}  {ok(sp is not None and sp >= 5)}"
          f"   (against the quoted 11.2 s: {fmt(QUOTED['epoch_s'] / ours['epoch_s'], 'x', 1)})")
    print(f"memory >= 4x less peak memory offline: {fmt(mp, 'x', 1)}  {ok(mp is not None and mp >= 4)}"
          + ("  (total RSS, incl. ~%.0f MB of libraries and data)" % ours["base_mb"] if ours.get("base_mb") else ""))
    if ref.get("base_mb"):
        inc = (ref["peak_mb"] - ref["base_mb"]) / (ours["peak_mb"] - ours["base_mb"])
        print(f"       ... what training adds above it  : {fmt(inc, 'x', 1)}  {ok(inc >= 4)}")
    print(f"R2     >= 0.9 after {args.epochs} epochs       : {fmt(ours['r2'], '', 3)}  {ok(ours['r2'] is not None and ours['r2'] >= 0.9)}"
          f"   (the reference on the same trials: {fmt(ref['r2'], '', 3)})")
    flat = on150 is not None and on600 is not None and on600 <= 1.05 * on150
    print(f"online memory flat in T (150 -> 600) : kept {fmt(on150, ' MB', 2)} -> {fmt(on600, ' MB', 2)}  {ok(flat)}")


if __name__ == "__main__":
    main()
