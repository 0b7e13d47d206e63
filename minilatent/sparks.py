"""
SPARKS: a Sequential Predictive Autoencoder for the Representation of spiKing Signals, in one file.

Reference:
  Skatchkovsky, Glazman, Sadeh & Iacaruso (2024) "A biologically inspired attention model for neural
  signal analysis" (SPARKS), bioRxiv; the reference implementation is the PyPI package `sparks-ai`.

SPARKS encodes the spikes of N neurons, one time bin at a time, with an attention layer whose
coefficients are not computed from queries and keys but *learned online from spike timing* by a
Hebbian (STDP-like) rule. For every pair (i = post, j = pre) and head, with s_t (B, N) the spikes of bin t:

    xpre_ij  <- xpre_ij  * exp(-dt / taupre_ij)  + wpre_ij  * s_j(t)          pre-synaptic trace
    xpost_ij <- xpost_ij * exp(-dt / taupost_ij) + wpost_ij * s_i(t)          post-synaptic trace
    A_ij     <- clip(A_ij + (1 - A_ij) xpre_ij [s_i(t) != 0] - A_ij xpost_ij [s_j(t) != 0], -0.5, 1.5)
    out_t    =  A_t @ V^T + b                  V: (D_head, N), a linear map of each post-neuron's row

A pre spike shortly *before* a post spike raises A_ij towards 1 (potentiation); a post spike shortly before
a pre spike lowers it towards 0 (depression). w = exp(log_w) and tau = exp(log_tau) are learned per pair
and head. Note: the increment is w itself (per spike); sparks-ai multiplies it by dt as well, so its
w equals ours / dt. Calcium mode has no traces: A_ij <- clip(A_ij + (1 - A_ij) x_j [x_i != 0]
- A_ij x_i [x_j != 0]) on the (continuous) signal x.

The rest is a variational encoder-decoder:

    heads -> concat (B, N, D) -> output projection -> h + FF(h)  [-> conventional self-attention over neurons]
    flatten (B, N*D) -> mu, logvar (latent_dim);   z_t = mu_t + exp(logvar_t / 2) eps  (posterior mean in eval)
    decoder(z_{t-tau_p+1..t}) -> prediction of target_{t..t+tau_f-1}   (zero latents before the trial starts)
    loss = mean over steps of [ loss_fn(prediction_t, target_t..t+tau_f-1) + beta * KL(q(z_t) || N(0, I)) ]

with the KL summed over latent dimensions (the per-step ELBO's KL), and the target either the spikes
themselves (unsupervised: Bernoulli or Poisson) or any per-bin quantity to decode (supervised, MSE).

Differences from sparks-ai 0.2.1 (each stated again where the code is; benchmarks/sparks_ablation.py sets each back
to sparks-ai's choice on the rotation benchmark: none of learning rate, KL convention, init or clipping moved the
test R^2 beyond the seed-to-seed spread of +-0.01-0.02, so they stay):
  - the trace increment per spike is w (sparks-ai: w dt); log w starts with a spread of 1/N (sparks-ai: sqrt(1/N));
    V starts as randn/sqrt(N) with a zero bias (sparks-ai: nn.Linear's uniform init);
  - after the attention, no output projection with one head and a Linear-ReLU-Linear feed-forward (sparks-ai:
    Linear(D, D), then an RMSNorm-GLU block: R^2 +0.004-0.012 at ~1.7x the CPU time per epoch); the optional
    self-attention layers are PyTorch's post-norm encoder layers (sparks-ai: pre-norm with a GLU feed-forward);
  - the KL is summed over latent dimensions (sparks-ai averages it: divide beta by latent_dim to match); the loss is
    averaged over bins (sparks-ai sums it); no gradient clipping (sparks-ai clips values at 0.5); evaluation uses
    the posterior mean (sparks-ai samples); the decoder's hidden layer has dec_hidden = 64 units (sparks-ai:
    mean(tau_p * latent_dim, outputs)).

How it is computed: the model below uses plain tensor ops (one bin of the recurrence is _step). The speed-ups follow
it, after `# --- extensions / speed-ups`, behind hebbian_scan and _FFLatent: a scan over all bins with a chunked,
hand-written backward, the default head as one function with its own backward, and an optional compiled kernel
(sparks_kernel.cpp, built by kernels.py; copy both beside this file for the fast path). native=None (default) uses
the kernel where it can run, True requires it, False (or MINILATENT_NATIVE=0) never uses it.

Training is full backpropagation through time (one optimiser step per batch) or *online*: a step every
`online_chunk` bins with the state carried over detached, so memory does not grow with T. Several sessions get one
Hebbian block, latent projection and decoder output layer each and share the rest; `add_session` extends a model.
"""

