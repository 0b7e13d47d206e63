"""
SPARKS: minilatent's sparks.py against the reference package sparks-ai 0.2.1, side by side, fairly.

Data: make_rotation() saved once to one .npz file that every run loads: 100 Bernoulli neurons tuned to the phase
of a 2-D rotation (0.5-1.5 Hz), 80 train / 20 test trials x 150 bins of 10 ms; supervised decoding of the 2-D
latent (cos, sin of the phase); test R^2 of the posterior mean after 10 epochs, at `train sparks`'s batch size (5;
--batch sets it for both packages), one torch thread.

Runs (each its own process, so its peak memory (VmHWM) is its own; CPU seconds are process time), interleaved
seed by seed so that changes in the machine's load hit every run alike; medians over seeds (--runs, default 3):
    ours            SPARKSConfig() defaults (n_neurons, n_outputs set) trained as `train sparks` trains it
                    (the trainer's Adam at --lr, default the CLI's), the compiled kernel when there is a compiler
    ours torch      the same in pure torch (MINILATENT_NATIVE=0)
    ref defaults    sparks-ai with its own defaults (HebbianAttentionConfig(): dt 1 ms, tau_s 1 s, w_start 1;
                    its train(): Adam, loss summed over bins, gradient values clipped at 0.5)
    ref matched     sparks-ai with every setting matched in meaning to ours (the FAIRNESS list printed below):
                    dt 10 ms, tau_s 0.5 s, w_start 5 (its per-spike increment w_start * dt = our 0.05), the KL
                    weight times latent_dim (it averages the KL over latent dimensions where we sum), the same
                    optimiser and learning rate as ours, evaluated with the posterior mean as ours is
How both are timed, the same way: each run its own process with the same environment (OMP_NUM_THREADS and
MKL_NUM_THREADS 1, and torch.set_num_threads(1) in the worker), the same imports before the memory baseline
(torch._dynamo, which torch.optim's constructor imports anyway: the reference's worker holds 2,087 modules with or
without the early import), and the same two clocks around one epoch: process time (the figure the targets use: on
a shared machine it counts less of the other processes' load) and wall time (printed beside it). --process same
(the default) gives both packages the allocator setting `train sparks` asks for; --process own gives each what it
uses by itself (ours asks for it in Trainer.fit as `train sparks` does, the reference runs with glibc's defaults).
An independent side-by-side (sparks-ai through its own train() in a plain loop) had the reference at 5.9 s/epoch
where this harness had had 7.5 (issue 21). Every difference between the two was toggled one at a time on a 2-core
machine, each run its own process, interleaved, 12 rounds at load 1.1-9; the reference's epoch time relative to
this harness's way in the same round, median [range]: the plain loop (no env, no early torch._dynamo import, Adam)
1.08 [0.81, 1.40]; without the allocator setting 1.04 [0.79, 1.39]; without the early torch._dynamo import 0.95
[0.75, 1.05], without PYTHONWARNINGS=ignore 0.97 [0.81, 1.28], without the thread variables 1.02 [0.85, 1.26] (8
rounds each); without set_num_threads(1) 1.02, batches sliced without the DataLoader 1.04, in a (trials, time,
neurons) view 0.98 (3 rounds each); sparks-ai in a venv of its own with its own torch (here the same 2.13.0+cpu
build) instead of this environment's linked in: the same within noise. The real worker, this replica and the plain
loop over 10 epochs: 9.58 / 10.36 / 9.77 s. None slows the reference: the harness does not explain the gap. The
reference raises no warning while it trains (PYTHONWARNINGS, which only hid import-time messages, is no longer
set); wall and process time agree within 1% on a quiet machine (8.06 vs 8.07 s). What does move the figures is the
machine: over those hours the reference took 7.8-13.6 CPU s per epoch (median 8.2 in the quietest round, at load
1.1-1.8; 9.8 over all), ours 0.96-1.12 s; two reduced runs (one seed, minutes apart, --process same then own)
gave 9.3x at load 2.9-5.1 and 7.8x at load 1.2-3.2 (the reference 9.69 and 8.39 s, ours 1.04 and 1.07). Compare
ratios only from runs interleaved on one machine, with their loads (printed before and after each run).

Then one training batch's CPU time and peak memory at N = 100, 200, 400 (the reference's with --ref-batches: its
N = 400 batch needs ~15 GB), and the online mode's memory at T = 150 and 600. Targets: >= 8x less CPU time per
epoch than the reference (>= 3x in pure torch), >= 4x less memory added by training, R^2 >= 0.9 after 10 epochs;
one N = 400 batch <= 1 s and <= 1 GB.

    python benchmarks/sparks_vs_reference.py --install-ref      # first: sparks-ai 0.2.1 into /tmp/sparks_ref
    python benchmarks/sparks_vs_reference.py                    # everything (~60 min at load 2 on 2 cores)
    python benchmarks/sparks_vs_reference.py --batch 10 --no-torch   # the same at batch 10 (~35 min)
    python benchmarks/sparks_vs_reference.py --runs 5 --ref-batches

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
SETTINGS = dict(batch=None, epochs=10)  # batch None: `train sparks`'s default; the rest: SPARKSConfig()'s defaults,
                                        # for ours and (matched) the reference
ONE_BATCH = 10                          # trials in the one-batch figures (N = 100, 200, 400)
OURS_BETAS = (0.9, 0.99)               # the trainer's Adam betas (TrainerConfig.betas), used by ours and ref matched
REF_DEFAULT_LR = 1e-3                  # the reference run with its own defaults: Adam(lr=1e-3), its usual example
MODEL = {}                             # --model: SPARKSConfig fields that replace the defaults (ours and ref matched)
# the allocator setting `train sparks` asks for (TrainerConfig(keep_freed_memory=True): trainer.keep_freed_memory's
# mallopt values), as glibc environment variables: given to every process (--process same, the default)
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(2**30)}
PROCESS = {"mode": "same"}              # --process: 'same' (one setting for both) or 'own' (each package its own)


def cli_defaults():
    """ the learning rate and batch size `train sparks` uses by default (read from the CLI, so the benchmark follows it) """
    sys.path.insert(0, ROOT)
    from minilatent.__main__ import build_parser
    a = build_parser().parse_args(["train", "sparks", "--out", os.path.join(tempfile.gettempdir(), "unused")])
    return a.lr, a.batch_size


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


def baseline_mb():
    """ the memory before training, in both packages' workers: after importing torch._dynamo, which torch.optim
    imports when an optimiser is built (~73 MB here, the same in both), so that 'added by training' is what training
    allocates """
    import torch._dynamo  # noqa: F401
    return peak_mb()


# -----------------------------------------------------------------------------
# workers: each runs in its own process and prints one JSON line


def worker_ours(args, data):
    import torch
    sys.path.insert(0, ROOT)
    from minilatent.sparks import SPARKS, SPARKSConfig, saved_tensor_bytes, native_kernel
    from minilatent.trainer import Trainer, TrainerConfig
    torch.set_num_threads(1)
    native = native_kernel() is not None            # loads the cached build (the driver built it)
    xtr, ytr = torch.tensor(data["xtr"]), torch.tensor(data["ytr"])
    xte = torch.tensor(data["xte"])
    base = baseline_mb()                 # libraries imported, data loaded: what training adds comes on top
    torch.manual_seed(args.seed)
    cfg = SPARKSConfig(n_neurons=xtr.shape[2], n_outputs=ytr.shape[2], online=args.mode == "online",
                       **json.loads(args.cfg))
    model = SPARKS(cfg)
    B = args.batch
    own = args.process == "own"          # the allocator setting asked for as `train sparks` asks (not by the env)
    if args.what == "batch":
        if own:
            from minilatent.trainer import keep_freed_memory
            keep_freed_memory(True)
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=OURS_BETAS, weight_decay=0.0)
        times, kept = [], 0.0
        for _ in range(args.repeats):
            t0 = time.process_time()
            if args.mode == "online":
                steps = model.training_step((xtr[:B], ytr[:B]))
                while True:        # autograd memory of each online step's graph
                    try:
                        losses, b = saved_tensor_bytes(lambda: next(steps))
                    except StopIteration:
                        break
                    kept = max(kept, b / 2**20)
                    opt.zero_grad(); losses["loss"].backward(); opt.step()
                times.append(time.process_time() - t0)
                continue
            loss = model.compute_losses((xtr[:B], ytr[:B]))["loss"]
            opt.zero_grad(); loss.backward(); opt.step()
            times.append(time.process_time() - t0)
        if args.mode != "online":
            kept = saved_tensor_bytes(lambda: model.compute_losses((xtr[:B], ytr[:B])))[1] / 2**20
        return {"batch_s": statistics.median(times), "peak_mb": peak_mb(), "base_mb": base, "autograd_mb": kept,
                "native": native}
    # as `train sparks` trains (run.train_sparks): the trainer's AdamW (weight decay 0, so Adam), constant lr,
    # no EMA, no gradient clipping; here without validation, which the epoch times would otherwise include
    tc = TrainerConfig(max_epochs=args.epochs, batch_size=B, lr=args.lr, lr_schedule="constant", betas=OURS_BETAS,
                       ema_decay=None, progress=False, seed=args.seed, grad_clip=None, keep_freed_memory=own)
    trainer = Trainer(model, (xtr, ytr), None, tc)
    epoch_s, wall_s, last = [], [], [(time.process_time(), time.perf_counter())]

    def tick(tr):
        now = (time.process_time(), time.perf_counter())
        epoch_s.append(now[0] - last[0][0])
        wall_s.append(now[1] - last[0][1])
        last[0] = now
    trainer.add_callback("on_epoch_end", tick)
    trainer.fit()
    t0 = time.process_time()
    pred = model.predict(xte)["now"]
    test_s = time.process_time() - t0
    return {"epoch_s": statistics.median(epoch_s), "epochs": epoch_s, "wall_s": statistics.median(wall_s),
            "test_s": test_s, "r2": r2(pred, data["yte"]), "peak_mb": peak_mb(), "base_mb": base, "native": native}


def r2(pred, y):
    """ mean over outputs of 1 - SSE / SST over all test trials and bins """
    import numpy as np
    return float(np.mean(1 - ((pred - y) ** 2).sum((0, 1)) / ((y - y.mean((0, 1))) ** 2).sum((0, 1))))


def ref_settings(matched, lr):
    """ the reference's settings in one of the two modes; ours are SPARKSConfig()'s defaults (with --model) """
    sys.path.insert(0, ROOT)
    from minilatent.sparks import SPARKSConfig
    c = SPARKSConfig(**MODEL)
    if not matched:        # its own defaults (HebbianAttentionConfig(), its train(), Adam at its usual 1e-3)
        return dict(dt=0.001, tau_s=1.0, w_start=1.0, beta=c.beta, lr=REF_DEFAULT_LR, betas=(0.9, 0.999),
                    embed_dim=c.embed_dim, latent_dim=c.latent_dim, tau_p=c.tau_p, posterior_mean=False)
    return dict(dt=c.dt, tau_s=c.tau_s, w_start=c.w_start / c.dt,     # its increment per spike is w_start * dt
                beta=c.beta * c.latent_dim,                           # it averages the KL over latent dimensions
                lr=lr, betas=OURS_BETAS, embed_dim=c.embed_dim, latent_dim=c.latent_dim, tau_p=c.tau_p,
                posterior_mean=True)


def worker_ref(args, data):
    import numpy as np
    import torch
    from sparks.models.sparks import SPARKS
    from sparks.models.dataclasses import HebbianAttentionConfig
    from sparks.utils.train import train
    from sparks.utils.test import test
    torch.set_num_threads(1)
    S = json.loads(args.cfg)                                  # ref_settings(...), from the driver
    # the reference wants (trials, neurons, time) and (trials, outputs, time)
    xtr = torch.tensor(data["xtr"]).transpose(1, 2).contiguous()
    ytr = torch.tensor(data["ytr"]).transpose(1, 2).contiguous()
    xte = torch.tensor(data["xte"]).transpose(1, 2).contiguous()
    yte = torch.tensor(data["yte"]).transpose(1, 2).contiguous()
    base = baseline_mb()
    B = args.batch
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    model = SPARKS(n_neurons_per_session=xtr.shape[1], embed_dim=S["embed_dim"], latent_dim=S["latent_dim"],
                   tau_p=S["tau_p"], tau_f=1, output_dim_per_session=ytr.shape[1],
                   hebbian_config=HebbianAttentionConfig(tau_s=S["tau_s"], dt=S["dt"], w_start=S["w_start"]))
    opt = torch.optim.AdamW(model.parameters(), lr=S["lr"], betas=tuple(S["betas"]), weight_decay=0.0)
    loss_fn = torch.nn.MSELoss()
    if args.what == "batch":
        from sparks.utils.train import train_on_batch
        from sparks.data.providers import StandardTargetProvider
        times = []
        for _ in range(args.repeats):
            t0 = time.process_time()
            train_on_batch(model, xtr[:B], StandardTargetProvider(ytr[:B]), loss_fn, opt,
                           beta=S["beta"], online=args.mode == "online")
            times.append(time.process_time() - t0)
        return {"batch_s": statistics.median(times), "peak_mb": peak_mb(), "base_mb": base}
    g = torch.Generator().manual_seed(args.seed)
    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xtr, ytr), batch_size=B, shuffle=True, generator=g)
    tdl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xte, yte), batch_size=B, shuffle=False)
    epoch_s, wall_s = [], []
    for _ in range(args.epochs):
        t0, w0 = time.process_time(), time.perf_counter()
        train(model, [dl], loss_fn, opt, beta=S["beta"], online=args.mode == "online")
        epoch_s.append(time.process_time() - t0)
        wall_s.append(time.perf_counter() - w0)
    res = {}
    for kind in ("sampled", "mean"):    # its test() samples the latent; ours reports the posterior mean
        if kind == "mean":
            model.encoder.reparametrize = lambda mu, logvar: mu
        t0 = time.process_time()
        _, _, dec = test(model, [tdl], loss_fn=loss_fn)
        res[f"test_s_{kind}"] = time.process_time() - t0
        pred = dec.numpy().reshape(len(xte), -1, xte.shape[2]).transpose(0, 2, 1)      # (trials, T, outputs)
        res[f"r2_{kind}"] = r2(pred, data["yte"])
    return {"epoch_s": statistics.median(epoch_s), "epochs": epoch_s, "wall_s": statistics.median(wall_s),
            "test_s": res["test_s_mean"],
            "r2": res["r2_mean" if S["posterior_mean"] else "r2_sampled"], "r2_sampled": res["r2_sampled"],
            "r2_mean": res["r2_mean"], "peak_mb": peak_mb(), "base_mb": base}


# -----------------------------------------------------------------------------
# the driver


def make_data(path, n_neurons=100, n_bins=150, seed=0):
    import numpy as np
    sys.path.insert(0, ROOT)
    from minilatent.synthetic import make_rotation
    d = make_rotation(n_neurons=n_neurons, n_bins=n_bins, seed=seed)
    np.savez(path, xtr=d["train_encod_data"], ytr=d["train_latents"], xte=d["valid_encod_data"],
             yte=d["valid_latents"])
    return path


def run_worker(python, pkg, data_path, what, mode="offline", epochs=10, repeats=3, seed=0, timeout=3600, native=True,
               cfg=None, lr=None, batch=None):
    """ one run in its own process (a worker of this script); returns its JSON line, or {'error': ...} """
    if pkg == "ours":
        cfg = {**MODEL, **(cfg or {})}
    cmd = [python, os.path.abspath(__file__), "--worker", pkg, "--data", data_path, "--what", what, "--mode", mode,
           "--epochs", str(epochs), "--repeats", str(repeats), "--seed", str(seed), "--cfg", json.dumps(cfg or {}),
           "--lr", str(lr if lr is not None else 0.0),
           "--batch", str(batch or SETTINGS["batch"]), "--process", PROCESS["mode"]]
    # one thread for both (the comparison's premise; the workers also call torch.set_num_threads(1)); 'same': the
    # allocator setting for both, 'own': none here (ours asks for it in Trainer.fit as `train sparks` does, the
    # reference runs with glibc's defaults as it would by itself)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONWARNINGS") and k not in MALLOC_ENV}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **(MALLOC_ENV if PROCESS["mode"] == "same" else {}))
    if not native:
        env["MINILATENT_NATIVE"] = "0"
    load0 = round(os.getloadavg()[0], 1)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=tempfile.gettempdir())
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if r.returncode != 0 or not lines:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": tail[0][:200]}
    res = json.loads(lines[-1])
    res["load0"] = load0                                      # the 1-minute load average when the run started
    res["load"] = round(os.getloadavg()[0], 1)                # ... and when it ended
    return res


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


def fairness(lr):
    """ every setting of the matched comparison: what was matched, and what still differs and why """
    sys.path.insert(0, ROOT)
    from minilatent.sparks import SPARKSConfig
    c, m = SPARKSConfig(**MODEL), ref_settings(True, lr)
    return [
        ("matched", "the data: one .npz file (make_rotation(), seed 0) loaded by every run"),
        ("matched", f"optimiser: Adam (AdamW, weight decay 0), lr {lr:g}, betas {OURS_BETAS}, batch "
                    f"{SETTINGS['batch']}, {SETTINGS['epochs']} epochs, trials shuffled every epoch"),
        ("matched", f"trace decay per bin exp(-dt/tau_s): dt {c.dt} s, tau_s {c.tau_s} s in both (the reference's "
                    "defaults, dt 1 ms and tau_s 1 s, decay 0.999 per 10 ms bin)"),
        ("matched", f"trace increment per spike: ours w_start {c.w_start}, the reference w_start * dt = "
                    f"{m['w_start']:g} * {c.dt} (its default 1 * 0.001)"),
        ("matched", f"KL strength: ours beta {c.beta:g} x KL summed over the {c.latent_dim} latent dims; the "
                    f"reference beta {m['beta']:g} x KL averaged over them (the same weight per dimension)"),
        ("matched", f"embed_dim {c.embed_dim}, latent_dim {c.latent_dim}, tau_p {c.tau_p}, tau_f 1, one head, no "
                    "conventional attention layers, clip of A at (-0.5, 1.5), supervised MSE"),
        ("matched", "evaluation: test R^2 of the posterior-mean prediction (the reference's test() samples the "
                    "latent; its sampled R^2 is printed too)"),
        ("matched", "memory added by training = peak (VmHWM) minus the baseline after imports and data, torch._dynamo "
                    "included (torch.optim's constructor imports it: ~73 MB in either package)"),
        ("matched", "the process: each run its own, one thread (OMP/MKL_NUM_THREADS=1 and torch.set_num_threads(1)), "
                    "the same imports before the baseline, the same clocks around one epoch (process time; wall "
                    "time beside it)"),
        ("matched", "the allocator (--process same): every process with glibc's malloc keeping freed memory "
                    "(MALLOC_MMAP_THRESHOLD_ 32 MiB, MALLOC_TRIM_THRESHOLD_ 1 GiB), what `train sparks` asks for in "
                    "Trainer.fit; it does not favour ours: the reference is not slower with it (without it: 1.04x "
                    "its time, [0.79, 1.39], 12 interleaved pairs)") if PROCESS["mode"] == "same" else
        ("own", "the allocator (--process own): each package its own: ours keeps freed memory as `train sparks` "
                "asks for in Trainer.fit, the reference runs with glibc's defaults"),
        ("differs", "loss over time: the reference sums the per-bin losses, ours averages them; with Adam this "
                    "scale (150x) does not change the steps, except through its gradient clipping:"),
        ("differs", "gradient clipping: the reference clips every gradient value at +-0.5 (hard-coded in its train()); "
                    "ours does not clip (sparks_ablation.py measures clipping)"),
        ("differs", "architecture (each documented in sparks.py): its decoder's hidden layer has "
                    f"mean(latent_dim * tau_p, outputs) = {int((c.latent_dim * c.tau_p + 2) / 2)} units, ours "
                    f"{c.dec_hidden}; its block has an output projection also with one head and an RMSNorm-GLU feed-"
                    "forward, ours Linear-ReLU-Linear; log-w init spread sqrt(1/N) vs our 1/N; V and its bias start "
                    "as nn.Linear's (uniform) vs our randn/sqrt(N) and 0"),
        ("differs", "speed of the implementations (what is measured): it steps through the bins in Python with "
                    "autograd; ours scans them (sparks.py's appendix)"),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--install-ref", action="store_true", help="install sparks-ai 0.2.1 into /tmp/sparks_ref first")
    ap.add_argument("--no-ref", action="store_true", help="skip the reference (only ours is measured)")
    ap.add_argument("--ref-batches", action="store_true", help="also measure the reference's one-batch figures "
                    "(slow; N = 400 needs ~15 GB)")
    ap.add_argument("--runs", type=int, default=3, help="seeds 0..runs-1 of every training run")
    ap.add_argument("--epochs", type=int, default=SETTINGS["epochs"])
    ap.add_argument("--batch", type=int, default=None, help="trials per batch, ours and the reference (default: "
                    "`train sparks`'s)")
    ap.add_argument("--lr", type=float, default=None, help="ours and ref matched (default: the CLI's default)")
    ap.add_argument("--no-torch", action="store_true", help="skip the pure-torch runs of ours")
    ap.add_argument("--process", choices=["same", "own"], default="same", help="the allocator setting: 'same' gives "
                    "every process `train sparks`'s (glibc keeps freed memory; the default), 'own' gives each package "
                    "what it uses by itself (ours asks for it in Trainer.fit, the reference glibc's defaults)")
    ap.add_argument("--model", default="{}", help="SPARKSConfig fields in JSON replacing the defaults for ours and ref "
                    "matched, e.g. '{\"embed_dim\": 32}'")
    # worker mode (internal)
    ap.add_argument("--worker", choices=["ours", "ref"])
    ap.add_argument("--data"); ap.add_argument("--what", default="train"); ap.add_argument("--mode", default="offline")
    ap.add_argument("--repeats", type=int, default=3); ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cfg", default="{}")
    args = ap.parse_args()
    if args.worker:
        import numpy as np
        data = dict(np.load(args.data))
        fn = worker_ours if args.worker == "ours" else worker_ref
        print(json.dumps(fn(args, data)))
        return

    MODEL.update(json.loads(args.model))
    PROCESS["mode"] = args.process
    if args.install_ref:
        install_ref()
    cli_lr, cli_batch = cli_defaults()
    lr = args.lr if args.lr is not None else cli_lr
    SETTINGS["batch"] = args.batch if args.batch is not None else cli_batch
    py_ref, why = (None, "--no-ref") if args.no_ref else ref_python()
    tmp = tempfile.mkdtemp(prefix="sparks_bench_")
    data = make_data(os.path.join(tmp, "rotation.npz"))
    sys.path.insert(0, ROOT)
    from minilatent.sparks import native_kernel, _NATIVE
    kernel = native_kernel() is not None        # build (or load) it once, before anything is timed
    print(f"data: {data} (make_rotation(): 80 train / 20 test trials x 150 bins x 100 neurons)")
    print(f"one torch thread; CPU seconds are process time, wall seconds perf_counter, both timed around the same "
          f"epoch in either package; the machine is shared: load {os.getloadavg()[0]:.1f} (1-minute average) on "
          f"{os.cpu_count()} cores at the start, and before and after each run below")
    print("process settings (--process " + PROCESS["mode"] + "): " + (
        "every process with the allocator setting `train sparks` asks for (glibc keeps freed memory)"
        if PROCESS["mode"] == "same" else "each package its own: ours asks for the allocator setting in Trainer.fit "
        "as `train sparks` does, the reference runs with glibc's defaults"))
    if MODEL:
        print(f"model settings replacing SPARKSConfig()'s defaults (ours and ref matched): {MODEL}")
    print("ours: SPARKSConfig() defaults, the recurrence in " + ("the compiled kernel" if kernel else
          f"pure torch (no compiled kernel: {_NATIVE['error']})") + f"; lr {lr:g}, batch {SETTINGS['batch']} (the CLI's "
          f"defaults unless --lr/--batch)")
    if not py_ref:
        print(f"reference: not measured ({why})")
    print("\nFAIRNESS (ours vs ref matched)")
    for kind, text in fairness(lr):
        print(f"  {kind:8s} {text}")
    print()

    runs = [("ours", lambda seed: run_worker(sys.executable, "ours", data, "train", epochs=args.epochs, seed=seed,
                                            lr=lr))]
    if py_ref:
        runs += [(f"ref {mode}", (lambda mode: lambda seed: run_worker(
            py_ref, "ref", data, "train", epochs=args.epochs, seed=seed,
            cfg=ref_settings(mode == "matched", lr)))(mode)) for mode in ("defaults", "matched")]
    if not args.no_torch:
        runs.append(("ours torch", lambda seed: run_worker(sys.executable, "ours", data, "train", epochs=args.epochs,
                                                          seed=seed, lr=lr, native=False)))
    res = {name: [] for name, _ in runs}
    for seed in range(args.runs):                     # interleaved: every package once per seed
        for name, fn in runs:
            r = fn(seed)
            res[name].append(r)
            brief = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k != "epochs"}
            print(f"{name:11s} seed {seed}: {brief}", flush=True)

    def med(rows, k):
        v = [r[k] for r in rows if k in r]
        return statistics.median(v) if v else None

    def ratio(a, b, k):                               # median over seeds of the per-seed (interleaved) ratio
        v = [rb[k] / ra[k] for ra, rb in zip(res[a], res.get(b, [])) if k in ra and k in rb]
        return (statistics.median(v), min(v), max(v)) if v else (None, None, None)

    names = [n for n, _ in runs]
    print(f"\n--- offline (full BPTT) training, {args.epochs} epochs, medians of {args.runs} seeds")
    print(f"{'':34s}" + "".join(f"{n:>14s}" for n in names))
    rows = [("CPU s / epoch", "epoch_s", 2), ("wall s / epoch", "wall_s", 2), ("peak memory (MB, VmHWM)", "peak_mb", 0),
            ("  import + data baseline (MB)", "base_mb", 0), ("test R2 (posterior mean)", "r2", 3),
            ("  ... sampled (reference test())", "r2_sampled", 3), ("CPU s to evaluate 20 trials", "test_s", 2),
            ("load at the start of the runs", "load0", 1), ("load at the end of the runs", "load", 1)]
    for label, k, nd in rows:
        print(f"{label:34s}" + "".join(f"{fmt(med(res[n], k), '', nd):>14s}" for n in names))
    added = {n: [r["peak_mb"] - r["base_mb"] for r in res[n] if "peak_mb" in r] for n in names}
    print(f"{'memory added by training (MB)':34s}" + "".join(
        f"{fmt(statistics.median(added[n]) if added[n] else None, '', 0):>14s}" for n in names))
    ref_key = "ref matched" if "ref matched" in res else None
    sp = ratio("ours", ref_key, "epoch_s") if ref_key else (None,) * 3
    sp_t = ratio("ours torch", ref_key, "epoch_s") if ref_key and "ours torch" in res else (None,) * 3
    sp_w = ratio("ours", ref_key, "wall_s") if ref_key else (None,) * 3
    mem = None
    if ref_key and added["ours"] and added[ref_key]:
        mem = statistics.median(added[ref_key]) / statistics.median(added["ours"])

    print(f"\n--- one offline training batch (B={ONE_BATCH}, T=150): CPU s and peak MB")
    batch = {}
    for N in (100, 200, 400):
        dp = make_data(os.path.join(tmp, f"rotation_{N}.npz"), n_neurons=N)
        o = run_worker(sys.executable, "ours", dp, "batch", repeats=3, lr=lr, batch=ONE_BATCH)
        r = run_worker(py_ref, "ref", dp, "batch", repeats=1, cfg=ref_settings(True, lr), batch=ONE_BATCH) \
            if (py_ref and args.ref_batches) else None
        batch[N] = o
        ref_txt = (f"sparks-ai {fmt(r.get('batch_s'), ' s')} / {fmt(r.get('peak_mb'), ' MB', 0)}" if r else
                   "sparks-ai not measured (--ref-batches)")
        print(f"N={N:4d}  ours {fmt(o.get('batch_s'), ' s')} / {fmt(o.get('peak_mb'), ' MB', 0)}   {ref_txt}   "
              f"(load {o.get('load')})", flush=True)
    if SETTINGS["batch"] != ONE_BATCH:               # and at the batch size the comparison above trains with
        o = run_worker(sys.executable, "ours", dp, "batch", repeats=3, lr=lr)
        batch["400 default"] = o
        print(f"N= 400, B={SETTINGS['batch']}  ours {fmt(o.get('batch_s'), ' s')} / {fmt(o.get('peak_mb'), ' MB', 0)}   "
              f"(load {o.get('load')})", flush=True)

    print(f"\n--- online mode (an optimiser step per bin, state detached) vs full BPTT: one batch (N=100, "
          f"B={SETTINGS['batch']});")
    print("    'kept' = what autograd holds for the backward pass (the part that grows with T), peak = process RSS")
    for T in (150, 600):
        dp = make_data(os.path.join(tmp, f"rotation_T{T}.npz"), n_bins=T)
        o = run_worker(sys.executable, "ours", dp, "batch", mode="online", repeats=1, lr=lr)
        f = run_worker(sys.executable, "ours", dp, "batch", mode="offline", repeats=1, lr=lr)
        print(f"T={T:4d}  online {fmt(o.get('batch_s'), ' s')}, kept {fmt(o.get('autograd_mb'), ' MB', 2)}, "
              f"peak {fmt(o.get('peak_mb'), ' MB', 0)}   |   BPTT {fmt(f.get('batch_s'), ' s')}, kept "
              f"{fmt(f.get('autograd_mb'), ' MB', 1)}, peak {fmt(f.get('peak_mb'), ' MB', 0)}", flush=True)
        batch[f"online{T}"] = o.get("autograd_mb")
    on150, on600 = batch["online150"], batch["online600"]

    print("\n--- targets (ratios: median over seeds of each interleaved pair, [min, max])")
    ok = lambda c: "MET" if c else "NOT MET"
    rng = lambda t: f"[{fmt(t[1], 'x', 1)}, {fmt(t[2], 'x', 1)}]" if t[0] is not None else ""
    print(f"speed  >= 8x less CPU time per epoch than ref matched : {fmt(sp[0], 'x', 1)} {rng(sp)}  "
          f"{ok(sp[0] >= 8) if sp[0] is not None else 'not measured'}")
    print(f"       (the same in wall-clock time, not a target   : {fmt(sp_w[0], 'x', 1)} {rng(sp_w)})")
    print(f"       >= 3x in pure torch                          : {fmt(sp_t[0], 'x', 1)} {rng(sp_t)}  "
          f"{ok(sp_t[0] >= 3) if sp_t[0] is not None else 'not measured'}")
    print(f"memory >= 4x less added by training                 : {fmt(mem, 'x', 1)}  "
          f"{ok(mem >= 4) if mem is not None else 'not measured'}")
    r2o = med(res["ours"], "r2")
    print(f"R2     >= 0.9 after {args.epochs} epochs (defaults)           : {fmt(r2o, '', 3)} "
          f"({' '.join(fmt(r.get('r2'), '', 3) for r in res['ours'])})  {ok(r2o is not None and r2o >= 0.9)}")
    for key, B in ((400, ONE_BATCH), ("400 default", SETTINGS["batch"])):
        if key not in batch:
            continue
        b4 = batch[key]
        print(f"N=400  one batch of {B:2d} <= 1 s and <= 1 GB            : {fmt(b4.get('batch_s'), ' s')}, "
              f"{fmt(b4.get('peak_mb'), ' MB', 0)}  {ok(b4.get('batch_s', 9) <= 1 and b4.get('peak_mb', 9e9) <= 1024)}")
    flat = on150 is not None and on600 is not None and on600 <= 1.05 * on150
    print(f"online memory flat in T (150 -> 600)                 : kept {fmt(on150, ' MB', 2)} -> "
          f"{fmt(on600, ' MB', 2)}  {ok(flat)}")


if __name__ == "__main__":
    main()
