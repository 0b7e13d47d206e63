"""
One training loop for every trainable model in minilatent, in the spirit of minGPT's trainer:
nothing in here knows about LFADS or SPARKS.

A model plugs in through a small interface:
  model.training_step(batch, weights)   -> dict of losses with a 'loss' to backpropagate, or an
                                           iterator of such dicts (one optimiser step per dict, e.g.
                                           online learning that steps at every time bin)
  model.validation_step(batch, weights) -> dict of losses (optional; defaults to training_step)
  model.weight_schedules()              -> {name: f(epoch) -> weight} (optional; e.g. KL/L2 ramps)
  model.configure_optimizer(cfg)        -> torch optimizer (optional; default AdamW on all params)
  model.check_data(batch, session=None)  -> raise ValueError naming the problem (optional): the full data
                                           check (NaN, negative counts, ...), run once per dataset by fit(),
                                           so that training_step itself needs only a cheap shape check
`batch` is whatever the data holds for a slice of trials: a tensor, or a tuple of tensors that share
their first (trial) dimension. Several sessions (recordings with different neuron counts) are given
as a list of such datasets: each batch comes from one session and the model receives session=k.

The trainer does the rest: shuffled mini-batches from a seeded generator, optimiser steps with
gradient clipping, a learning-rate schedule, weight schedules evaluated at the fractional epoch, an
exponential moving average (EMA) of the weights used for validation, early stopping on a validation
loss with the best weights restored, a wall-clock budget (max_seconds), a tqdm progress bar,
callbacks, and atomic checkpoints that resume to exactly the result of an uninterrupted run.

Randomness: the trainer owns its random streams and never reseeds torch's global generator for the
caller: batch order comes from its own generator, and fit() runs the model (dropout, sampling) on a
torch state seeded from cfg.seed that is forked from, and handed back to, the global one.

Budgets and resume: max_epochs and max_seconds count from the start of the run (over resumed runs).
The learning-rate schedule is a function of the fraction of the budget done; resumed with the same
budget it continues exactly. Resumed with a new budget, it continues from where it stood and reaches its
final value at the end of the new budget (a run that had finished continues at its final learning rate).
"""

import copy
import ctypes
import math
import time
from dataclasses import dataclass, asdict, field, replace
from typing import Callable, Optional

import numpy as np
import torch

from .files import atomic_write

# -----------------------------------------------------------------------------


def keep_freed_memory(keep: bool = True) -> bool:
    """ glibc (Linux) only, process-wide. keep=True: malloc serves blocks up to 32 MiB from its heap and keeps up to
    1 GiB of freed memory there instead of handing it back to the OS, so a training step that allocates the same
    large tensors as the step before reuses their pages instead of page-faulting fresh ones (measured on a SPARKS
    batch: 12,000 faults and 28 ms of system time per step -> none, the step 190 -> 160 ms). The peak memory is
    unchanged; what was freed stays resident until keep=False. keep=False: glibc's initial thresholds (128 KiB
    each: large blocks are mapped and unmapped, freed memory goes back). Returns False where there is no glibc. """
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3          # mallopt parameters (malloc.h)
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):          # no mallopt (macOS, Windows); musl's returns 0: False
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mmap, trim = (32 * 2**20, 2**30) if keep else (128 * 2**10, 128 * 2**10)
    return mallopt(M_MMAP_THRESHOLD, mmap) == 1 and mallopt(M_TRIM_THRESHOLD, trim) == 1


