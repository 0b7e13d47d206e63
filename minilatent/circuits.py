"""
Circuit models in one file: multi-population rate networks with sparse, ring and low-rank connectivity,
Tsodyks-Markram short-term plasticity, batches of parameter settings, and the theory to check them.

References:
  van Vreeswijk & Sompolinsky (1996, 1998) "Chaos in neuronal networks with balanced excitatory and
    inhibitory activity" / "Chaotic balanced state in a model of cortical circuits"
  Tsodyks & Markram (1997); Tsodyks, Pawelzik & Markram (1998) "Neural networks with dynamic synapses"
  Mongillo, Barak & Tsodyks (2008) "Synaptic theory of working memory"
  Ben-Yishai, Bar-Or & Sompolinsky (1995) "Theory of orientation tuning in visual cortex";
    Hansel & Sompolinsky (1998) "Modeling feature selectivity in local cortical circuits"
  NeuroFlame (Mahrach et al.): the conventions below, and batching parameter settings on one network

Populations A, B, ... (E, I, ...) of N_A neurons, concatenated in one vector of N neurons.
Connectivity of the block A <- B (post x pre) is 0/1 structure C times ONE number per block:

    sparse:     C_ij ~ Bernoulli(K_B / N_B * P_ij),  W_ij = gain * J_AB / sqrt(K_B) * C_ij   (balanced)
                                                    (or gain * J_AB / K_B * C_ij without sqrt(K) scaling)
    all-to-all: W_ij = gain * J_AB * P_ij / N_B
    P_ij = 1 (random) | 1 + kappa cos(theta_i - theta_j) (ring, theta_i = 2 pi i / N) | low-rank with
           xi, eta ~ N(0, 1) from the seed. With both, a sparse block MULTIPLIES the two modulations,
           P_ij = (1 + kappa cos(theta_i - theta_j)) (1 + kappa_lr xi_i eta_j / sqrt(K_B)), clipped to a probability
           in [0, 1]; an all-to-all block ADDS them, P_ij = 1 + kappa cos(theta_i - theta_j) + kappa_lr xi_i eta_j
           (so a sparse block also has the small cross term kappa kappa_lr cos xi eta / sqrt(K_B))

So a sparse block is stored as its 0/1 structure (int32 column indices, CSR) and a scalar, never as a
dense float matrix, and an all-to-all block as a few vectors (cos/sin/xi/eta): W r costs O(nonzeros),
respectively O(N). The scalars live in a batch: J, J0, M0, gain, kappa (all-to-all blocks) and the STP
constants carry a leading dimension of parameter settings that share the structure, so a sweep over a
grid is one simulation.

One step of length dt (exponential Euler; exact for inputs constant over the step):

    h      = W (u x r)  per block (u x = 1 without STP)              recurrent input       (B, N)
    I     <- I e^{-dt/tau_syn} + h (1 - e^{-dt/tau_syn})               (or I = h when tau_syn = 0)
    r     <- r e^{-dt/tau} + phi(I + I_ext + s + noise) (1 - e^{-dt/tau})  (or r = phi(...) when tau = 0)
    I_ext  = sqrt(K_ext) J_A0 M0 (balanced) or J_A0 M0;  s: a stimulus (ring cue, pulse); noise: white,
             std noise * sqrt(tau / dt) per step (so its effect on r does not depend on dt)
    phi    = threshold-linear [x - theta]_+ | sigmoid 1/(1 + e^{-(x - theta)}) | erf (1 + erf((x - theta)/sqrt2))/2
             | Brunel-like: 0 below theta, (x - theta)^2 on [0, 1), sqrt(4 (x - theta) - 3) above

Short-term plasticity (Tsodyks-Markram, rate form) on a chosen block, u and x per presynaptic neuron:

    du/dt = (U - u)/tau_f + U (1 - u) r,    dx/dt = (1 - x)/tau_d - u x r,    drive u x r
    u's equation is linear in u for a constant r, so its step is exact when r is constant over the step:
    u <- u* + (u - u*) e^{-dt (1/tau_f + U r)}. x's equation is linear in x for constant u and r; the step holds u
    at its end-of-step value, so x is exact at a steady state but first order in dt during transients (u changes
    within the step; the error per step is O(dt^2 u' r), small next to dt r at dt = 1 ms and tau_f ~ 1 s)

Theory helpers (formulas in their docstrings): balance_solution, mean_field_threshold_linear,
stp_steady_state, stp_regular_train, ring_bump, wm_fixed_points / wm_jacobian.

Speed: a sparse block's W r is a gather-sum over its int32 CSR indices (embedding_bag: rates as an (N_B, B) table,
so a batch of settings reuses every index read). An optional compiled kernel (circuits_kernel.cpp, OpenMP, built by
kernels.py on first use and cached; both beside this file in the package, copy them with it for the fast path; pure
torch without them or without a compiler) does the same sums with uint16 indices, ~3x faster.
Matmul precision: nothing here changes torch's global float32 matmul precision; all sums are float32.
"""

import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

# -----------------------------------------------------------------------------
# transfer functions phi(x - theta)


def _relu(x):
    return torch.clamp(x, min=0.0)


def _brunel(x):
    x = torch.clamp(x, min=0.0)
    return torch.where(x < 1.0, x * x, torch.sqrt(torch.clamp(4.0 * x - 3.0, min=1.0)))


TRANSFERS = {
    "relu": _relu,                                          # threshold-linear [x]_+
    "threshold_linear": _relu,
    "sigmoid": torch.sigmoid,
    "erf": lambda x: 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0))),
    "brunel": _brunel,
}
CONN_KINDS = ("sparse", "all", "none")

# -----------------------------------------------------------------------------


@dataclass
class STPConfig:
    U: float = 0.03                # release probability at rest (small U: facilitating)
    tau_f: float = 1.0             # facilitation time constant (s)
    tau_d: float = 0.2             # depression (recovery) time constant (s)