import math
import os
import warnings
from dataclasses import dataclass, field, fields
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class SPARKSConfig:
    n_neurons: list = field(default_factory=lambda: [100])  # neurons per session (an int: one session)
    n_outputs: Optional[list] = None  # channels the decoder predicts per bin, per session; None: n_neurons
                                      # (unsupervised reconstruction). A supervised target of shape (B, T, *S)
                                      # has prod(S) channels
    data_type: str = "ephys"        # 'ephys' (binary spikes, learned traces) or 'calcium' (continuous, no traces)
    embed_dim: int = 32             # features per neuron after attention (all heads together)
    n_heads: int = 1                # Hebbian attention heads (embed_dim is split between them)
    n_layers: int = 0               # conventional self-attention blocks over the neurons after the Hebbian one
    ff_mult: int = 1                # feed-forward hidden size = ff_mult * embed_dim (memory grows with it)
    latent_dim: int = 8             # dimension of the Gaussian latent per bin
    tau_p: int = 5                  # the decoder sees the last tau_p latents (past window)
    tau_f: int = 1                  # ... and predicts the next tau_f bins of the target (from t inclusive)
    dec_hidden: int = 64            # hidden units of the default MLP decoder
    joint_decoder: bool = False     # True: one decoder output layer for all sessions (same n_outputs): the
                                    # sessions must then share one latent space
    loss: str = "auto"              # 'mse' (supervised), 'bernoulli' or 'poisson' (spikes); 'auto': mse with a
                                    # target, bernoulli without
    beta: float = 1e-3              # weight of the KL term
    dt: float = 0.01                # bin width in seconds (the traces decay by exp(-dt / tau))
    tau_s: float = 0.5              # initial trace time constant, seconds
    w_start: float = 0.05           # initial trace increment per spike (sparks-ai's w_start * dt)
    alpha: float = 1.0              # initial post/pre increment ratio
    clip: tuple = (-0.5, 1.5)       # backstop bounds of the attention coefficients
    bptt_chunk: int = 16            # bins per recomputation chunk in backward: memory ~ T/chunk + chunk states
    checkpoint_head: bool = True    # recompute the feed-forward layers in backward, a block of bins at a time (less
                                    # memory). The default head keeps its hidden layer when that is no wider than
                                    # the attention output it keeps anyway (ff_mult 1): +1x, ~2% less time a step
    online: bool = False            # True: an optimiser step every online_chunk bins, state detached
    online_chunk: int = 1           # bins per online step (1 = upstream's per-bin online learning)
    burn_in: int = 0                # bins run at the start of each trial without loss or gradient
    native: Optional[bool] = None   # the compiled kernel for the recurrence (extensions): None: where it can run (a C++
                                    # compiler, CPU float32/64), else pure torch; True: require it; False: pure torch

    def __post_init__(self):
        for f in fields(self):                                  # types first: 2.5 bins is not a window
            v = getattr(self, f.name)
            if f.type in (int, "int") and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
                raise TypeError(f"SPARKSConfig.{f.name} must be an integer, got {v!r}")
            if f.type in (float, "float") and (isinstance(v, bool) or not isinstance(v, (int, float, np.number))
                                               or not math.isfinite(v)):
                raise TypeError(f"SPARKSConfig.{f.name} must be a finite number, got {v!r}")
        for name in ("n_neurons", "n_outputs"):
            v = getattr(self, name)
            for n in (v if isinstance(v, (list, tuple)) else [v] if v is not None else []):
                if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
                    raise TypeError(f"SPARKSConfig.{name} must hold integers, got {n!r}")
        if isinstance(self.n_neurons, (int, np.integer)):
            self.n_neurons = [self.n_neurons]
        self.n_neurons = [int(n) for n in self.n_neurons]
        if isinstance(self.n_outputs, int):
            self.n_outputs = [self.n_outputs] * len(self.n_neurons)
        if self.n_outputs is not None:
            self.n_outputs = [int(n) for n in self.n_outputs]
            if len(self.n_outputs) != len(self.n_neurons):
                raise ValueError(f"SPARKSConfig: n_outputs has {len(self.n_outputs)} entries but n_neurons has "
                                 f"{len(self.n_neurons)} sessions")
        self.clip = tuple(float(c) for c in self.clip)
        if not self.n_neurons or min(self.n_neurons) < 1:
            raise ValueError(f"SPARKSConfig.n_neurons must be a non-empty list of counts >= 1, got {self.n_neurons}")
        for name in ("embed_dim", "n_heads", "latent_dim", "tau_p", "tau_f", "dec_hidden", "ff_mult",
                     "bptt_chunk", "online_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"SPARKSConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.embed_dim % self.n_heads:
            raise ValueError(f"SPARKSConfig: embed_dim {self.embed_dim} is not divisible by n_heads {self.n_heads}")
        if self.data_type not in ("ephys", "calcium"):
            raise ValueError(f"SPARKSConfig.data_type must be 'ephys' or 'calcium', got {self.data_type!r}")
        if self.loss not in ("auto", "mse", "bernoulli", "poisson"):
            raise ValueError(f"SPARKSConfig.loss must be 'auto', 'mse', 'bernoulli' or 'poisson', got {self.loss!r}")
        for name in ("dt", "tau_s", "w_start", "alpha"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SPARKSConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.burn_in < 0 or self.beta < 0:
            raise ValueError("SPARKSConfig: burn_in and beta must be >= 0")
        if not self.clip[0] < self.clip[1]:
            raise ValueError(f"SPARKSConfig.clip must be (low, high) with low < high, got {self.clip}")

    def outputs(self, session: int) -> int:
        return self.n_neurons[session] if self.n_outputs is None else self.n_outputs[session]


# -----------------------------------------------------------------------------
# the Hebbian recurrence, one bin at a time (the model's equation; the fast scan over all bins, with its
# hand-written backward, is hebbian_scan in the extensions)


def _step(P_prev, Q_prev, A_prev, u, m, dP, cP, dQ, cQ, P_out, Q_out, A_out, S_out, X, lo, hi):
    """ One bin of the recurrence, written into the given buffers (P_out, Q_out may alias P_prev, Q_prev).
    u, m: (B, N) drive and spike indicator; states (B, H, N, N) indexed [b, h, post i, pre j].
    S_out gets S = X + Y (the update is A <- (1 - S) A + X). 9 in-place tensor ops, no autograd graph. """
    B, N = u.shape
    uj, ui = u.view(B, 1, 1, N), u.view(B, 1, N, 1)
    mj, mi = m.view(B, 1, 1, N), m.view(B, 1, N, 1)
    torch.mul(P_prev, dP, out=P_out).addcmul_(cP, uj)     # xpre  = d xpre  + w s_j
    torch.mul(Q_prev, dQ, out=Q_out).addcmul_(cQ, ui)     # xpost = d xpost + w s_i
    torch.mul(P_out, mi, out=X)                           # X = xpre [s_i != 0]              (potentiation)
    torch.addcmul(X, Q_out, mj, out=S_out)                # S = X + Y,  Y = xpost [s_j != 0]  (depression)
    torch.addcmul(A_prev, A_prev, S_out, value=-1.0, out=A_out).add_(X)   # A + (1 - A) X - A Y = A - A S + X
    A_out.clamp_(lo, hi)


@torch.no_grad()
def hebbian_states(u, dP, cP, dQ, cQ, state=None, clip=(-0.5, 1.5)):
    """ Run the recurrence without gradients and return every state: P, Q, A each (T, B, H, N, N).
    For plots and teaching (memory grows with T). u: (T, B, N) drive. """
    T, B, N = u.shape
    H = dP.shape[0]
    z = u.new_zeros(B, H, N, N)
    P, Q, A = (z.clone(), z.clone(), z.clone()) if state is None else (s.clone() for s in state)
    Ps, Qs, As = (u.new_empty(T, B, H, N, N) for _ in range(3))
    X, S = torch.empty_like(z), torch.empty_like(z)
    m = (u != 0).to(u.dtype)
    for t in range(T):
        _step(P, Q, A, u[t], m[t], dP, cP, dQ, cQ, Ps[t], Qs[t], As[t], S, X, clip[0], clip[1])
        P, Q, A = Ps[t], Qs[t], As[t]
    return Ps, Qs, As


# -----------------------------------------------------------------------------


class HebbianAttention(nn.Module):
    """ multi-head Hebbian attention over the N neurons of one session, with learned traces """

    def __init__(self, n_neurons, cfg: SPARKSConfig):
        super().__init__()
        N, H = n_neurons, cfg.n_heads
        Dh = cfg.embed_dim // H
        self.n_neurons, self.n_heads, self.head_dim = N, H, Dh
        self.data_type, self.dt, self.clip, self.chunk = cfg.data_type, cfg.dt, cfg.clip, cfg.bptt_chunk
        self.native = cfg.native
        if cfg.native and native_kernel() is None:
            raise RuntimeError(f"SPARKSConfig(native=True): the compiled Hebbian kernel is not available "
                               f"({_NATIVE['error']}); use native=None or False for the pure-torch path")
        if cfg.data_type == "ephys":
            sd = 1.0 / N          # log-w spread 1/N (sparks-ai: sqrt(1/N)); see the module docstring
            self.log_wpre = nn.Parameter(math.log(cfg.w_start) + sd * torch.randn(H, N, N))
            self.log_wpost = nn.Parameter(math.log(cfg.w_start * cfg.alpha) + sd * torch.randn(H, N, N))
            self.log_taupre = nn.Parameter(torch.full((H, N, N), math.log(cfg.tau_s)))
            self.log_taupost = nn.Parameter(torch.full((H, N, N), math.log(cfg.tau_s)))
        # V per head (Dh, N) ~ randn/sqrt(N) and a zero bias (sparks-ai: nn.Linear's uniform init of both)
        self.value = nn.Parameter(torch.randn(H, Dh, N) / math.sqrt(N))
        self.value_bias = nn.Parameter(torch.zeros(H, Dh))

    def coefficients(self):
        """ (dP, cP, dQ, cQ) each (H, N, N): the decay per bin and the increment per spike of both traces """
        if self.data_type == "calcium":  # no traces: xpre_ij = x_j, xpost_ij = x_i
            z = self.value.new_zeros(self.n_heads, self.n_neurons, self.n_neurons)
            return z, z + 1, z, z + 1
        return (torch.exp(-self.dt * torch.exp(-self.log_taupre)), torch.exp(self.log_wpre),
                torch.exp(-self.dt * torch.exp(-self.log_taupost)), torch.exp(self.log_wpost))

    def init_state(self, B, like):
        z = like.new_zeros(B, self.n_heads, self.n_neurons, self.n_neurons)
        return (z, z, z)

    def forward(self, u, state=None):
        """ u: (T, B, N) spikes (time first). Returns (T, B, N, embed_dim) and the final (P, Q, A) state. """
        T, B, N = u.shape
        if state is None:
            state = self.init_state(B, u)
        m = (u != 0).to(u.dtype)
        out, state = hebbian_scan(u, m, self.coefficients(), self.value, self.value_bias,
                                  tuple(s.detach() for s in state), self.chunk, self.clip, self.native)
        out = out.view(T, B, N, self.n_heads * self.head_dim)   # (T, B, N, H, Dh) -> heads side by side
        return out, state


class HebbianBlock(nn.Module):
    """ Hebbian attention, output projection (several heads), and a feed-forward layer with a residual """

    def __init__(self, n_neurons, cfg: SPARKSConfig):
        super().__init__()
        D = cfg.embed_dim
        self.attn = HebbianAttention(n_neurons, cfg)
        # mixes the heads; with one head it would be a second linear map right after V, so there is none
        self.proj = nn.Linear(D, D) if cfg.n_heads > 1 else nn.Identity()
        # Linear-ReLU-Linear (sparks-ai: RMSNorm, then Linear-GLU twice, no biases; see the module docstring)
        self.ff = nn.Sequential(nn.Linear(D, cfg.ff_mult * D), nn.ReLU(), nn.Linear(cfg.ff_mult * D, D))

    def mix(self, h):                             # (..., N, D) -> (..., N, D): what follows the attention
        h = self.proj(h)
        return self.ff(h) + h

    def forward(self, u, state=None):
        h, state = self.attn(u, state)            # (T, B, N, D)
        return self.mix(h), state


class MLPDecoder(nn.Module):
    """ the last tau_p latents -> the next tau_f bins: a shared hidden layer, one output layer per session """

    def __init__(self, cfg: SPARKSConfig):
        super().__init__()
        self.cfg = cfg
        self.hidden = nn.Linear(cfg.tau_p * cfg.latent_dim, cfg.dec_hidden)
        if cfg.joint_decoder and len(set(cfg.outputs(s) for s in range(len(cfg.n_neurons)))) > 1:
            raise ValueError("SPARKSConfig.joint_decoder needs the same n_outputs for every session")
        n_layers = 1 if cfg.joint_decoder else len(cfg.n_neurons)
        self.out = nn.ModuleList([nn.Linear(cfg.dec_hidden, cfg.tau_f * cfg.outputs(s)) for s in range(n_layers)])

    def add_session(self, n_out):
        if self.cfg.joint_decoder:
            if n_out != self.cfg.outputs(0):
                raise ValueError(f"joint decoder: the new session must have {self.cfg.outputs(0)} outputs, not {n_out}")
            return
        self.out.append(nn.Linear(self.cfg.dec_hidden, self.cfg.tau_f * n_out))

    def forward(self, window, session):  # window (B, T, tau_p, L) -> (B, T, tau_f, n_out)
        B, T = window.shape[:2]
        h = F.relu(self.hidden(window.reshape(B, T, -1)))
        out = self.out[0 if self.cfg.joint_decoder else session]
        return out(h).view(B, T, self.cfg.tau_f, -1)


# -----------------------------------------------------------------------------


class SPARKS(nn.Module):
    """ Hebbian-attention encoder -> Gaussian latent per bin -> decoder of the next tau_f bins """

    def __init__(self, cfg: SPARKSConfig, decoder: Optional[nn.Module] = None):
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList([HebbianBlock(n, cfg) for n in cfg.n_neurons])      # one per session
        self.to_latent = nn.ModuleList([nn.Linear(n * cfg.embed_dim, 2 * cfg.latent_dim) for n in cfg.n_neurons])
        # post-norm PyTorch layers (sparks-ai's conventional blocks normalise first and use a GLU feed-forward)
        self.layers = nn.ModuleList([nn.TransformerEncoderLayer(cfg.embed_dim, cfg.n_heads, cfg.ff_mult * cfg.embed_dim,
                                                                dropout=0.0, batch_first=True)
                                     for _ in range(cfg.n_layers)])                      # shared
        self.decoder = decoder if decoder is not None else MLPDecoder(cfg)             # any (window, session) module

    @classmethod
    def from_config_dict(cls, d: dict) -> "SPARKS":
        known = {f.name for f in fields(SPARKSConfig)}
        unknown = set(d) - known
        if unknown:
            raise KeyError(f"unknown SPARKSConfig field(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(SPARKSConfig(**d))

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @property
    def n_sessions(self) -> int:
        return len(self.cfg.n_neurons)

    def add_session(self, n_neurons: int, n_outputs: Optional[int] = None) -> int:
        """ Add a recording with its own neurons: a new Hebbian block, latent projection and decoder output
        layer; the shared layers are kept. Returns the new session id. """
        cfg = self.cfg
        for name, v in (("n_neurons", n_neurons), ("n_outputs", n_outputs)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
                raise ValueError(f"add_session: {name} must be an integer >= 1, got {v!r}")
        if not hasattr(self.decoder, "add_session"):
            raise ValueError("add_session: the custom decoder has no add_session(n_out) method")
        n_neurons = int(n_neurons)
        n_out = int(n_outputs) if n_outputs is not None else n_neurons
        dev = next(self.parameters()).device
        block = HebbianBlock(n_neurons, cfg).to(dev)            # build everything before changing anything
        to_latent = nn.Linear(n_neurons * cfg.embed_dim, 2 * cfg.latent_dim).to(dev)
        self.decoder.add_session(n_out)                          # may refuse (e.g. a joint decoder): model untouched
        self.decoder.to(dev)
        if cfg.n_outputs is None and n_outputs is not None and n_outputs != n_neurons:
            cfg.n_outputs = list(cfg.n_neurons)
        cfg.n_neurons.append(n_neurons)
        if cfg.n_outputs is not None:
            cfg.n_outputs.append(n_out)
        self.blocks.append(block)
        self.to_latent.append(to_latent)
        return self.n_sessions - 1

    def init_output_bias(self, x, session=0):
        """ Unsupervised spikes: start the decoder's output at each neuron's mean firing (logit for
        Bernoulli, log for Poisson), so training begins at the mean-rate baseline. x: (B, T, N) spikes. """
        kind = self.loss_kind()
        if kind == "mse" or not isinstance(self.decoder, MLPDecoder):
            return
        p = x.reshape(-1, x.shape[-1]).float().mean(0).clamp(1e-3, 1 - 1e-3)      # (N,)
        b = torch.log(p / (1 - p)) if kind == "bernoulli" else torch.log(p)
        layer = self.decoder.out[0 if self.cfg.joint_decoder else session]
        with torch.no_grad():
            layer.bias.copy_(b.repeat(self.cfg.tau_f).to(layer.bias))

    # -------------------------------------------------------------------------
    # checks at the public boundary

    def _session(self, session):
        if not isinstance(session, (int, np.integer)) or not 0 <= session < self.n_sessions:
            raise KeyError(f"unknown session id {session!r}: this model has sessions 0..{self.n_sessions - 1}")
        return int(session)

    def _check_input(self, x, session, values=True):
        """ shape and dtype (cheap, every forward pass); with values also NaN and binary spikes (reads the data:
        once where data enter, check_data / predict) """
        N = self.cfg.n_neurons[session]
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"SPARKS input: expected a torch.Tensor of shape (trials, time, neurons), got {type(x).__name__}")
        if x.dim() != 3:
            raise ValueError(f"SPARKS input: expected 3 dims (trials, time, neurons), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"SPARKS input: expected a floating-point tensor (use x.float()), got dtype {x.dtype}")
        if x.shape[2] != N:
            raise ValueError(f"SPARKS input: session {session} has {N} neurons, got {x.shape[2]} (shape {tuple(x.shape)})")
        if x.shape[1] < 1 or x.shape[0] < 1:
            raise ValueError(f"SPARKS input: empty (shape {tuple(x.shape)})")
        if not values:
            return
        if not torch.isfinite(x).all():
            raise ValueError("SPARKS input: contains NaN or infinite values")
        if self.cfg.data_type == "ephys" and not ((x == 0) | (x == 1)).all():
            bad = x[(x != 0) & (x != 1)][0].item()
            raise ValueError(f"SPARKS input: data_type 'ephys' needs binary spikes (0 or 1 per bin), found {bad:g}; "
                             "clip counts with (x > 0).float() or use data_type='calcium'")

    def _check_target(self, y, x, session, values=True):
        n_out = self.cfg.outputs(session)
        if not isinstance(y, torch.Tensor) or y.dim() < 2:
            raise ValueError(f"SPARKS target: expected a tensor of shape (trials, time, ...), got "
                             f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}")
        if y.shape[:2] != x.shape[:2]:
            raise ValueError(f"SPARKS target: shape {tuple(y.shape)} does not match the input's (trials, time) = {tuple(x.shape[:2])}")
        y = y.reshape(y.shape[0], y.shape[1], -1)               # any shape per bin -> (B, T, prod(shape))
        if self.cfg.n_outputs is None:
            raise ValueError(f"SPARKS target: a supervised target of {y.shape[2]} outputs per bin was given, but the "
                             f"model was built without n_outputs (unsupervised); use SPARKSConfig(n_outputs={y.shape[2]})")
        if y.shape[2] != n_out:
            raise ValueError(f"SPARKS target: session {session} predicts {n_out} outputs per bin (n_outputs), got "
                             f"{y.shape[2]}; build the model with n_outputs={y.shape[2]}")
        if values and not torch.isfinite(y).all():
            raise ValueError("SPARKS target: contains NaN or infinite values")
        return y.to(x.dtype)

    def check_data(self, batch, session=0):
        """ The full check of a dataset (x or (x, target)) before training; the Trainer calls it once. """
        session = self._session(session)
        x, y = (batch, None) if isinstance(batch, torch.Tensor) else (batch[0], batch[1] if len(batch) > 1 else None)
        self._check_input(x, session)
        if y is not None:
            self._check_target(y, x, session)

    # -------------------------------------------------------------------------

    def init_state(self, B, session=0, like=None):
        """ The state carried between chunks of a trial: Hebbian (P, Q, A) and the last tau_p - 1 latents. """
        like = like if like is not None else next(self.parameters())
        heb = self.blocks[session].attn.init_state(B, like)
        return {"hebbian": heb, "latents": like.new_zeros(B, self.cfg.tau_p - 1, self.cfg.latent_dim)}

    def _head(self, h, session):
        """ everything between the attention and the latent, for a block of bins: (t, B, N, D) -> (t, B, 2 L) """
        t, B, N, _ = h.shape
        h = self.blocks[session].mix(h)
        if self.layers:                                         # the neurons of a bin are the tokens
            hs = h.reshape(t * B, N, -1)
            for layer in self.layers:
                hs = layer(hs)
            h = hs.view(t, B, N, -1)
        return self.to_latent[session](h.reshape(t, B, -1))

    def _stats(self, h, session):
        """ (t, B, N, D) attention output -> (t, B, 2 L) latent statistics, through the fastest path for the head """
        parts = _ff_latent_parts(self, session)
        if parts is not None:
            # the default head (Linear-ReLU-Linear with a residual, then the latent projection) as one function with
            # a hand-written backward (extensions): the same numbers, without forming h + FF(h)
            recompute = self.cfg.checkpoint_head and parts[0].shape[0] > parts[0].shape[1]   # hidden wider than h
            return _FFLatent.apply(self.blocks[session].proj(h), *parts, self.cfg.bptt_chunk, recompute)
        K = self.cfg.bptt_chunk
        if torch.is_grad_enabled() and self.cfg.checkpoint_head and h.shape[0] > K:
            # per block of bins, keep only the attention output for backward and recompute the rest then:
            # the (T, B, N, D) activations of the feed-forward layers never all exist at once
            fn = lambda hc: self._head(hc, session)
            params = [p for m in (self.blocks[session].proj, self.blocks[session].ff, self.layers, self.to_latent[session])
                      for p in m.parameters() if p.requires_grad]
            return torch.cat([_Recompute.apply(fn, hc, *params) for hc in h.split(K, dim=0)])
        return self._head(h, session)                           # (t, B, 2 L): all bins in one product

    def encode(self, x, session=0, state=None):
        """ x (B, T, N) -> mu, logvar (B, T, latent_dim) and the final Hebbian state. """
        B, T, N = x.shape
        attn, K = self.blocks[session].attn, self.cfg.bptt_chunk
        heb = None if state is None else state["hebbian"]
        u = x.transpose(0, 1)                                   # (T, B, N): time first
        if not torch.is_grad_enabled():
            # evaluation: a block of K bins at a time, the Hebbian state carried from block to block (the same
            # numbers as all bins at once): the (T, B, N, D) attention output never exists whole
            stats = []
            for t0 in range(0, T, K):
                h, heb = attn(u[t0:t0 + K].contiguous(), heb)
                stats.append(self._stats(h, session))
            stats = torch.cat(stats)
        else:
            h, heb = attn(u.contiguous(), heb)
            stats = self._stats(h, session)
        mu, logvar = stats.transpose(0, 1).chunk(2, dim=-1)     # (B, T, L) each
        return mu, logvar, heb

    def forward(self, x, session=0, state=None, sample=None):
        """ x: (B, T, N) spikes (or calcium signal). sample: draw z from the posterior (default: when
        training; evaluation uses the posterior mean, so it is deterministic). state: carried over from a
        previous chunk of the same trials (init_state / the returned 'state'), detached.
        Returns dict(mu, logvar, z (B, T, L), prediction (B, T, tau_f, n_out), state). """
        session = self._session(session)
        self._check_input(x, session, values=False)
        x = x.to(self.to_latent[session].weight.dtype)          # float64 input: cast to the model's dtype
        cfg = self.cfg
        B, T, _ = x.shape
        sample = self.training if sample is None else sample
        if state is None:
            state = self.init_state(B, session, like=x)
        mu, logvar, heb = self.encode(x, session, state)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if sample else mu
        past = state["latents"].detach()
        zz = torch.cat([past, z], dim=1)                        # (B, tau_p - 1 + T, L)
        window = zz.unfold(1, cfg.tau_p, 1).transpose(2, 3)     # (B, T, tau_p, L), oldest first
        pred = self.decoder(window, session)                    # (B, T, tau_f, n_out)
        new_state = {"hebbian": heb, "latents": zz[:, zz.shape[1] - (cfg.tau_p - 1):].detach()}
        return dict(mu=mu, logvar=logvar, z=z, prediction=pred, state=new_state)

    # -------------------------------------------------------------------------
    # losses and the interface the generic Trainer uses

    def loss_kind(self) -> str:
        """ the reconstruction loss: cfg.loss, or for 'auto' mse when the model has n_outputs (supervised) """
        if self.cfg.loss != "auto":
            return self.cfg.loss
        return "mse" if self.cfg.n_outputs is not None else "bernoulli"

    def _losses(self, out, target):
        """ Losses of a forward pass `out` over bins t0..t0+Tc-1 given the target from t0 on (it may run past
        the chunk, as in online mode: with tau_f > 1 a bin predicts the next bins too; windows that run past
        the end of the trial count only their bins inside it). """
        pred = out["prediction"]                                # (B, Tc, tau_f, n)
        B, Tc, F_, n = pred.shape
        tgt = target[:, : Tc + F_ - 1]
        T_avail = tgt.shape[1]
        tgt = F.pad(tgt, (0, 0, 0, Tc + F_ - 1 - T_avail))
        win = tgt.unfold(1, F_, 1).transpose(2, 3)              # (B, Tc, tau_f, n): target[t : t + tau_f]
        valid = (torch.arange(Tc, device=pred.device)[:, None] + torch.arange(F_, device=pred.device)) < T_avail
        kind = self.loss_kind()
        if kind == "mse":
            el = (pred - win) ** 2
        elif kind == "bernoulli":                               # pred: logits
            el = F.binary_cross_entropy_with_logits(pred, win, reduction="none")
        else:                                                   # poisson, pred: log-rates
            el = torch.exp(pred) - win * pred + torch.lgamma(win + 1)
        recon = (el.mean(-1) * valid).sum() / (valid.sum() * B)   # mean over trials, bins and outputs
        mu, logvar = out["mu"], out["logvar"]
        # per bin: summed over latent dims (the ELBO's KL; sparks-ai averages over them, so its beta is L x weaker)
        kl = 0.5 * (mu ** 2 + torch.exp(logvar) - 1.0 - logvar).sum(-1).mean()
        return {"loss": recon + self.cfg.beta * kl, "recon": recon, "kl": kl}

    def _unpack(self, batch, session):
        x, y = (batch, None) if isinstance(batch, torch.Tensor) else (batch[0], batch[1] if len(batch) > 1 else None)
        self._check_input(x, session, values=False)             # values: checked once by check_data
        x = x.to(self.to_latent[session].weight.dtype)
        if y is not None:
            y = self._check_target(y, x, session, values=False)
        else:
            if self.cfg.outputs(session) != x.shape[2]:
                raise ValueError(f"SPARKS: no target was given (unsupervised) but session {session} predicts "
                                 f"{self.cfg.outputs(session)} outputs, not its {x.shape[2]} neurons")
            y = x
        return x, y

    def compute_losses(self, batch, weights=None, session=0):
        """ Full-BPTT loss of a batch: x, or (x, target). The first burn_in bins run without gradient. """
        session = self._session(session)
        x, y = self._unpack(batch, session)
        b = min(self.cfg.burn_in, x.shape[1] - 1)
        state = None
        if b > 0:
            with torch.no_grad():
                state = self(x[:, :b], session, sample=False)["state"]
            x, y = x[:, b:], y[:, b:]
        out = self(x, session, state=state)
        return self._losses(out, y)

    def online_losses(self, batch, session=0):
        """ Online learning: yields the loss of every online_chunk bins; the state is carried detached, so
        each optimiser step (the trainer takes one per yielded dict) backpropagates through one chunk only. """
        session = self._session(session)
        x, y = self._unpack(batch, session)
        state = self.init_state(x.shape[0], session, like=x)
        b = min(self.cfg.burn_in, x.shape[1] - 1)
        if b > 0:
            with torch.no_grad():
                state = self(x[:, :b], session, state=state, sample=False)["state"]
        L = self.cfg.online_chunk
        for t0 in range(b, x.shape[1], L):
            out = self(x[:, t0:t0 + L], session, state=state)
            state = out["state"]
            yield self._losses(out, y[:, t0:])             # the target from t0 on: tau_f may reach past the chunk

    def training_step(self, batch, weights=None, session=0):
        if self.cfg.online:
            return self.online_losses(batch, session)
        return self.compute_losses(batch, weights, session)

    def validation_step(self, batch, weights=None, session=0):
        return self.compute_losses(batch, weights, session)

    # -------------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, x, session=0, n_samples=0, batch_size=256):
        """ Evaluate trials x (B, T, N): posterior means by default (deterministic); with n_samples > 0 the
        latents are sampled and the predictions averaged over the samples. Returns numpy arrays:
        mu, logvar (B, T, L), prediction (B, T, tau_f, n_out) and now (B, T, n_out) = prediction[:, :, 0]
        (for spikes: probabilities (bernoulli) or rates (poisson), not logits). """
        session = self._session(session)
        self._check_input(x, session)
        for name, v, lo in (("n_samples", n_samples, 0), ("batch_size", batch_size, 1)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"predict: {name} must be an integer >= {lo}, got {v!r}")
        was = self.training
        self.eval()
        kind = self.loss_kind()
        pieces = {}
        try:
            for i in range(0, x.shape[0], batch_size):
                xb = x[i:i + batch_size]
                S = max(n_samples, 1)
                preds = []
                for _ in range(S):
                    out = self(xb, session, sample=n_samples > 0)
                    p = out["prediction"]
                    p = torch.sigmoid(p) if kind == "bernoulli" else torch.exp(p) if kind == "poisson" else p
                    preds.append(p)
                pred = torch.stack(preds).mean(0)
                for k, v in (("mu", out["mu"]), ("logvar", out["logvar"]), ("prediction", pred)):
                    pieces.setdefault(k, []).append(v.cpu().numpy())
        finally:
            self.train(was)
        res = {k: np.concatenate(v) for k, v in pieces.items()}
        res["now"] = res["prediction"][:, :, 0]
        return res


# -----------------------------------------------------------------------------


def saved_tensor_bytes(fn):
    """ Run fn() (e.g. a forward pass and loss) and return (its result, the bytes autograd keeps for the
    backward pass): the memory that full backpropagation through time needs and that grows with T. """
    seen = {}

    def pack(t):
        st = t.untyped_storage()
        seen[st.data_ptr()] = max(seen.get(st.data_ptr(), 0), st.nbytes())
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


# --- extensions / speed-ups ---------------------------------------------------------------------------------------
# Nothing below changes what the model computes (tests compare every path with a NumPy loop of the equations and with
# autograd through _step); it changes how fast and in how much memory.
#
# Only the trace/attention recurrence is sequential. It is a chain of affine maps per pair: traces P <- d P + c s,
# and A <- clip((1 - S_t) A + X_t) with X = xpre [s_i], S = X + xpost [s_j]. _HebbianScan runs it with _step's
# in-place ops, applies the value read-out A_t V^T + b as one small fused matrix product per bin while A_t is still
# in cache, keeps the states only at the start of every `bptt_chunk` bins, and in backward recomputes one chunk at
# a time and runs the reverse (adjoint) scan, whose per-bin work is again a fused product (dL/dA_t = dL/dout_t V +
# carry) and a dozen in-place ops: memory O(B N^2 (T / chunk + chunk)) instead of O(B N^2 T x the dozens of
# intermediates autograd would keep).
# After the attention, the default head (y = h + W2 relu(W1 h + b1) + b2 per neuron, then the latent projection
# W_l flatten(y)) is _FFLatent, which never forms y (T, B, N, D) since W_l is linear, forward or backward, a block of
# bptt_chunk bins at a time, r = relu(W1 h + b1) recomputed (checkpoint_head, when r is wider than h) or kept.
# Any other head (several heads' projection aside, conventional layers, a custom feed-forward) runs through autograd,
# recomputed per block by _Recompute when checkpoint_head is set.
# The compiled kernel (the last section) runs the same scan and adjoint in C++ where native= (top of file) lets it.


def hebbian_scan(u, m, coeffs, W, bias, state, chunk, clip, native=None):
    """ The Hebbian recurrence over all bins and its read-out, differentiable in coeffs, W and bias.
    u, m (T, B, N) drive and spike indicator; coeffs = (dP, cP, dQ, cQ) each (H, N, N); W (H, Dh, N); bias (H, Dh);
    state = (P, Q, A) each (B, H, N, N), taken as constants. Returns out (T, B, N, H, Dh) and the final (P, Q, A). """
    kernel = _kernel_for(u, native)
    out, P, Q, A = _HebbianScan.apply(u, m, *coeffs, W, bias, *state, chunk, clip[0], clip[1], kernel)
    return out, (P, Q, A)


class _HebbianScan(torch.autograd.Function):
    """ the attention recurrence and its value read-out, with a chunked reverse-scan backward """

    @staticmethod
    def forward(ctx, u, m, dP, cP, dQ, cQ, W, bias, P0, Q0, A0, chunk, lo, hi, kernel):
        # u, m (T, B, N); dP, cP, dQ, cQ (H, N, N); W (H, Dh, N); bias (H, Dh); P0, Q0, A0 (B, H, N, N);
        # kernel: the compiled (forward, backward) pair from _kernel_for, or None for the torch scan below
        ctx.kernel = kernel
        if kernel is not None:
            return _native_forward(ctx, u, m, dP, cP, dQ, cQ, W, bias, P0, Q0, A0, chunk, lo, hi)
        T, B, N = u.shape
        H, Dh = W.shape[0], W.shape[1]
        P, Q, A = P0.clone(), Q0.clone(), A0.clone()
        K = min(chunk, T)
        A2 = torch.empty_like(A)                           # A_t and A_{t-1} alternate between A and A2
        X, S = torch.empty_like(A), torch.empty_like(A)
        out = u.new_empty((T, B, N, H, Dh))                # heads side by side: a view gives (T, B, N, H*Dh)
        ckpts, keep = [], any(ctx.needs_input_grad)
        for t in range(T):
            if keep and t % K == 0:
                ckpts.append((P.clone(), Q.clone(), A.clone()))
            _step(P, Q, A, u[t], m[t], dP, cP, dQ, cQ, P, Q, A2, S, X, lo, hi)
            A, A2 = A2, A
            _readout(A, W, bias, out[t])                   # out_t = A_t V^T + b while A_t is in cache
        ctx.save_for_backward(u, m, dP, cP, dQ, cQ, W, *[x for c in ckpts for x in c])
        ctx.chunk, ctx.lo, ctx.hi, ctx.n_ckpt = K, lo, hi, len(ckpts)
        A = A.clone()                                      # not the buffer A2 that alternates with it
        ctx.mark_non_differentiable(P, Q, A)
        return out, P, Q, A

    @staticmethod
    def backward(ctx, g_out, _gP, _gQ, _gA):
        if ctx.kernel is not None:
            return _native_backward(ctx, g_out) + (None,) * 7
        u, m, dP, cP, dQ, cQ, W, *flat = ctx.saved_tensors
        ckpts = [flat[3 * i:3 * i + 3] for i in range(ctx.n_ckpt)]
        K, lo, hi = ctx.chunk, ctx.lo, ctx.hi
        T, B, N = u.shape
        need_P = ctx.needs_input_grad[2] or ctx.needs_input_grad[3]
        need_Q = ctx.needs_input_grad[4] or ctx.needs_input_grad[5]
        shape = ckpts[0][0].shape                            # (B, H, N, N)
        Pb, Qb, Ab = (u.new_empty((K + 1,) + shape) for _ in range(3))   # states before/after each bin
        Sb = u.new_empty((K,) + shape)                       # S_t = X + Y of each bin (A_t = (1 - S_t) A_{t-1} + X)
        X, g = u.new_empty(shape), u.new_empty(shape)
        carry = torch.zeros(shape, dtype=u.dtype, device=u.device)  # adjoint reaching A_t from bin t+1
        lamP, lamQ = torch.zeros_like(carry), torch.zeros_like(carry)
        accs = [torch.zeros_like(carry) for _ in range(4)]  # sums over bins of the dP, cP, dQ, cQ gradients
        R, G = torch.empty_like(carry), torch.empty_like(carry)
        gW = torch.zeros_like(W)
        g_out = g_out.contiguous()                           # (T, B, N, H, Dh)
        gb = g_out.sum((0, 1, 2))                            # (H, Dh): the bias gradient
        for ci in reversed(range(ctx.n_ckpt)):
            c0 = ci * K
            k = min(K, T - c0)
            Pb[0].copy_(ckpts[ci][0]); Qb[0].copy_(ckpts[ci][1]); Ab[0].copy_(ckpts[ci][2])
            for s in range(k):                               # recompute the chunk, keeping every state
                _step(Pb[s], Qb[s], Ab[s], u[c0 + s], m[c0 + s], dP, cP, dQ, cQ,
                      Pb[s + 1], Qb[s + 1], Ab[s + 1], Sb[s], X, lo, hi)
            lo_, hi_ = torch.aminmax(Ab[1:k + 1])
            any_clip = bool(lo_ <= lo) or bool(hi_ >= hi)    # the clip is a rare backstop: test once per chunk
            for s in reversed(range(k)):
                t = c0 + s
                _readout_backward(g_out[t], W, Ab[s + 1], carry, g, gW)   # g = adjoint of A_t: read-out + carry
                if any_clip:                                 # where the clip was active no gradient passes
                    g.masked_fill_((Ab[s + 1] <= lo) | (Ab[s + 1] >= hi), 0.0)
                uj, ui = u[t].view(B, 1, 1, N), u[t].view(B, 1, N, 1)
                mj, mi = m[t].view(B, 1, 1, N), m[t].view(B, 1, N, 1)
                torch.mul(g, Ab[s], out=R)                   # g A_{t-1}
                if need_P:                                   # d/dxpre = g (1 - A_{t-1}) [s_i]
                    torch.sub(g, R, out=G)
                    lamP.mul_(dP).addcmul_(G, mi)
                    accs[0].addcmul_(lamP, Pb[s])
                    accs[1].addcmul_(lamP, uj)
                if need_Q:                                   # d/dxpost = -g A_{t-1} [s_j]
                    lamQ.mul_(dQ).addcmul_(R, mj, value=-1.0)
                    accs[2].addcmul_(lamQ, Qb[s])
                    accs[3].addcmul_(lamQ, ui)
                torch.addcmul(g, g, Sb[s], value=-1.0, out=carry)   # to A_{t-1}: g (1 - S_t)
        grads = [acc.sum(0) for acc in accs]
        return (None, None, grads[0] if need_P else None, grads[1] if need_P else None,
                grads[2] if need_Q else None, grads[3] if need_Q else None,
                gW, gb) + (None,) * 7


def _readout(A, W, bias, out):
    """ out[:, n, h] = A[:, h, n, :] @ W[h]^T + bias[h] for one bin: A (B, H, N, N), W (H, Dh, N), out (B, N, H, Dh) """
    B, H, N, _ = A.shape
    Dh = W.shape[1]
    if H == 1:
        torch.addmm(bias[0], A.view(B * N, N), W[0].t(), out=out.view(B * N, Dh))
    else:
        for h in range(H):
            out[:, :, h] = torch.addmm(bias[h], A[:, h].reshape(B * N, N), W[h].t()).view(B, N, Dh)


def _readout_backward(go, W, A, carry, g, gW):
    """ For one bin: g = go V + carry (the adjoint of A_t), and gW += go^T A_t. go (B, N, H, Dh). """
    B, H, N, _ = A.shape
    Dh = W.shape[1]
    for h in range(H):
        gh = go[:, :, h].reshape(B * N, Dh)                 # (B N, Dh)
        Ah = A[:, h].reshape(B * N, N)
        gW[h].addmm_(gh.t(), Ah)
        if H == 1:
            torch.addmm(carry.view(B * N, N), gh, W[0], out=g.view(B * N, N))
        else:
            g[:, h] = torch.addmm(carry[:, h].reshape(B * N, N), gh, W[h]).view(B, N, N)


def _ff_latent_parts(model, session):
    """ (W1, b1, W2, b2, W_latent, b_latent) when what follows the attention is the default head (a Linear-ReLU-Linear
    feed-forward with a residual, no conventional layers, the latent projection), else None (then autograd runs the
    modules as they are) """
    blk, lat = model.blocks[session], model.to_latent[session]
    ff = blk.ff
    default = (not model.layers and isinstance(ff, nn.Sequential) and len(ff) == 3 and type(ff[0]) is nn.Linear
               and type(ff[1]) is nn.ReLU and type(ff[2]) is nn.Linear and type(lat) is nn.Linear
               and ff[0].bias is not None and ff[2].bias is not None and lat.bias is not None)
    return (ff[0].weight, ff[0].bias, ff[2].weight, ff[2].bias, lat.weight, lat.bias) if default else None


class _FFLatent(torch.autograd.Function):
    """ stats = W_l flatten_n(y) + b_l with y = x + W2 relu(W1 x + b1) + b2 per neuron, and its backward, without
    forming y: since W_l is linear, W_l y = W_l x + (W_l W2) r + const with r = relu(W1 x + b1), and the same
    products give every gradient. x (t, B, N, D) -> (t, B, 2L), a block of `chunk` bins at a time """

    @staticmethod
    def forward(ctx, x, W1, b1, W2, b2, Wl, bl, chunk, recompute):
        # W1 (F, D), b1 (F,), W2 (D, F), b2 (D,), Wl (2L, N D), bl (2L,); recompute: keep only x for backward and
        # compute r again there (else r is kept: (t, B, N, F) more memory, one product less)
        t, B, N, D = x.shape
        Fh, L2 = W1.shape[0], Wl.shape[0]
        x = x.contiguous()
        Wl3 = Wl.view(L2, N, D)
        M = torch.matmul(Wl3, W2).view(L2, N * Fh)                         # (2L, N F): W_l's block of neuron n times W2
        const = torch.addmv(bl, Wl3.sum(1), b2)                            # b_l + sum_n W_l,n b2
        s = x.new_empty(t, B, L2)
        keep = None if recompute or not any(ctx.needs_input_grad) else x.new_empty(t, B, N, Fh)   # (grad is off in here)
        for t0 in range(0, t, chunk):                                      # memory: one block's r at a time
            xc = x[t0:t0 + chunk]
            n = xc.shape[0] * B
            rc = (torch.addmm(b1, xc.view(-1, D), W1.t()) if keep is None    # (c B N, F), kept: written in place
                  else torch.addmm(b1, xc.view(-1, D), W1.t(), out=keep[t0:t0 + chunk].view(-1, Fh))).clamp_(min=0)
            torch.addmm(const, xc.view(n, N * D), Wl.t(), out=s[t0:t0 + chunk].view(n, L2))
            s[t0:t0 + chunk].view(n, L2).addmm_(rc.view(n, N * Fh), M.t())
        ctx.chunk = chunk
        ctx.save_for_backward(x, keep, W1, b1, W2, b2, Wl, M)
        return s

    @staticmethod
    def backward(ctx, gs):
        x, keep, W1, b1, W2, b2, Wl, M = ctx.saved_tensors
        t, B, N, D = x.shape
        Fh, L2 = W1.shape[0], Wl.shape[0]
        gs = gs.contiguous()
        Gx, Gr = x.new_zeros(L2, N * D), x.new_zeros(L2, N * Fh)           # sums over bins of gs x^T and gs r^T
        gW1, gb1 = torch.zeros_like(W1), torch.zeros_like(b1)
        gx = torch.empty_like(x)
        for t0 in range(0, t, ctx.chunk):
            xc = x[t0:t0 + ctx.chunk]
            n = xc.shape[0] * B
            rc = (keep[t0:t0 + ctx.chunk].view(-1, Fh) if keep is not None
                  else torch.addmm(b1, xc.view(-1, D), W1.t()).clamp_(min=0))
            gc = gs[t0:t0 + ctx.chunk].view(n, L2)
            Gx.addmm_(gc.t(), xc.view(n, N * D))
            Gr.addmm_(gc.t(), rc.view(n, N * Fh))
            ga = torch.mm(gc, M).view(-1, Fh)                              # dL/dr = W2^T W_l,n^T gs per row
            torch.ops.aten.threshold_backward.grad_input(ga, rc, 0.0, grad_input=ga)   # through the ReLU
            gW1.addmm_(ga.t(), xc.view(-1, D))
            gb1 += ga.sum(0)
            gxc = gx[t0:t0 + ctx.chunk].view(n, N * D)
            torch.mm(gc, Wl, out=gxc)                                      # dL/dy
            gxc.view(-1, D).addmm_(ga, W1)                                 # + W1^T dL/da = dL/dx
        gsum = gs.view(-1, L2).sum(0)                                      # (2L,): the gradient of b_l
        Gr3 = Gr.view(L2, N, Fh)
        gWl = (Gx.view(L2, N, D) + torch.matmul(Gr3, W2.t())).add_(gsum[:, None, None] * b2)   # gs y^T
        gW2 = torch.einsum("lnd,lnf->df", Wl.view(L2, N, D), Gr3)          # sum_n W_l,n^T (gs r_n^T)
        gb2 = torch.mv(Wl.view(L2, N, D).sum(1).t(), gsum)
        return gx, gW1, gb1, gW2, gb2, gWl.reshape(L2, N * D), gsum, None, None


class _Recompute(torch.autograd.Function):
    """ y = fn(x) keeping only x for backward, where fn runs again (torch.utils.checkpoint in 15 lines,
    without the ~80 MB of modules that its non-reentrant version imports) """

    @staticmethod
    def forward(ctx, fn, x, *params):
        ctx.fn = fn
        ctx.save_for_backward(x, *params)
        return fn(x)                                          # autograd is off inside forward

    @staticmethod
    def backward(ctx, g):
        x, *params = ctx.saved_tensors
        with torch.enable_grad():
            xd = x.detach().requires_grad_(True)
            y = ctx.fn(xd)
        grads = torch.autograd.grad(y, [xd] + params, g, allow_unused=True)
        return (None,) + tuple(grads)


# -----------------------------------------------------------------------------
# the optional compiled kernel: sparks_kernel.cpp (its header says how it works), compiled on first use and cached by
# kernels.py. Both are looked for beside this file: the package has them; this file copied alone says so once.

_NATIVE = {"lib": None, "tried": False, "error": "not tried"}
# the parameters of sparks_kernel.cpp's extern "C" functions, in order; the kernels are called by these names
_FORWARD_ARGS = "u m dP cP dQ cQ Vt bias P Q A ckpt out: ptr; T B H N Dh Dp K: i64; lo hi: double; n_threads: int"
_BACKWARD_ARGS = ("u m dP cP dQ cQ Vp gout ckpt: ptr; n_ckpt: i64; gW acc: ptr; T B H N Dh Np K: i64; lo hi: double; "
                  "n_threads: int")


def native_kernel():
    """ The compiled recurrence, {'hebbian_{forward,backward}_{f32,f64}': kernel}, or None (MINILATENT_NATIVE=0, no
    kernels.py and sparks_kernel.cpp beside this file, no compiler, a failed build: _NATIVE['error'] says why) """
    if not _NATIVE["tried"]:
        _NATIVE["tried"] = True
        sigs = {f"hebbian_{kind}_{f}": sig for f in ("f32", "f64")
                for kind, sig in (("forward", _FORWARD_ARGS), ("backward", _BACKWARD_ARGS))}
        _NATIVE["lib"], _NATIVE["error"] = _compiled("sparks_kernel.cpp", sigs)
    return _NATIVE["lib"]


def _compiled(cpp, signatures):
    """ (kernels, None) or (None, why not): the C functions of `cpp` through the builder kernels.py, both beside this
    file; the builder is loaded by its path, not imported (a model file imports no part of the package) """
    if os.environ.get("MINILATENT_NATIVE", "1") == "0":
        return None, "disabled by MINILATENT_NATIVE=0"
    here, me = os.path.split(os.path.abspath(globals().get("__file__", "sparks.py")))  # pasted into a notebook: cwd
    if not all(os.path.isfile(os.path.join(here, f)) for f in ("kernels.py", cpp)):
        why = f"kernels.py and {cpp} are not beside {me}; copy them from the minilatent package, or pip install it"
        warnings.warn(f"{me}: the compiled kernel is not available ({why}); running in pure torch (the same equations, "
                      "slower)")
        return None, why
    path = os.path.join(here, "kernels.py")                    # run in a namespace of its own (no sys.modules entry)
    builder = {"__file__": path, "__name__": "minilatent_kernels"}
    with open(path) as f:
        exec(compile(f.read(), path, "exec"), builder)
    return builder["load"](os.path.join(here, cpp), signatures)


def _kernel_for(u, native=None):
    """ The compiled (forward, backward) kernels for u's dtype, or None for the torch scan: the native= switch
    (see the top of the extensions) applied to the tensor at hand. """
    if native is False:
        return None
    runs_here = u.device.type == "cpu" and u.dtype in (torch.float32, torch.float64)
    lib = native_kernel() if runs_here else None               # (not built where it could not run)
    if lib is None:
        if native:
            why = _NATIVE["error"] if runs_here else f"it runs on CPU float32/float64, not {u.device.type} {u.dtype}"
            raise RuntimeError(f"native=True: the compiled Hebbian kernel cannot run here ({why}); "
                               "use native=None (kernel where possible) or native=False (pure torch)")
        return None
    name = "f32" if u.dtype == torch.float32 else "f64"
    return lib[f"hebbian_forward_{name}"], lib[f"hebbian_backward_{name}"]


def _native_forward(ctx, u, m, dP, cP, dQ, cQ, W, bias, P0, Q0, A0, chunk, lo, hi):
    T, B, N = u.shape
    H, Dh = W.shape[0], W.shape[1]
    K = min(chunk, T)
    n_ckpt = (T + K - 1) // K
    Dp = -(-Dh // 16) * 16                                     # the kernel reads V^T in blocks of 16 columns
    Vt = F.pad(W.transpose(1, 2), (0, Dp - Dh)).contiguous()   # (H, N, Dp)
    P, Q, A = (s.contiguous().clone() for s in (P0, Q0, A0))   # updated in place
    dP, cP, dQ, cQ = (c.contiguous() for c in (dP, cP, dQ, cQ))
    keep = any(ctx.needs_input_grad)
    ckpt = u.new_empty((n_ckpt, 3) + tuple(P.shape)) if keep else None   # (P, Q, A) at every chunk start
    out = u.new_empty((T, B, N, H, Dh))
    ctx.kernel[0](u=u, m=m, dP=dP, cP=cP, dQ=dQ, cQ=cQ, Vt=Vt, bias=bias.contiguous(), P=P, Q=Q, A=A, ckpt=ckpt,
                  out=out, T=T, B=B, H=H, N=N, Dh=Dh, Dp=Dp, K=K, lo=lo, hi=hi, n_threads=torch.get_num_threads())
    ctx.save_for_backward(u, m, dP, cP, dQ, cQ, W, *([ckpt] if keep else []))
    ctx.chunk, ctx.lo, ctx.hi, ctx.n_ckpt = K, lo, hi, n_ckpt
    ctx.mark_non_differentiable(P, Q, A)
    return out, P, Q, A


def _native_backward(ctx, g_out):
    """ gradients of (u, m, dP, cP, dQ, cQ, W, bias) """
    u, m, dP, cP, dQ, cQ, W, ckpt = ctx.saved_tensors
    T, B, N = u.shape
    H, Dh = W.shape[0], W.shape[1]
    Np = -(-N // 16) * 16
    Vp = F.pad(W, (0, Np - N)).contiguous()                    # (H, Dh, Np)
    g_out = g_out.contiguous()                                 # (T, B, N, H, Dh)
    gW = u.new_zeros(B, H, Dh, Np)                             # one partial sum per trial: no write races
    acc = u.new_empty((4, B, H, N, N))                         # per pair and trial: sums over bins
    ctx.kernel[1](u=u, m=m, dP=dP, cP=cP, dQ=dQ, cQ=cQ, Vp=Vp, gout=g_out, ckpt=ckpt, n_ckpt=ctx.n_ckpt, gW=gW,
                  acc=acc, T=T, B=B, H=H, N=N, Dh=Dh, Np=Np, K=ctx.chunk, lo=ctx.lo, hi=ctx.hi,
                  n_threads=torch.get_num_threads())
    grads = acc.sum(1)
    return (None, None, grads[0], grads[1], grads[2], grads[3], gW.sum(0)[..., :N], g_out.sum((0, 1, 2)))