@dataclass
class TrainerConfig:
    max_epochs: int = 200           # upper bound on passes over the training data
    max_seconds: Optional[float] = None  # wall-clock budget: training stops at the first batch past it. With a
                                    # cosine schedule the learning rate then follows the clock: the same seed
                                    # does not reproduce the run; max_epochs = the epochs it reached comes close
    batch_size: int = 32            # trials per batch (small batches = more updates per second on a CPU)
    lr: float = 1e-2                # peak learning rate (suits LFADS-sized GRUs at batch 32 with cosine decay)
    lr_schedule: str = "cosine"     # 'constant' or 'cosine': decays to lr * lr_min_factor at max_epochs, or at
                                    # max_seconds if that budget is set and runs out first
    lr_min_factor: float = 0.05     # final learning rate as a fraction of lr (cosine)
    warmup_steps: int = 0           # linear learning-rate warm-up, in optimiser steps
    weight_decay: float = 0.0       # AdamW weight decay (the default optimiser)
    betas: tuple = (0.9, 0.99)      # Adam betas
    grad_clip: Optional[float] = 200.0  # clip the global gradient norm; None: off. A guard against rare exploding steps,
                                    # not a tuned constraint (lfads-torch's 200 applies to its loss scaled by 1e4,
                                    # so it is about 1e4 times tighter in the units of the loss)
    ema_decay: Optional[float] = 0.98   # EMA of the weights, used for validation and the final model; None: off
    early_stopping_patience: Optional[int] = None  # stop after this many epochs without validation improvement
    monitor: str = "loss"           # validation quantity to minimise for early stopping / best weights
    restore_best: bool = True       # at the end, load the weights with the best validation score
    valid_every: int = 1            # validate every k epochs
    valid_batch_size: int = 128     # trials per validation forward pass (no gradients: larger is faster, memory grows)
    seed: int = 0                   # seeds batch order and all torch randomness (dropout, sampling)
    num_threads: Optional[int] = None  # torch intra-op threads during fit, restored after it (process-wide while it
                                    # runs, so it is asked for, not assumed: the command line asks for 1, the fastest
                                    # for small RNNs on few cores); None: leave torch's setting alone
    keep_freed_memory: bool = False  # during fit, glibc's malloc keeps freed blocks for reuse (process-wide while it
                                    # runs; see keep_freed_memory): large tensors allocated anew every step stop
                                    # page-faulting (SPARKS: ~15% of a step). The command line asks for it
    checkpoint_path: Optional[str] = None  # write a checkpoint here (atomically) every checkpoint_every epochs
    checkpoint_every: int = 1
    progress: bool = True           # show a tqdm progress bar
    device: str = "cpu"             # where to train ('cpu', 'cuda', ...)


@dataclass
class History:
    """ per-epoch records: epoch, step, seconds, lr, weights, train_* and valid_* losses """
    rows: list = field(default_factory=list)

    def column(self, key):
        return np.array([r.get(key, np.nan) for r in self.rows], dtype=float)

    def __len__(self):
        return len(self.rows)


# -----------------------------------------------------------------------------


def _as_sessions(data):
    """ Normalise data to (list of sessions, multi_session flag); each session a tuple of tensors. """
    if data is None:
        return None, False
    multi = isinstance(data, list)
    sessions = data if multi else [data]
    out = []
    for s, d in enumerate(sessions):
        t = (d,) if isinstance(d, torch.Tensor) else tuple(d)
        if not t or not all(isinstance(x, torch.Tensor) for x in t):
            raise TypeError(f"session {s}: data must be a tensor or a tuple of tensors, got {type(d).__name__}")
        n = t[0].shape[0]
        for i, x in enumerate(t):
            if x.shape[0] != n:
                raise ValueError(f"session {s}: tensor {i} has {x.shape[0]} trials but tensor 0 has {n}")
        out.append(t)
    return out, multi


def _to(batch, device):
    return tuple(x.to(device, non_blocking=True) for x in batch)


def _unbatch(t):
    return t[0] if len(t) == 1 else t