@dataclass
class CircuitConfig:
    names: tuple = ("E", "I")                 # population names, in the order of the neuron vector
    sizes: tuple = (1000, 1000)               # neurons per population
    tau: tuple = (0.02, 0.01)                 # rate time constant per population (s); 0: instantaneous r = phi(...)
    tau_syn: tuple = (0.0, 0.0)               # synaptic current time constant (s); 0: the current is h at once
    transfer: object = "relu"                 # one name from TRANSFERS, or one per population
    threshold: tuple = (0.0, 0.0)             # theta per population: phi(x - theta)
    J: tuple = ((1.0, -1.5), (1.0, -1.0))     # signed couplings J_AB, rows post A, columns pre B
    J0: tuple = (2.0, 1.0)                    # external couplings J_A0
    M0: float = 0.15                          # external rate; drive sqrt(K_ext) J_A0 M0 (balanced) or J_A0 M0
    conn: object = "sparse"                   # 'sparse' | 'all' | 'none', one for all blocks or a P x P table
    K: object = 100.0                         # mean in-degree from each presynaptic population (number or per pre pop)
    K_ext: float = 0.0                        # in-degree scaling the external drive; 0: K of the first population
    kappa: object = 0.0                       # ring modulation 1 + kappa cos(theta_i - theta_j), number or P x P
    kappa_lr: object = 0.0                    # rank-one modulation kappa_lr xi_i eta_j, number or P x P
    gain: float = 1.0                         # global coupling gain (NeuroFlame's); 0.5 settles the random part
    balanced: bool = True                     # True: J/sqrt(K) weights and sqrt(K) drive (and the drive must balance)
    stp: dict = field(default_factory=dict)   # {('E', 'E'): STPConfig(...)}: short-term plasticity on those blocks
    dt: float = 1e-3                          # integration step (s)
    seed: int = 0                             # builds the connectivity (and low-rank vectors): same seed, same network

    def __post_init__(self):
        P = len(self.names)
        if P < 1:
            raise ValueError("CircuitConfig.names: need at least one population")
        if len(set(self.names)) != P:
            raise ValueError(f"CircuitConfig.names must be unique, got {self.names}")
        for key in ("sizes", "tau", "tau_syn", "threshold", "J0"):
            v = getattr(self, key)
            if len(v) != P:
                raise ValueError(f"CircuitConfig.{key} has {len(v)} entries but there are {P} populations {tuple(self.names)}")
        if any(int(n) < 1 for n in self.sizes):
            raise ValueError(f"CircuitConfig.sizes must be >= 1, got {self.sizes}")
        if any(t < 0 for t in self.tau) or any(t < 0 for t in self.tau_syn):
            raise ValueError(f"CircuitConfig.tau and tau_syn must be >= 0, got {self.tau}, {self.tau_syn}")
        if np.shape(self.J) != (P, P):
            raise ValueError(f"CircuitConfig.J must be {P} x {P} (post x pre) for populations {tuple(self.names)}, "
                             f"got shape {np.shape(self.J)}")
        transfers = self.transfers()
        for t in transfers:
            if t not in TRANSFERS:
                raise ValueError(f"CircuitConfig.transfer: unknown transfer function {t!r}; choose from {sorted(TRANSFERS)}")
        conn = self.conn_table()
        for row in conn:
            for c in row:
                if c not in CONN_KINDS:
                    raise ValueError(f"CircuitConfig.conn: unknown connectivity {c!r}; choose from {CONN_KINDS}")
        K = self.K_per_pop()
        for b, (k, n) in enumerate(zip(K, self.sizes)):
            if not k > 0:
                raise ValueError(f"CircuitConfig.K must be > 0, got K={k} for population {self.names[b]!r}")
            if any(conn[a][b] == "sparse" for a in range(P)) and k > n:
                raise ValueError(f"CircuitConfig.K={k} for population {self.names[b]!r} exceeds its size N={n}: "
                                 f"a neuron cannot have more inputs than there are presynaptic neurons")
        for key in ("kappa", "kappa_lr"):
            np.broadcast_to(np.asarray(getattr(self, key), dtype=float), (P, P))  # raises on a bad shape
        if self.dt <= 0:
            raise ValueError(f"CircuitConfig.dt must be > 0, got {self.dt}")
        for pair, s in self.stp.items():
            if not (isinstance(pair, tuple) and len(pair) == 2 and all(p in self.names for p in pair)):
                raise KeyError(f"CircuitConfig.stp: key {pair!r} must be a (post, pre) pair of names from {tuple(self.names)}")
            s = s if isinstance(s, STPConfig) else STPConfig(**s)
            if not (0 < s.U <= 1 and s.tau_f > 0 and s.tau_d > 0):
                raise ValueError(f"CircuitConfig.stp[{pair}]: need 0 < U <= 1 and tau_f, tau_d > 0, got {s}")
        if self.balanced:
            m = balance_solution(self.J, self.J0, self.M0, self.gain)
            if m is None or np.any(m <= 0):
                raise ValueError(
                    f"CircuitConfig: balanced=True but J={self.J}, J0={self.J0} cannot balance: the large-K rates "
                    f"m = -(gain J)^-1 J0 M0 = {None if m is None else np.round(m, 4).tolist()} must all be positive "
                    f"(for E/I: J_E0/J_I0 > J_EI/J_II > J_EE/J_IE in magnitudes). Change J or J0, or set balanced=False.")

    # per-population / per-block views of the fields
    def transfers(self):
        return [self.transfer] * len(self.names) if isinstance(self.transfer, str) else list(self.transfer)

    def conn_table(self):
        P = len(self.names)
        if isinstance(self.conn, str):
            return [[self.conn] * P for _ in range(P)]
        if len(self.conn) != P or any(len(r) != P for r in self.conn):
            raise ValueError(f"CircuitConfig.conn must be one name or a {P} x {P} table, got {self.conn}")
        return [list(r) for r in self.conn]

    def K_per_pop(self):
        P = len(self.names)
        K = [float(self.K)] * P if np.ndim(self.K) == 0 else [float(k) for k in self.K]
        if len(K) != P:
            raise ValueError(f"CircuitConfig.K has {len(K)} entries but there are {P} populations")
        return K

    def stp_configs(self):
        return {pair: (s if isinstance(s, STPConfig) else STPConfig(**s)) for pair, s in self.stp.items()}


# -----------------------------------------------------------------------------


class Circuit:
    """ a multi-population rate network: fixed structure, batched parameters, step() and simulate() """

    def __init__(self, cfg: CircuitConfig, native: Optional[bool] = None):
        # native: None uses the optional compiled gather kernel when a C++ compiler is there (extensions), True requires
        # it (a clear error without a compiler), False always the pure-torch path
        self.cfg = cfg
        self.kernel = native_kernel() if native is not False else None
        self._native_required = bool(native)
        if native and self.kernel is None:
            raise RuntimeError(f"Circuit(native=True): the compiled kernel is not available ({_NATIVE['error']}); "
                               f"use native=None or False for the pure-torch path")
        self.names = list(cfg.names)
        self.P = len(self.names)
        self.sizes = [int(n) for n in cfg.sizes]
        self.N = sum(self.sizes)
        starts = np.cumsum([0] + self.sizes)
        self.slices = [slice(int(starts[a]), int(starts[a + 1])) for a in range(self.P)]
        self.K = cfg.K_per_pop()
        self.K_ext = cfg.K_ext or self.K[0]
        self.conn = cfg.conn_table()
        self.kappa = np.broadcast_to(np.asarray(cfg.kappa, dtype=float), (self.P, self.P))
        self.kappa_lr = np.broadcast_to(np.asarray(cfg.kappa_lr, dtype=float), (self.P, self.P))
        self.phis = [TRANSFERS[t] for t in cfg.transfers()]
        self.stp_pairs = [(self.names.index(a), self.names.index(b)) for a, b in cfg.stp]
        # per-neuron constants of the update: e^{-dt/tau}, e^{-dt/tau_syn} (0 when the time constant is 0), theta
        per_neuron = lambda vals: torch.cat([torch.full((n,), float(v)) for n, v in zip(self.sizes, vals)])
        self.decay = per_neuron([math.exp(-cfg.dt / t) if t > 0 else 0.0 for t in cfg.tau])  # (N,)
        self.decay_syn = per_neuron([math.exp(-cfg.dt / t) if t > 0 else 0.0 for t in cfg.tau_syn])  # (N,)
        self.any_syn = any(t > 0 for t in cfg.tau_syn)
        self.theta = per_neuron(cfg.threshold)  # (N,)
        self.noise_scale = per_neuron([math.sqrt(max(t, cfg.dt) / cfg.dt) for t in cfg.tau])  # (N,)
        self.one_phi = len(set(cfg.transfers())) == 1 or self.P == 1
        self.blocks = {}  # (a, b) -> dict of the block's structure
        for a in range(self.P):
            for b in range(self.P):
                if self.conn[a][b] != "none" and cfg.J[a][b] != 0:
                    self.blocks[(a, b)] = self._build_block(a, b)
        self.device = torch.device("cpu")  # the structure is always drawn on the CPU (same network on every device)

    def to(self, device):
        """ Move the network's constants and structure to a device (e.g. 'cuda'); simulations then run there.
        The compiled kernel is CPU-only: on another device the sums run in pure torch (native=True refuses). """
        device = torch.device(device)
        if device.type != "cpu" and self.kernel is not None and self._native_required:
            raise RuntimeError(f"Circuit(native=True) requires the compiled CPU kernel; it cannot run on {device}")
        self.decay, self.decay_syn, self.theta, self.noise_scale = (
            t.to(device) for t in (self.decay, self.decay_syn, self.theta, self.noise_scale))
        for blk in self.blocks.values():
            for k, v in blk.items():
                if isinstance(v, torch.Tensor):
                    blk[k] = v.to(device)
        self.device = device
        return self

    # --- connectivity ---------------------------------------------------------

    def angles(self, a):
        """ ring positions theta_i = 2 pi i / N_A of population a (index or name) """
        a = self._pop(a)
        return torch.arange(self.sizes[a], dtype=torch.float64) * (2 * math.pi / self.sizes[a])

    def _build_block(self, a, b):
        cfg, Na, Nb = self.cfg, self.sizes[a], self.sizes[b]
        g = torch.Generator().manual_seed((cfg.seed * 1_000_003 + a * 1009 + b) % 2 ** 62)
        kappa, klr = float(self.kappa[a, b]), float(self.kappa_lr[a, b])
        th_a, th_b = self.angles(a), self.angles(b)
        blk = {"kind": self.conn[a][b]}
        if klr != 0:
            blk["xi"] = torch.randn(Na, generator=g, dtype=torch.float64)
            blk["eta"] = torch.randn(Nb, generator=g, dtype=torch.float64)
        if blk["kind"] == "all":  # W = gain J (1 + kappa cos + klr xi eta) / N_B, applied through its vectors
            blk.update(cos_post=torch.cos(th_a).float(), sin_post=torch.sin(th_a).float(),
                       cos_pre=torch.cos(th_b).float(), sin_pre=torch.sin(th_b).float())
            if klr != 0:
                blk["xi"], blk["eta"] = blk["xi"].float(), blk["eta"].float()
            return blk
        # sparse: draw C_ij ~ Bernoulli(K/N_B * P_ij) row-chunk by row-chunk (bounded memory), keep CSR int32
        p0 = self.K[b] / Nb
        cols, counts = [], []
        chunk = max(1, 4_000_000 // Nb)
        for i0 in range(0, Na, chunk):
            i1 = min(Na, i0 + chunk)
            prob = torch.full((i1 - i0, Nb), p0, dtype=torch.float64)
            if kappa != 0:
                prob = prob * (1 + kappa * torch.cos(th_a[i0:i1, None] - th_b[None, :]))
            if klr != 0:
                prob = prob * (1 + klr * blk["xi"][i0:i1, None] * blk["eta"][None, :] / math.sqrt(self.K[b]))
            mask = torch.rand(i1 - i0, Nb, generator=g, dtype=torch.float64) < prob.clamp(0, 1)
            counts.append(mask.sum(1))
            cols.append(mask.nonzero()[:, 1])
        counts = torch.cat(counts)
        if counts.sum() >= 2 ** 31:
            raise ValueError(f"block {self.names[a]}<-{self.names[b]}: {int(counts.sum()):,} synapses exceed the int32 CSR "
                             f"offsets (2^31); use fewer neurons or a smaller K")
        blk["idx"] = torch.cat(cols).to(torch.int32)                           # (nnz,) presynaptic index in B
        blk["offsets"] = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)[:-1]]).to(torch.int32)  # (N_A,)
        blk["indegree"] = counts.to(torch.int32)
        return blk

    def dense_structure(self, post, pre):
        """ the 0/1 structure of a sparse block as a dense (N_A, N_B) float32 matrix (for tests and plots) """
        a, b = self._pop(post), self._pop(pre)
        blk = self.blocks[(a, b)]
        if blk["kind"] != "sparse":
            raise ValueError(f"block {self.names[a]}<-{self.names[b]} is {blk['kind']!r}, not sparse")
        C = torch.zeros(self.sizes[a], self.sizes[b])
        rows = torch.repeat_interleave(torch.arange(self.sizes[a]), blk["indegree"].long().cpu())
        C[rows, blk["idx"].long().cpu()] = 1.0
        return C

    def dense_weights(self, params=None, setting=0):
        """ the full (N, N) float32 weight matrix of one parameter setting (dense reference; big for large N) """
        p = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in (params or self.batch_params()).items()}
        W = torch.zeros(self.N, self.N)
        for (a, b), blk in self.blocks.items():
            blk = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in blk.items()}
            w = self._block_scale(p, a, b)[setting]
            if blk["kind"] == "sparse":
                W[self.slices[a], self.slices[b]] = w * self.dense_structure(a, b)
            else:
                k = p["kappa"][setting, a, b]
                M = 1 + k * (blk["cos_post"][:, None] * blk["cos_pre"][None] + blk["sin_post"][:, None] * blk["sin_pre"][None])
                if "xi" in blk:
                    M = M + float(self.kappa_lr[a, b]) * blk["xi"][:, None] * blk["eta"][None]
                W[self.slices[a], self.slices[b]] = w * M
        return W

    def n_synapses(self):
        return sum(int(blk["idx"].numel()) for blk in self.blocks.values() if blk["kind"] == "sparse")

    def _pop(self, a):
        if isinstance(a, str):
            if a not in self.names:
                raise KeyError(f"unknown population {a!r}; populations are {self.names}")
            return self.names.index(a)
        return int(a)

    # --- batched parameters ---------------------------------------------------

    def batch_params(self, **overrides):
        """ The parameters of a batch of settings that share this network's structure. Each override has a
        leading batch dimension B (or none, then it is shared): J (B, P, P), J0 (B, P), M0 (B,), gain (B,),
        kappa (B, P, P) (all-to-all blocks only: the structure of sparse blocks is fixed), and for STP U, tau_f,
        tau_d (B,) or (B, n_stp_pairs). Returns a dict of float32 tensors with batch dim B. """
        cfg, P = self.cfg, self.P
        stp = list(cfg.stp_configs().values())
        base = {"J": torch.tensor(cfg.J, dtype=torch.float32), "J0": torch.tensor(cfg.J0, dtype=torch.float32),
                "M0": torch.tensor(float(cfg.M0)), "gain": torch.tensor(float(cfg.gain)),
                "kappa": torch.tensor(self.kappa, dtype=torch.float32),
                "U": torch.tensor([s.U for s in stp]), "tau_f": torch.tensor([s.tau_f for s in stp]),
                "tau_d": torch.tensor([s.tau_d for s in stp])}
        unknown = set(overrides) - set(base)
        if unknown:
            raise KeyError(f"batch_params: unknown parameter(s) {sorted(unknown)}; batchable: {sorted(base)}")
        shapes = {"J": (P, P), "J0": (P,), "M0": (), "gain": (), "kappa": (P, P),
                  "U": (len(stp),), "tau_f": (len(stp),), "tau_d": (len(stp),)}
        Bs = set()
        out = {}
        for k, v in base.items():
            if k in overrides:
                v = torch.as_tensor(overrides[k], dtype=torch.float32)
                if k in ("U", "tau_f", "tau_d") and v.dim() == 1 and len(stp) >= 1 and v.shape != (len(stp),):
                    v = v[:, None].expand(-1, len(stp))  # (B,) for every STP block
                if tuple(v.shape) == shapes[k]:
                    v = v[None]
                elif tuple(v.shape[1:]) != shapes[k]:
                    raise ValueError(f"batch_params: {k} must have shape {shapes[k]} or (B,) + {shapes[k]}, "
                                     f"got {tuple(v.shape)}")
                else:
                    Bs.add(v.shape[0])
                if not torch.isfinite(v).all():
                    raise ValueError(f"batch_params: {k} contains NaN or infinite values")
            else:
                v = v[None]
            out[k] = v
        if len(Bs) > 1:
            raise ValueError(f"batch_params: batched parameters disagree on the batch size: {sorted(Bs)}")
        B = Bs.pop() if Bs else 1
        for k in out:
            out[k] = out[k].expand((B,) + tuple(out[k].shape[1:])).contiguous()
        if "J" in overrides:
            for a in range(P):
                for b in range(P):
                    if (a, b) not in self.blocks and (out["J"][:, a, b] != 0).any():
                        raise ValueError(f"batch_params: J[{a}][{b}] ({self.names[a]}<-{self.names[b]}) is nonzero in the batch "
                                         f"but the network has no such block (conn 'none' or J = 0 in the config): "
                                         f"give it a nonzero J in the config to build its structure")
        if "kappa" in overrides:
            for (a, b), blk in self.blocks.items():
                if blk["kind"] == "sparse" and not torch.all(out["kappa"][:, a, b] == float(self.kappa[a, b])):
                    raise ValueError(f"batch_params: kappa of the sparse block {self.names[a]}<-{self.names[b]} is part "
                                     f"of its structure (set it in the config), it cannot vary across the batch")
        if ((out["U"] <= 0) | (out["U"] > 1)).any() or (out["tau_f"] <= 0).any() or (out["tau_d"] <= 0).any():
            raise ValueError("batch_params: STP needs 0 < U <= 1 and tau_f, tau_d > 0")
        out["B"] = B
        return out

    def _block_scale(self, p, a, b):  # (B,) the one weight value of block a <- b
        blk = self.blocks[(a, b)]
        if blk["kind"] == "all":
            norm = self.sizes[b]
        else:
            norm = math.sqrt(self.K[b]) if self.cfg.balanced else self.K[b]
        return p["gain"] * p["J"][:, a, b] / norm

    def external_input(self, p):
        """ (B, N) constant drive: sqrt(K_ext) J_A0 M0 (balanced) or J_A0 M0 """
        scale = math.sqrt(self.K_ext) if self.cfg.balanced else 1.0
        ext = scale * p["J0"] * p["M0"][:, None]  # (B, P)
        return torch.repeat_interleave(ext, torch.tensor(self.sizes, device=ext.device), dim=1)  # (B, N)

    # --- dynamics ---------------------------------------------------------------

    def init_state(self, params=None, r0=None, seed=0, **overrides):
        """ A state dict for step(): rates r (B, N) (r0: (N,) or (B, N); default 0), synaptic currents I,
        STP variables u = U, x = 1 per STP block, the resolved batch params, and a noise generator. """
        p = params if params is not None else self.batch_params(**overrides)
        p = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in p.items()}
        B, dev = p["B"], self.device
        if r0 is None:
            r = torch.zeros(B, self.N, device=dev)
        else:
            r0 = torch.as_tensor(r0, dtype=torch.float32).to(dev)
            if r0.shape[-1] != self.N or r0.dim() > 2:
                raise ValueError(f"init_state: r0 must be (N,) or (B, N) with N={self.N}, got {tuple(r0.shape)}")
            r = r0.expand(B, self.N).clone()
        st = {"r": r, "I": torch.zeros(B, self.N, device=dev), "p": p, "ext": self.external_input(p), "t": 0,
              "gen": torch.Generator(device=dev).manual_seed(int(seed)),  # noise: a per-device random stream
              "w": {ab: self._block_scale(p, *ab) for ab in self.blocks}}  # (B,) the one weight of each block
        for k, (a, b) in enumerate(self.stp_pairs):  # float64: a float32 relaxation u <- u* + (u - u*) e^{-k dt}
            # stalls up to 0.5 / (1 - e^{-k dt}) ulp short of u* (1e-6 for slow tau_f); per-neuron vectors are cheap
            st[f"u{k}"] = p["U"][:, k, None].double().expand(B, self.sizes[b]).clone()  # (B, N_B)
            st[f"x{k}"] = torch.ones(B, self.sizes[b], dtype=torch.float64, device=dev)
        return st

    def recurrent_input(self, st, per_pop=False):
        """ h = W (u x r): (B, N), or (B, N, P) split by presynaptic population when per_pop """
        p, r = st["p"], st["r"]
        B = p["B"]
        hT = torch.zeros(self.N, self.P if per_pop else 1, B, device=r.device)  # (N, P|1, B): gathers want rates as rows
        rT = r.t().clone(memory_format=torch.contiguous_format)  # (N, B); .contiguous() keeps a stride-N column
        # when B = 1, which sends embedding_bag down a path 20x slower
        stp_of = {pair: k for k, pair in enumerate(self.stp_pairs)}
        for (a, b), blk in self.blocks.items():
            if (a, b) in stp_of:
                k = stp_of[(a, b)]
                pre = ((st[f"u{k}"] * st[f"x{k}"]).float() * r[:, self.slices[b]]).t().clone(memory_format=torch.contiguous_format)
            else:
                pre = rT[self.slices[b]]  # (N_B, B)
            w = st["w"][(a, b)] if "w" in st else self._block_scale(p, a, b)  # (B,)
            if blk["kind"] == "sparse":
                if self.kernel is not None and pre.device.type == "cpu":  # the compiled gather-sum (extensions)
                    small = self.sizes[b] <= 65536  # uint16 indices: 2 bytes a synapse
                    if small and "idx16" not in blk:
                        blk["idx16"] = blk["idx"].to(torch.int16)  # same bits as uint16 below 2^16; read as uint16
                    s = native_gather_sum(self.kernel, blk["idx16"] if small else blk["idx"], blk["offsets"], pre,
                                          self.sizes[a])  # (N_A, B)
                else:
                    s = F.embedding_bag(blk["idx"], pre, blk["offsets"], mode="sum")  # (N_A, B): C @ pre, fp32 sums
            else:
                tot = pre.sum(0)  # (B,)
                c, sn = blk["cos_pre"] @ pre, blk["sin_pre"] @ pre  # (B,)
                k_ = p["kappa"][:, a, b]
                s = tot + k_ * (blk["cos_post"][:, None] * c + blk["sin_post"][:, None] * sn)  # (N_A, B)
                if "xi" in blk:
                    s = s + float(self.kappa_lr[a, b]) * blk["xi"][:, None] * (blk["eta"] @ pre)
            hT[self.slices[a], b if per_pop else 0] += s * w
        h = hT.permute(2, 0, 1)  # (B, N, P|1)
        return h if per_pop else h[..., 0]

    def step(self, st, inputs=None, noise=0.0, per_pop=False):
        """ One exponential-Euler step of length dt (module docstring). inputs: extra input (N,) or (B, N);
        noise: input-noise strength. Returns the new state dict (the old one is not modified); with per_pop the
        recurrent input split by presynaptic population is kept in st['h'] (B, N, P). """
        dt = self.cfg.dt
        p, r = st["p"], st["r"]
        h = self.recurrent_input(st, per_pop)  # (B, N[, P])
        new = dict(st)
        if per_pop:
            new["h"] = h
            h = h.sum(-1)
        drive = st["ext"] if inputs is None else st["ext"] + torch.as_tensor(inputs, dtype=torch.float32, device=r.device)  # (B, N)
        I = st["I"] * self.decay_syn + h * (1 - self.decay_syn) if self.any_syn else h  # decay 0: I = h exactly
        x = I + drive - self.theta  # (B, N)
        if noise:
            x = x + noise * self.noise_scale * torch.randn(x.shape, generator=st["gen"], device=x.device)
        if self.one_phi:
            target = self.phis[0](x)
        else:
            target = torch.cat([self.phis[a](x[:, sl]) for a, sl in enumerate(self.slices)], 1)
        r_new = r * self.decay + target * (1 - self.decay)  # decay 0 (tau = 0): r = phi(...) exactly
        for k, (a, b) in enumerate(self.stp_pairs):  # exact step of the linear u, x equations at the old rate
            rb = r[:, self.slices[b]].double()  # (B, N_B)
            U, tf, td = p["U"][:, k, None].double(), p["tau_f"][:, k, None].double(), p["tau_d"][:, k, None].double()
            u, x = st[f"u{k}"], st[f"x{k}"]
            ku = 1 / tf + U * rb
            u_inf = (U / tf + U * rb) / ku
            u = u_inf + (u - u_inf) * torch.exp(-dt * ku)
            kx = 1 / td + u * rb
            x_inf = (1 / td) / kx
            new[f"x{k}"] = x_inf + (x - x_inf) * torch.exp(-dt * kx)
            new[f"u{k}"] = u
        new["I"], new["r"], new["t"] = I, r_new, st["t"] + 1
        return new

    def simulate(self, duration, params=None, r0=None, stimulus=None, noise=0.0, seed=0, record_every=1,
                 record=("rates",), spikes=False, **overrides):
        """ Run for `duration` seconds (n = round(duration / dt) steps) from r0 (default 0).
        params / overrides: see batch_params (a batch of B settings runs as one simulation).
        stimulus: None, a tensor (n, N) or (B, n, N), or a function step_index -> (N,) or (B, N) tensor.
        record: any of 'rates', 'currents' (synaptic current I), 'inputs' (recurrent input split by presynaptic
        population, (B, T, N, P)), 'stp' (u and x of each STP block). Returns a dict: t (T,) seconds after each
        recorded step, rates (B, T, N), pop_rates (B, T, P), what was asked, the final 'state', and with
        spikes=True Poisson counts (B, T, N) of the rates over bins of record_every * dt. """
        for k in record:
            if k not in ("rates", "currents", "inputs", "stp"):
                raise ValueError(f"simulate: unknown record {k!r}; choose from rates, currents, inputs, stp")
        if isinstance(duration, bool) or not isinstance(duration, (int, float, np.number)) or not math.isfinite(duration):
            raise ValueError(f"simulate: duration must be a finite number of seconds, got {duration!r}")
        n = int(round(duration / self.cfg.dt))
        if n < 1:
            raise ValueError(f"simulate: duration {duration} s is shorter than one step dt={self.cfg.dt}")
        if isinstance(record_every, bool) or not isinstance(record_every, (int, np.integer)) or not 1 <= record_every <= n:
            raise ValueError(f"simulate: record_every must be an integer in [1, {n}] (steps in the run), got {record_every!r}")
        if not (isinstance(noise, (int, float, np.number)) and math.isfinite(noise) and noise >= 0):
            raise ValueError(f"simulate: noise must be a finite number >= 0, got {noise!r}")
        if stimulus is not None and not callable(stimulus):
            st_ = torch.as_tensor(stimulus)
            if st_.dim() not in (2, 3):
                raise ValueError(f"simulate: stimulus must be (n_steps={n}, N={self.N}) or (B, n_steps, N), got shape "
                                 f"{tuple(st_.shape)}")
            if st_.is_floating_point() and not torch.isfinite(st_).all():
                raise ValueError("simulate: stimulus contains NaN or infinite values")
        st = self.init_state(params, r0, seed, **overrides)
        B = st["p"]["B"]
        stim = _stimulus_fn(stimulus, n, B, self.N, self.device)
        out = {k: [] for k in ("t", "rates", "currents", "inputs")}
        stp_rec = {f"{w}{k}": [] for k in range(len(self.stp_pairs)) for w in "ux"}
        per_pop = "inputs" in record
        for i in range(n):
            st = self.step(st, stim(i) if stim else None, noise, per_pop)
            if (i + 1) % record_every == 0:
                out["t"].append((i + 1) * self.cfg.dt)
                out["rates"].append(st["r"])
                if "currents" in record:
                    out["currents"].append(st["I"])
                if per_pop:
                    out["inputs"].append(st["h"])
                if "stp" in record:
                    for k in stp_rec:
                        stp_rec[k].append(st[k])
        res = {"t": torch.tensor(out["t"]), "state": st}
        rates = torch.stack(out["rates"], 1)  # (B, T, N)
        res["pop_rates"] = torch.stack([rates[..., sl].mean(-1) for sl in self.slices], -1)  # (B, T, P)
        if "rates" in record or spikes:
            res["rates"] = rates
        if "currents" in record:
            res["currents"] = torch.stack(out["currents"], 1)
        if per_pop:
            res["inputs"] = torch.stack(out["inputs"], 1)  # (B, T, N, P)
        if "stp" in record:
            for k, v in stp_rec.items():
                res[k] = torch.stack(v, 1)  # (B, T, N_pre)
        if spikes:
            res["spikes"] = poisson_spikes(rates.cpu(), self.cfg.dt * record_every, seed=seed + 1)  # CPU stream: the
            # same spikes from the same rates on every device
        return res

    def __repr__(self):
        blocks = ", ".join(f"{self.names[a]}<-{self.names[b]}:{blk['kind']}" for (a, b), blk in self.blocks.items())
        return f"Circuit(N={self.N}, populations={dict(zip(self.names, self.sizes))}, blocks=[{blocks}], synapses={self.n_synapses():,})"