class Trainer:
    """ a generic mini-batch training loop: the model supplies its losses, the trainer the rest """

    def __init__(self, model, train_data, valid_data=None, cfg: Optional[TrainerConfig] = None, **overrides):
        self.cfg = copy.deepcopy(cfg) if cfg is not None else TrainerConfig()
        for k, v in overrides.items():
            if not hasattr(self.cfg, k):
                raise KeyError(f"unknown TrainerConfig field {k!r}")
            setattr(self.cfg, k, v)
        _check_config(self.cfg)
        self.model = model.to(self.cfg.device)
        self.train_sessions, self.multi = _as_sessions(train_data)
        if self.train_sessions is None:
            raise ValueError("train_data: no training data given")
        self.valid_sessions, _ = _as_sessions(valid_data)
        if self.valid_sessions is not None and len(self.valid_sessions) != len(self.train_sessions):
            raise ValueError(f"{len(self.train_sessions)} training sessions but {len(self.valid_sessions)} validation sessions")
        self.callbacks = {}
        self.history = History()
        self.epoch = 0
        self.step = 0
        self.best_score = math.inf
        self.best_state = None
        self.bad_epochs = 0
        self.elapsed = 0.0           # training seconds so far (summed over resumed runs)
        self.stop_reason = None
        self.saved_epoch = None      # the epoch of the last checkpoint written or loaded
        self.extra_state = {}        # anything the caller wants stored in the checkpoint (e.g. the CLI's options)
        self.generator = torch.Generator().manual_seed(self.cfg.seed)        # batch order
        self.torch_rng = torch.Generator().manual_seed(self.cfg.seed).get_state()  # dropout, sampling (see fit)
        self._anchor = None          # (progress, raw progress) where a resumed run with a new budget took over
        self._data_checked = False
        self._in_fit = False
        self.optimizer = self._make_optimizer()
        self.ema = self._ema_params() if self.cfg.ema_decay else None
        self.schedules = getattr(model, "weight_schedules", lambda: {})()

    # --- set-up ----------------------------------------------------------------

    def _make_optimizer(self):
        if hasattr(self.model, "configure_optimizer"):
            return self.model.configure_optimizer(self.cfg)
        params = [p for p in self.model.parameters() if p.requires_grad]
        # torch's fused AdamW (CPU and CUDA, floating point): the same update as its per-tensor loop in one kernel
        # per step; for a small model the loop's overhead is most of the step (SPARKS' 99k parameters in 16 tensors:
        # 0.79 -> 0.19 ms a step on one CPU thread)
        fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
        return torch.optim.AdamW(params, lr=self.cfg.lr, betas=self.cfg.betas, weight_decay=self.cfg.weight_decay,
                                 fused=True if fused else None)

    def _ema_params(self):
        return {k: v.detach().clone() for k, v in self.model.state_dict().items() if v.is_floating_point()}

    def add_callback(self, event: str, fn: Callable):
        """ events: 'on_batch_end', 'on_epoch_end' (after validation), 'on_fit_end'; fn(trainer) """
        self.callbacks.setdefault(event, []).append(fn)

    def _fire(self, event):
        for fn in self.callbacks.get(event, []):
            fn(self)

    def check_data(self):
        """ The one full check of the data (every session, train and valid): finite values, then the model's
        own check_data if it has one. fit() runs it once; the training steps only check shapes. """
        check = getattr(self.model, "check_data", None)
        for split, sessions in (("train", self.train_sessions), ("valid", self.valid_sessions or [])):
            for s, sess in enumerate(sessions):
                where = f"{split} data" + (f" (session {s})" if self.multi else "")
                for i, x in enumerate(sess):
                    if x.is_floating_point() and not torch.isfinite(x).all():
                        raise ValueError(f"{where}: tensor {i} contains NaN or infinite values")
                if check is not None:
                    b = _unbatch(sess)
                    check(b, session=s) if self.multi else check(b)
        self._data_checked = True

    # --- schedules -------------------------------------------------------------

    def steps_per_epoch(self):
        return sum(math.ceil(s[0].shape[0] / self.cfg.batch_size) for s in self.train_sessions)

    def _raw_progress(self, step, elapsed=None, cfg=None):
        """ fraction of a budget done: of max_epochs, or of max_seconds if that budget runs out first """
        cfg = cfg or self.cfg
        frac = step / max(1, cfg.max_epochs * self.steps_per_epoch())
        if cfg.max_seconds and elapsed is not None:
            frac = max(frac, elapsed / cfg.max_seconds)
        return min(frac, 1.0)

    def progress(self, step, elapsed=None):
        """ fraction of training done (0..1), which drives the learning-rate schedule. After a resume with a
        new budget it continues from where the old run stood and reaches 1 at the end of the new budget. """
        raw = self._raw_progress(step, elapsed)
        if self._anchor is None:
            return raw
        p0, r0 = self._anchor
        if r0 >= 1.0:
            return p0
        return min(p0 + (1.0 - p0) * max(raw - r0, 0.0) / (1.0 - r0), 1.0)

    def lr_at(self, step, elapsed=None):
        """ learning rate at an optimiser step (and elapsed seconds, when training under a time budget) """
        c = self.cfg
        lr = c.lr
        if c.warmup_steps and step < c.warmup_steps:
            return lr * (step + 1) / c.warmup_steps
        if c.lr_schedule == "cosine":
            frac = self.progress(step, elapsed)
            return lr * (c.lr_min_factor + (1 - c.lr_min_factor) * 0.5 * (1 + math.cos(math.pi * frac)))
        return lr

    def weights_at(self, epoch_float):
        return {k: float(f(epoch_float)) for k, f in self.schedules.items()}

    # --- batching --------------------------------------------------------------

    def _epoch_batches(self):
        """ (session, index tensor) for each batch of one epoch, in a seeded random order """
        order = []
        for s, sess in enumerate(self.train_sessions):
            perm = torch.randperm(sess[0].shape[0], generator=self.generator)
            for i in range(0, len(perm), self.cfg.batch_size):
                order.append((s, perm[i:i + self.cfg.batch_size]))
        if len(self.train_sessions) > 1:  # interleave sessions
            idx = torch.randperm(len(order), generator=self.generator).tolist()
            order = [order[i] for i in idx]
        return order

    def _call(self, fn, batch, weights, session):
        batch = _unbatch(batch)
        return fn(batch, weights, session=session) if self.multi else fn(batch, weights)

    # --- the loop --------------------------------------------------------------

    def fit(self):
        """ Train until max_epochs, the time budget or early stopping. Returns the History.
        Raises FloatingPointError (the model untouched since the last checkpoint) if the loss turns NaN. """
        c = self.cfg
        if not self._data_checked:
            self.check_data()
        prev_threads = torch.get_num_threads()
        if c.num_threads:
            torch.set_num_threads(c.num_threads)
        kept = c.keep_freed_memory and keep_freed_memory()
        devices = [torch.device(c.device).index or 0] if torch.device(c.device).type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):      # the caller's global RNG is left as it was
                torch.set_rng_state(self.torch_rng)
                if devices and self.step == 0:
                    torch.cuda.manual_seed_all(c.seed)
                self._in_fit = True
                try:
                    self._fit()
                finally:
                    self._in_fit = False
                    self.torch_rng = torch.get_rng_state()
        finally:
            if c.num_threads:
                torch.set_num_threads(prev_threads)
            if kept:
                keep_freed_memory(False)
        return self.history

    def _fit(self):
        c = self.cfg
        bar = self._progress_bar()
        start = time.perf_counter() - self.elapsed
        try:
            while self.epoch < c.max_epochs and self.stop_reason is None:
                row = self._train_epoch(start)
                self._validate_epoch(row)
                self.history.rows.append(row)
                self._fire("on_epoch_end")
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix({k: f"{row[k]:.4g}" for k in ("train_loss", "valid_loss") if k in row})
                if self.stop_reason is None and c.early_stopping_patience is not None \
                        and self.bad_epochs >= c.early_stopping_patience:
                    self.stop_reason = "early stopping"
                self._maybe_checkpoint()
        finally:
            if bar is not None:
                bar.close()
        if self.stop_reason is None:
            self.stop_reason = "max epochs"
        self.finalize()
        self._fire("on_fit_end")

    def _progress_bar(self):
        if not self.cfg.progress:
            return None
        from tqdm.auto import tqdm
        return tqdm(total=self.cfg.max_epochs, initial=self.epoch, desc="training", unit="epoch", leave=True)

    def _train_epoch(self, start):
        """ one pass over the training batches (or up to the time budget); returns the epoch's row """
        c = self.cfg
        self.model.train()
        sums, count, batches = {}, 0, 0
        spe = self.steps_per_epoch()
        for b, (s, idx) in enumerate(self._epoch_batches()):
            batches += 1
            weights = self.weights_at(self.epoch + b / spe)
            batch = _to(tuple(x[idx] for x in self.train_sessions[s]), c.device)
            out = self._call(self.model.training_step, batch, weights, s)
            for losses in ([out] if isinstance(out, dict) else out):
                self._optimizer_step(losses["loss"], time.perf_counter() - start)
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v)
                count += 1
                if not math.isfinite(sums["loss"]):   # a float we already have: no extra device sync
                    raise FloatingPointError(
                        f"the training loss became {sums['loss']} in epoch {self.epoch + 1} (step {self.step})")
            self._fire("on_batch_end")
            if c.max_seconds is not None and time.perf_counter() - start > c.max_seconds:
                self.stop_reason = "time budget"
                break
        self.epoch += 1
        self.elapsed = time.perf_counter() - start
        # batches < batches_per_epoch: the time budget cut the epoch short (its train_* average fewer batches)
        return {"epoch": self.epoch, "step": self.step, "seconds": self.elapsed, "batches": batches,
                "batches_per_epoch": spe,
                "lr": self.lr_at(self.step, self.elapsed), **{f"w_{k}": v for k, v in self.weights_at(self.epoch).items()},
                **{f"train_{k}": v / max(count, 1) for k, v in sums.items()}}

    def _validate_epoch(self, row):
        c = self.cfg
        if self.valid_sessions is not None and (self.epoch % c.valid_every == 0 or self.stop_reason
                                                or self.epoch == c.max_epochs):
            row.update({f"valid_{k}": v for k, v in self.validate().items()})
            self._track_best(row)

    def _maybe_checkpoint(self):
        c = self.cfg
        if c.checkpoint_path and (self.epoch % c.checkpoint_every == 0 or self.stop_reason
                                  or self.epoch >= c.max_epochs):
            self.save_checkpoint(c.checkpoint_path)

    def _optimizer_step(self, loss, elapsed=None):
        c = self.cfg
        lr = self.lr_at(self.step, elapsed)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if c.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        self.optimizer.step()
        self.step += 1
        if self.ema is not None:
            d = c.ema_decay
            sd = self.model.state_dict()
            with torch.no_grad():
                for k, v in self.ema.items():
                    v.mul_(d).add_(sd[k].detach(), alpha=1 - d)

    # --- validation ------------------------------------------------------------

    def _swap_in_ema(self):
        """ Put the EMA weights into the model; returns the raw weights to put back. """
        if self.ema is None:
            return None
        raw = {k: v.detach().clone() for k, v in self.model.state_dict().items() if k in self.ema}
        self.model.load_state_dict(self.ema, strict=False)
        return raw

    @torch.no_grad()
    def validate(self, data=None):
        """ Mean validation losses (EMA weights if enabled, eval mode), weighted by trials. """
        sessions = self.valid_sessions if data is None else _as_sessions(data)[0]
        raw = self._swap_in_ema()
        self.model.eval()
        weights = self.weights_at(self.epoch)
        step_fn = getattr(self.model, "validation_step", self.model.training_step)
        vb = self.cfg.valid_batch_size
        sums, n = {}, 0
        try:
            for s, sess in enumerate(sessions):
                for i in range(0, sess[0].shape[0], vb):
                    batch = _to(tuple(x[i:i + vb] for x in sess), self.cfg.device)
                    b = batch[0].shape[0]
                    out = self._call(step_fn, batch, weights, s)
                    for k, v in out.items():
                        sums[k] = sums.get(k, 0.0) + float(v) * b
                    n += b
        finally:
            if raw is not None:
                self.model.load_state_dict(raw, strict=False)
            self.model.train()
        return {k: v / max(n, 1) for k, v in sums.items()}

    def _track_best(self, row):
        score = row.get(f"valid_{self.cfg.monitor}")
        if score is None:
            raise KeyError(f"monitor {self.cfg.monitor!r} is not among the validation losses {sorted(k[6:] for k in row if k.startswith('valid_'))}")
        if score < self.best_score:
            self.best_score = score
            src = self.ema if self.ema is not None else self.model.state_dict()
            self.best_state = {k: v.detach().clone() for k, v in src.items()}
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1

    def final_weights(self):
        """ The weights to use after training: the best validated ones (restore_best), else the EMA,
        else the current ones. """
        weights = dict(self.model.state_dict())
        if self.cfg.restore_best and self.best_state is not None:
            weights.update(self.best_state)
        elif self.ema is not None:
            weights.update(self.ema)
        return weights

    def finalize(self):
        """ Leave the model holding final_weights(), in eval mode. """
        self.model.load_state_dict(self.final_weights())
        self.model.eval()

    # --- checkpoints -----------------------------------------------------------

    def state_dict(self):
        return {
            "model": self.model.state_dict(),        # the weights to continue training from
            "final_model": self.final_weights(),     # the weights to use: model.load_state_dict(ck["final_model"])
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema,
            "best_state": self.best_state,
            "best_score": self.best_score,
            "bad_epochs": self.bad_epochs,
            "epoch": self.epoch,
            "step": self.step,
            "elapsed": self.elapsed,
            "progress": self.progress(self.step, self.elapsed),   # where the learning-rate schedule stands
            "stop_reason": self.stop_reason,
            "history": self.history.rows,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state() if self._in_fit else self.torch_rng,   # the stream fit() runs on
            "trainer_cfg": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.cfg).items()},
            "model_cfg": asdict(self.model.cfg) if hasattr(self.model, "cfg") else None,
            "extra": self.extra_state,
        }

    def save_checkpoint(self, path):
        """ Write atomically: a crash mid-write never leaves a broken file where a good one was. """
        save_atomic(self.state_dict(), path)
        self.saved_epoch = self.epoch

    def load_checkpoint(self, path):
        """ Restore everything needed to continue exactly where the checkpoint was written. If this trainer's
        budget (max_epochs, max_seconds) differs from the checkpoint's, the learning-rate schedule continues
        from where it stood (see the module docstring). """
        ck = torch.load(path, map_location=self.cfg.device, weights_only=True)
        old = ck.get("trainer_cfg") or {}
        if old.get("monitor", "loss") != self.cfg.monitor:
            raise ValueError(f"the checkpoint kept its best weights by valid_{old.get('monitor', 'loss')}, this trainer "
                             f"monitors valid_{self.cfg.monitor}: resume with monitor={old.get('monitor', 'loss')!r}")
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.ema = ck["ema"]
        self.best_state, self.best_score, self.bad_epochs = ck["best_state"], ck["best_score"], ck["bad_epochs"]
        self.epoch, self.step, self.elapsed = ck["epoch"], ck["step"], ck["elapsed"]
        self.stop_reason = None
        self.history = History(list(ck["history"]))
        self.generator.set_state(ck["generator"])
        self.torch_rng = ck["torch_rng"]
        self.extra_state = dict(ck.get("extra") or {})
        self.saved_epoch = self.epoch
        self._anchor = None
        if (old.get("max_epochs"), old.get("max_seconds")) != (self.cfg.max_epochs, self.cfg.max_seconds):
            p0 = ck.get("progress")
            if p0 is None:
                p0 = self._raw_progress(self.step, self.elapsed, replace(self.cfg, max_epochs=old.get("max_epochs", 1),
                                                                               max_seconds=old.get("max_seconds")))
            self._anchor = (float(p0), self._raw_progress(self.step, self.elapsed))
        return self