def _stimulus_fn(stimulus, n, B, N, device="cpu"):
    if stimulus is None or callable(stimulus):
        return stimulus
    s = torch.as_tensor(stimulus, dtype=torch.float32).to(device)
    if s.shape[-1] != N or s.shape[-2] != n or s.dim() not in (2, 3) or (s.dim() == 3 and s.shape[0] not in (1, B)):
        raise ValueError(f"simulate: stimulus must be (n_steps={n}, N={N}) or (B={B}, n_steps, N), got {tuple(s.shape)}")
    return (lambda i: s[i]) if s.dim() == 2 else (lambda i: s[:, i])


# -----------------------------------------------------------------------------
# stimuli and spikes


def ring_cue(circuit, pop, angle, amplitude, shape="cos"):
    """ (N,) input to population `pop` peaked at `angle` (radians): amplitude * cos(theta - angle), or with
    shape='bump' amplitude * [cos(theta - angle)]_+; zero for the other populations. """
    a = circuit._pop(pop)
    v = torch.zeros(circuit.N)
    c = torch.cos(circuit.angles(a) - angle).float()
    v[circuit.slices[a]] = amplitude * (c.clamp(min=0) if shape == "bump" else c)
    return v


def pulse(vector, start, stop, dt):
    """ a stimulus function: `vector` (N,) or (B, N) between start and stop seconds, zero otherwise """
    vector = torch.as_tensor(vector, dtype=torch.float32)
    i0, i1 = int(round(start / dt)), int(round(stop / dt))
    zero = torch.zeros_like(vector)
    return lambda i: vector if i0 <= i < i1 else zero


def poisson_spikes(rates, dt, seed=0):
    """ Poisson counts per bin of width dt (s) from rates (spikes/s), same shape; the bridge to the latent models """
    rates = torch.as_tensor(rates, dtype=torch.float32)
    if (rates < 0).any() or not torch.isfinite(rates).all():
        raise ValueError("poisson_spikes: rates must be finite and >= 0")
    return torch.poisson(rates * dt, generator=torch.Generator().manual_seed(int(seed)))


# -----------------------------------------------------------------------------
# theory: balanced state


def balance_solution(J, J0, M0=1.0, gain=1.0, K=None, K_ext=None):
    """ Large-K balance: the O(sqrt K) inputs cancel, gain sum_B J_AB sqrt(K_B) m_B + sqrt(K_ext) J_A0 M0 = 0, so
    m = -(gain J diag(sqrt K))^{-1} sqrt(K_ext) J0 M0 (J signed, post x pre; K per presynaptic population, a number
    or None for equal in-degrees; K_ext defaults to the first population's K, as in Circuit). With equal K this is
    m = -(gain J)^{-1} J0 M0. A population with fewer inputs needs a proportionally higher rate (sqrt(K_ext / K_B))
    to cancel the same drive. A balanced state needs every m_A > 0; for two populations that is
    J_E0/J_I0 > J_EI/J_II > J_EE/J_IE in magnitudes (or all reversed), whatever the K.
    Returns m (numpy array), or None when J is singular. """
    J = np.asarray(J, dtype=float) * gain
    P = J.shape[0]
    K = np.ones(P) if K is None else np.broadcast_to(np.asarray(K, dtype=float), (P,))
    K_ext = K[0] if K_ext is None else float(K_ext)
    try:
        return -np.linalg.solve(J * np.sqrt(K)[None, :], math.sqrt(K_ext) * np.asarray(J0, dtype=float) * M0)
    except np.linalg.LinAlgError:
        return None