def _check_config(c):
    """ TrainerConfig values that would fail later, or silently do nothing sensible """
    for name in ("max_epochs", "batch_size", "valid_every", "checkpoint_every", "valid_batch_size"):
        v = getattr(c, name)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"TrainerConfig.{name} must be an integer >= 1, got {v!r}")
    if not (isinstance(c.lr, (int, float)) and math.isfinite(c.lr) and c.lr > 0):
        raise ValueError(f"TrainerConfig.lr must be a finite number > 0, got {c.lr!r}")
    if c.max_seconds is not None and not (math.isfinite(c.max_seconds) and c.max_seconds > 0):
        raise ValueError(f"TrainerConfig.max_seconds must be None or a finite number > 0, got {c.max_seconds!r}")
    if c.lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"TrainerConfig.lr_schedule: unknown {c.lr_schedule!r}; use 'constant' or 'cosine'")
    if not 0 <= c.lr_min_factor <= 1:
        raise ValueError(f"TrainerConfig.lr_min_factor must be in [0, 1], got {c.lr_min_factor}")
    if c.ema_decay is not None and not 0 < c.ema_decay < 1:
        raise ValueError(f"TrainerConfig.ema_decay must be None or in (0, 1), got {c.ema_decay}")
    if c.grad_clip is not None and not c.grad_clip > 0:
        raise ValueError(f"TrainerConfig.grad_clip must be None or > 0, got {c.grad_clip}")
    if c.warmup_steps < 0:
        raise ValueError(f"TrainerConfig.warmup_steps must be >= 0, got {c.warmup_steps}")


def save_atomic(obj, path):
    """ torch.save to a temporary file in the same folder, fsync, then rename over the target. By name, not through
    a Python file object: then torch writes from C++ alone, and a signal that arrives during the save cannot leave
    a half-written archive whose destructor later writes to the closed file (an abort at exit, seen after SIGTERM). """
    atomic_write(path, lambda name: torch.save(obj, name), by_name=True)