def balance_condition(J, J0):
    """ the two-population positivity condition J_E0/J_I0 > J_EI/J_II > J_EE/J_IE (magnitudes) or all reversed """
    J, J0 = np.abs(np.asarray(J, dtype=float)), np.abs(np.asarray(J0, dtype=float))
    a, b, c = J0[0] / J0[1], J[0, 1] / J[1, 1], J[0, 0] / J[1, 0]
    return bool(a > b > c or a < b < c)


def _Phi(z):
    return 0.5 * np.vectorize(math.erfc)(-z / math.sqrt(2))  # erfc: accurate far below threshold too


def _phi(z):
    return np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def mean_field_threshold_linear(J, J0, M0, K, N, gain=1.0, theta=0.0, K_ext=None, tol=1e-12):
    """ Finite-K static mean field of a sparse threshold-linear network at a fixed point (exact there in the
    limit of many neurons). The input to a neuron of A is Gaussian over neurons with
        mu_A      = gain sum_B sqrt(K_B) J_AB m_B + sqrt(K_ext) J_A0 M0 - theta_A
        sigma_A^2 = gain^2 sum_B J_AB^2 (1 - K_B/N_B) q_B          (Bernoulli connectivity, quenched)
    and the rates' first two moments close the loop (Phi, phi: normal cdf and density, z = mu/sigma):
        m_A = mu Phi(z) + sigma phi(z),   q_A = (mu^2 + sigma^2) Phi(z) + mu sigma phi(z).
    Solved by Newton's method on log(m, q) in float64 from the large-K solution. Returns (m, q) numpy arrays. """
    J, J0 = np.asarray(J, float), np.asarray(J0, float)
    P = len(J0)
    K = np.broadcast_to(np.asarray(K, float), (P,))
    N = np.broadcast_to(np.asarray(N, float), (P,))
    theta = np.broadcast_to(np.asarray(theta, float), (P,))
    K_ext = K[0] if K_ext is None else K_ext

    def G(v):
        m, q = v[:P], v[P:]
        mu = gain * (J * np.sqrt(K)[None]) @ m + math.sqrt(K_ext) * J0 * M0 - theta
        sig = np.sqrt(np.maximum(gain ** 2 * (J ** 2 * (1 - K / N)[None]) @ np.maximum(q, 0), 1e-300))
        z = mu / sig
        Ph, ph = _Phi(z), _phi(z)
        return np.concatenate([mu * Ph + sig * ph, (mu ** 2 + sig ** 2) * Ph + mu * sig * ph])

    m0 = balance_solution(J, J0, M0, gain, K, K_ext)
    m0 = np.where(m0 > 0, m0, 0.1) if m0 is not None else np.full(P, 0.1)
    v = np.log(np.concatenate([m0, 2 * m0 ** 2]))  # Newton on log(m, q): positivity for free, and rates that
    F = lambda v: np.log(np.maximum(G(np.exp(v)), 1e-300)) - v  # span decades (a silenced population) stay easy
    for _ in range(200):
        Fv = F(v)
        if np.max(np.abs(Fv)) < tol:
            break
        Jac = np.empty((2 * P, 2 * P))
        for j in range(2 * P):
            e = np.zeros(2 * P)
            e[j] = 1e-6
            Jac[:, j] = (F(v + e) - F(v - e)) / 2e-6
        dv = np.linalg.solve(Jac, -Fv)
        lam = min(1.0, 1.0 / max(np.max(np.abs(dv)), 1e-300))  # at most a factor e per step
        while lam > 1e-6 and not np.max(np.abs(F(v + lam * dv))) < np.max(np.abs(Fv)):
            lam /= 2  # backtracking: the residual must decrease
        if lam <= 1e-6 and np.max(np.abs(Fv)) < 1e-8:
            break  # at the floor of float64 round-off (a nearly silent population)
        v = v + lam * dv
    else:
        raise RuntimeError("mean_field_threshold_linear: Newton did not converge")
    v = np.exp(v)
    return v[:P], v[P:]


# -----------------------------------------------------------------------------
# theory: short-term plasticity


def stp_steady_state(r, U, tau_f, tau_d):
    """ Rate-form steady state of du/dt = (U - u)/tau_f + U(1 - u) r, dx/dt = (1 - x)/tau_d - u x r:
        u* = U (1 + tau_f r) / (1 + U tau_f r),   x* = 1 / (1 + u* tau_d r);
    the synaptic drive u* x* r. Without facilitation (u = U) it is U r / (1 + U tau_d r) -> 1/tau_d. """
    u = U * (1 + tau_f * r) / (1 + U * tau_f * r)
    return u, 1 / (1 + u * tau_d * r)


def stp_regular_train(interval, U, tau_f, tau_d, u_rest="zero"):
    """ Steady state under a regular spike train of inter-spike interval D (s): u just after a spike (the
    release fraction) and x just before it. At each spike u <- u + U (1 - u), then x <- x (1 - u).
    u_rest='zero' (Tsodyks-Pawelzik-Markram 1998: u decays to 0 between spikes):
        u_st = U / (1 - (1 - U) e^{-D/tau_f})
    u_rest='U' (Mongillo-Barak-Tsodyks 2008, matches the rate form: u decays to U), with a = e^{-D/tau_f}:
        u_st = U (1 + (1 - U)(1 - a)) / (1 - (1 - U) a)
    and in both  x_st = (1 - e^{-D/tau_d}) / (1 - (1 - u_st) e^{-D/tau_d}). """
    a, b = math.exp(-interval / tau_f), math.exp(-interval / tau_d)
    if u_rest == "zero":
        u = U / (1 - (1 - U) * a)
    elif u_rest == "U":
        u = U * (1 + (1 - U) * (1 - a)) / (1 - (1 - U) * a)
    else:
        raise ValueError(f"stp_regular_train: u_rest must be 'zero' or 'U', got {u_rest!r}")
    return u, (1 - b) / (1 - (1 - u) * b)


def stp_spike_train(spike_times, U, tau_f, tau_d, u_rest="zero"):
    """ Event-driven Tsodyks-Markram synapse (exact between spikes: u relaxes to 0 or U with tau_f, x to 1 with
    tau_d). Returns numpy arrays u+ (after the jump) and x- (before release) at each spike; the released
    resource (the PSC amplitude, relative) is u+ x-. """
    if u_rest not in ("zero", "U"):
        raise ValueError(f"stp_spike_train: u_rest must be 'zero' or 'U', got {u_rest!r}")
    base = 0.0 if u_rest == "zero" else U
    u, x, last = base, 1.0, None
    us, xs = [], []
    for t in np.asarray(spike_times, dtype=float):
        if last is not None:
            d = t - last
            u = base + (u - base) * math.exp(-d / tau_f)
            x = 1 - (1 - x) * math.exp(-d / tau_d)
        u = u + U * (1 - u)
        us.append(u)
        xs.append(x)
        x = x * (1 - u)
        last = t
    return np.array(us), np.array(xs)


# theory: working memory through facilitation (Mongillo, Barak & Tsodyks 2008), one population
#   tau dr/dt = -r + [J u x r + I]_+  (I = external input minus threshold),  u, x as above


def wm_fixed_points(J, U, tau_f, tau_d, I, r_max=1000.0, n_grid=200001):
    """ Fixed points r of r = [J u*(r) x*(r) r + I]_+ (u*, x* from stp_steady_state): r = 0 when I <= 0,
    and every root of J u* x* r + I - r = 0 on (0, r_max], found on a grid and refined by bisection. """
    f = lambda r: J * np.prod(stp_steady_state(r, U, tau_f, tau_d), axis=0) * r + I - r
    roots = [0.0] if I <= 0 else []
    g = np.linspace(1e-9, r_max, n_grid)
    v = f(g)
    for i in np.nonzero(np.sign(v[:-1]) != np.sign(v[1:]))[0]:
        lo, hi = g[i], g[i + 1]
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            if np.sign(f(mid)) == np.sign(f(lo)):
                lo = mid
            else:
                hi = mid
        roots.append(0.5 * (lo + hi))
    return np.array(roots)


def wm_jacobian(r, J, U, tau_f, tau_d, I, tau):
    """ Jacobian of (r, u, x) at a fixed point r (u = u*, x = x*). Where J u x r + I > 0:
        d(dr/dt) = [(J u x - 1), J x r, J u r] / tau
        d(du/dt) = [U (1 - u), -1/tau_f - U r, 0]
        d(dx/dt) = [-u x, -x r, -1/tau_d - u r]
    (below threshold the first row is [-1/tau, 0, 0]). Stable iff every eigenvalue has a negative real part:
    the slope alone cannot tell (the high state can lose stability through an oscillation). """
    u, x = stp_steady_state(r, U, tau_f, tau_d)
    on = J * u * x * r + I > 0
    row = [(J * u * x - 1) / tau, J * x * r / tau, J * u * r / tau] if on else [-1 / tau, 0.0, 0.0]
    return np.array([row, [U * (1 - u), -1 / tau_f - U * r, 0.0], [-u * x, -x * r, -1 / tau_d - u * r]])


def wm_stability(r, J, U, tau_f, tau_d, I, tau):
    """ (stable?, eigenvalues) of the (r, u, x) Jacobian at fixed point r """
    ev = np.linalg.eigvals(wm_jacobian(r, J, U, tau_f, tau_d, I, tau))
    return bool(np.all(ev.real < 0)), ev


def wm_config(J=10.0, U=0.03, tau_f=1.0, tau_d=0.2, I=-5.0, tau=0.02, n=1, dt=1e-3):
    """ the Mongillo-Barak-Tsodyks population as a one-population Circuit (all-to-all J/N, STP on E<-E) """
    return CircuitConfig(names=("E",), sizes=(n,), tau=(tau,), tau_syn=(0.0,), transfer="relu", threshold=(0.0,),
                         J=((J,),), J0=(I,), M0=1.0, conn="all", K=n, balanced=False,
                         stp={("E", "E"): STPConfig(U, tau_f, tau_d)}, dt=dt)


# -----------------------------------------------------------------------------
# theory: ring attractor (threshold-linear, all-to-all cosine couplings)


def ring_bump(J0, J1, I):
    """ Ring tau dm/dt = -m + [I + J0 <m> + J1 <m cos(theta - theta')>]_+ (I = input minus threshold, <.> over the
    ring). For J1 > 2 a bump m = A [cos(theta - psi) - cos theta_c]_+ with half-width theta_c solving
        theta_c - sin(2 theta_c)/2 = 2 pi / J1,   A = I / (-cos theta_c - (J0/pi)(sin theta_c - theta_c cos theta_c)).
    For J1 <= 2: no bump, the uniform rate I / (1 - J0) (theta_c = None). Returns (theta_c radians, A). """
    if J1 <= 2:
        return None, I / (1 - J0)
    lo, hi, target = 0.0, math.pi, 2 * math.pi / J1
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid - math.sin(2 * mid) / 2 < target:
            lo = mid
        else:
            hi = mid
    tc = 0.5 * (lo + hi)
    return tc, I / (-math.cos(tc) - (J0 / math.pi) * (math.sin(tc) - tc * math.cos(tc)))


def ring_config(J0=-2.0, J1=3.0, I=1.0, n=1000, tau=0.01, dt=1e-3):
    """ the Ben-Yishai ring as a one-population Circuit: all-to-all W = J0 (1 + kappa cos) / N, kappa = J1 / J0 """
    if J0 == 0:
        raise ValueError("ring_config: J0 must be nonzero (the cosine part is kappa * J0 with kappa = J1 / J0)")
    return CircuitConfig(names=("E",), sizes=(n,), tau=(tau,), tau_syn=(0.0,), transfer="relu", threshold=(0.0,),
                         J=((J0,),), J0=(I,), M0=1.0, conn="all", K=n, kappa=J1 / J0, balanced=False, dt=dt)


def bump_shape(rates, angles=None):
    """ Fit A [cos(theta - psi) - cos theta_c]_+ to a ring of rates (..., N): psi from the first Fourier mode,
    then A and A cos theta_c by least squares on the active neurons. Returns (theta_c, A, psi) arrays;
    theta_c is nan where fewer than 3 neurons are active or where all of them are. """
    r = np.asarray(rates, dtype=np.float64)
    n = r.shape[-1]
    th = np.arange(n) * 2 * np.pi / n if angles is None else np.asarray(angles)
    flat = r.reshape(-1, n)
    out = np.full((len(flat), 3), np.nan)
    for k, row in enumerate(flat):
        psi = np.angle(np.sum(row * np.exp(1j * th)))
        on = row > 1e-6 * max(row.max(), 1e-30)
        out[k, 2] = psi
        if 3 <= on.sum() < n:
            X = np.stack([np.cos(th[on] - psi), -np.ones(on.sum())], 1)
            (A, c), *_ = np.linalg.lstsq(X, row[on], rcond=None)
            out[k, :2] = np.arccos(np.clip(c / A, -1, 1)), A
    return tuple(out[:, i].reshape(r.shape[:-1]) for i in range(3))


# -----------------------------------------------------------------------------
# theory: fixed points of a two-population all-to-all (mean-field exact) rate network


def ei_fixed_points(J, I, transfer="sigmoid", tau=(0.01, 0.005), n_grid=20001):
    """ Fixed points of r_A = phi(sum_B J_AB r_B + I_A) for two populations (E, I) with all-to-all couplings (every
    neuron of a population is then identical, so these are the network's fixed points). For each r_E, r_I solves
    its own equation by bisection (phi increasing, J_II <= 0: one root); the roots in r_E of
    F(r_E) = phi(J_EE r_E + J_EI r_I(r_E) + I_E) - r_E are then refined by bisection. Stability from the eigenvalues
    of the Jacobian of tau_A dr_A/dt = -r_A + phi(...): (-1 + phi'(x_A) J_AB) / tau_A.
    Returns a list of (r_E, r_I, stable). Transfer functions with values in [0, 1] (sigmoid, erf) only. """
    if transfer not in ("sigmoid", "erf"):
        raise ValueError(f"ei_fixed_points: transfer must be 'sigmoid' or 'erf' (values in [0, 1]), got {transfer!r}")
    phi = TRANSFERS[transfer]
    erf = np.vectorize(math.erf)
    f = (lambda x: 1 / (1 + np.exp(-x))) if transfer == "sigmoid" else (lambda x: 0.5 * (1 + erf(x / math.sqrt(2))))
    J, I = np.asarray(J, float), np.asarray(I, float)

    def r_I_of(rE):  # vectorised bisection on [0, 1]
        lo, hi = np.zeros_like(rE), np.ones_like(rE)
        for _ in range(42):
            mid = 0.5 * (lo + hi)
            up = f(J[1, 0] * rE + J[1, 1] * mid + I[1]) > mid
            lo, hi = np.where(up, mid, lo), np.where(up, hi, mid)
        return 0.5 * (lo + hi)

    F = lambda rE: f(J[0, 0] * rE + J[0, 1] * r_I_of(rE) + I[0]) - rE
    g = np.linspace(0, 1, n_grid)
    pos = F(g) > 0
    i = np.nonzero(pos[:-1] != pos[1:])[0]
    lo, hi, lo_pos = g[i], g[i + 1], pos[i]  # every bracketing interval, refined together
    for _ in range(36):
        mid = 0.5 * (lo + hi)
        same = (F(mid) > 0) == lo_pos
        lo, hi = np.where(same, mid, lo), np.where(same, hi, mid)
    out = []
    for rE in 0.5 * (lo + hi):
        rE = float(rE)
        rI = float(r_I_of(np.array([rE]))[0])
        x = torch.tensor([J[0] @ [rE, rI] + I[0], J[1] @ [rE, rI] + I[1]], dtype=torch.float64, requires_grad=True)
        dphi = torch.autograd.grad(phi(x).sum(), x)[0].numpy()  # phi'(x_A)
        Jac = (-np.eye(2) + dphi[:, None] * J) / np.asarray(tau)[:, None]
        out.append((rE, rI, bool(np.all(np.linalg.eigvals(Jac).real < 0))))
    return out


# --- extensions / speed-ups: the optional compiled kernel --------------------------------------------------------
# Nothing here changes what the model computes. One switch chooses the path, with the same meaning as sparks.py's:
#   Circuit(native=None)   the kernel where a C++ compiler built it, else pure torch (embedding_bag)
#   Circuit(native=True)   require the kernel: RuntimeError (saying why) without it
#   Circuit(native=False)  pure torch always (as does MINILATENT_NATIVE=0 for native=None)
#
# The kernel, circuits_kernel.cpp: out[i, :] = sum over k in row i of table[idx[k], :] (CSR gather-sum, OpenMP over
# rows), the same float32 sums as embedding_bag in another order, ~1 ns a synapse where embedding_bag pays ~3 ns for
# a one-column table. kernels.py compiles it on first use (the system C++ compiler) and caches it. Both files are
# looked for beside this one: the package has them; this file copied alone runs pure torch and says so once.

_NATIVE = {"fn": None, "tried": False, "error": "not tried"}
# the parameters of circuits_kernel.cpp's extern "C" functions, in order; the kernel is called by these names
_GATHER_ARGS = "idx offsets: ptr; n_rows nnz: i64; table: ptr; B: i64; out: ptr; n_threads: int"
_WIDTHS = ("i32", "u16")                   # gather_sum_i32, gather_sum_u16: int32 or uint16 indices


def native_gather_sum(kernel, idx, offsets, table, n_rows):
    """ The compiled C @ table for one sparse block: (n_rows, B) float32 sums over each row's CSR indices idx
    (int16 read as uint16, or int32) and offsets (int32); table (N_pre, B) float32, contiguous. """
    out = torch.empty(n_rows, table.shape[1])
    kernel["u16" if idx.dtype == torch.int16 else "i32"](idx=idx, offsets=offsets, n_rows=n_rows, nnz=idx.numel(),
                                                         table=table, B=table.shape[1], out=out,
                                                         n_threads=torch.get_num_threads())
    return out


def native_kernel():
    """ The compiled gather-sums {'i32': kernel, 'u16': kernel}, or None (MINILATENT_NATIVE=0, no kernels.py and
    circuits_kernel.cpp beside this file, no compiler, a failed build: _NATIVE['error'] says why) """
    if not _NATIVE["tried"]:
        _NATIVE["tried"] = True
        lib, _NATIVE["error"] = _compiled("circuits_kernel.cpp", {f"gather_sum_{w}": _GATHER_ARGS for w in _WIDTHS})
        _NATIVE["fn"] = None if lib is None else {w: lib[f"gather_sum_{w}"] for w in _WIDTHS}
    return _NATIVE["fn"]


def _compiled(cpp, signatures):
    """ (kernels, None) or (None, why not): the C functions of `cpp` through the builder kernels.py, both beside this
    file; the builder is loaded by its path, not imported (a model file imports no part of the package) """
    if os.environ.get("MINILATENT_NATIVE", "1") == "0":
        return None, "disabled by MINILATENT_NATIVE=0"
    here, me = os.path.split(os.path.abspath(globals().get("__file__", "circuits.py")))  # pasted into a notebook: cwd
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
