"""
LFADS: Latent Factor Analysis via Dynamical Systems, in one file.

References:
  Sussillo, Jozefowicz, Abbott & Pandarinath (2016) "LFADS - Latent Factor Analysis via Dynamical Systems"
  Pandarinath et al. (2018) "Inferring single-trial neural population dynamics using sequential
    auto-encoders", Nature Methods
  Keshtkaran & Pandarinath (2019) "Enabling hyperparameter optimization in sequential autoencoders
    for spiking neural data" (coordinated dropout)
  lfads-torch (Sedler & Pandarinath 2023), the reference PyTorch implementation

The model explains spike counts x (B trials, T bins, N neurons) as Poisson samples of rates that are
a read-out of a low-dimensional dynamical system (the "generator") started from an inferred initial
condition:

    IC encoder:  e = BiGRU(x)                       final fwd & bwd states, concatenated  (B, 2*H_ic)
    posterior:   q(g0_latent | x) = N(mu, s^2)      mu, log s^2 = Linear(dropout(e)); s^2 += var_min
    generator:   g_0 = Linear(g0_latent),  g_t = GRU(u_t, g_{t-1})
    factors:     f_t = W_fac dropout(g_t)           rows of W_fac have unit L2 norm (no bias)
    rates:       r_t = exp(W_out f_t + b)           counts per bin;   x_t ~ Poisson(r_t)

Without inputs (u_t = 0) the generator is autonomous: everything about a trial is in g_0. When the
dynamics are driven by something unexpected (a perturbation, a cue), a *controller* RNN infers an
input u_t at every step from a second encoder ("controller input", ci) and the previous factors:

    ci_t = [fwd_{t-lag}, bwd_{t+lag}]               a second BiGRU, forward half delayed by ci_lag
    c_t  = GRUCell(dropout([ci_t, f_{t-1}]), c_{t-1});   q(u_t) = N(Linear(c_t))
    prior p(u) = AR(1) per dimension: u_t = a u_{t-1} + eps, a = exp(-1/tau), eps ~ N(0, nvar)
             (u_1 from the stationary N(0, nvar / (1 - a^2)); tau and nvar are learned)

Known external inputs (ext_t) are fed straight to the generator next to u_t.

Loss (an ELBO with weights that ramp up during training, as in lfads-torch):

    loss = recon + w_l2(epoch) * L2 + w_kl(epoch) * (kl_ic_scale * KL_ic + kl_co_scale * KL_co)
    recon = mean over (B, T, N) of the Poisson NLL  r - x log r + log x!
    KL_ic = analytic KL( N(mu, s^2) || N(mu_prior, ic_prior_var) ), summed over dims, mean over trials
    KL_co = log q(u) - log p(u) on the sampled u, summed over time and dims, mean over trials
    L2    = sum_cells scale * 0.5 * ||W_hh||^2 / (total recurrent weights)

Coordinated dropout (cd_rate): each training step hides a random subset of the input entries (the
rest are scaled by 1/(1-cd_rate)) and lets only the *hidden* entries carry gradient of the
reconstruction. The network cannot then learn to copy a spike from input to output: it has to
predict it from the other neurons and times.

Inference: dropout off, sample the posteriors n_samples times, average the *rates* (and latents).

A note on the GRU. LFADS' TF-style "clipped" GRU applies the reset gate to the state *before* the
recurrent matmul, n = tanh(W_in x + W_hn (r * h)), and clamps the state at +-cell_clip. PyTorch's
nn.GRU applies it after: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)). We use nn.GRU everywhere because
the autonomous generator then runs as a single call over the whole sequence: one cuDNN kernel on a GPU,
and on a CPU a loop in C++ with no Python work per step (we measured a hand-written Python loop of the
LFADS cell: no faster on a CPU, and it gives up cuDNN). Both cells are gated RNNs of the same size and
expressiveness; trained models
are not interchangeable between the two. Like lfads-torch we freeze the hidden-hidden bias at 0 and
start the update/reset gate biases at 1. The state stays bounded without an explicit clip after the
first step: h_t = (1 - z) n + z h_{t-1} is a convex combination of h_{t-1} and n in (-1, 1), so
|h_t| <= max(|h_0|, 1); we clamp h_0 (and the loop-path states) to +-cell_clip.
"""

import math
from dataclasses import dataclass, asdict, fields
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# -----------------------------------------------------------------------------


@dataclass
class LFADSConfig:
    # data
    n_neurons: int = 30            # channels the encoders see (encod_data)
    n_recon: int = 0               # channels to reconstruct (recon_data); 0: same as n_neurons. More = held-out neurons
    ext_input_dim: int = 0         # known external inputs fed to the generator; 0: none
    # sizes (lfads-torch's Lorenz/MC_Maze configs use 64-200; smaller trains faster on a CPU)
    ic_enc_dim: int = 64           # IC encoder GRU size, per direction
    ic_dim: int = 64               # dimension of the initial-condition latent
    gen_dim: int = 64              # generator GRU size
    fac_dim: int = 20              # number of factors (the low-dimensional read-out of the generator)
    ci_enc_dim: int = 64           # controller-input encoder GRU size, per direction (only with co_dim > 0)
    con_dim: int = 64              # controller GRU size (only with co_dim > 0)
    co_dim: int = 0                # inferred-input dimension; 0: no controller, an autonomous generator (fast path)
    ci_lag: int = 1                # bins the controller input is delayed by (causality of the forward encoder)
    # regularisation
    dropout: float = 0.1           # dropout on the input, the encodings and the generator states
    cd_rate: float = 0.3           # coordinated dropout: fraction of input entries hidden each step; 0 turns it off
    cell_clip: float = 5.0         # clamp on RNN states (see the GRU note above)
    ic_post_var_min: float = 1e-4  # floor on the IC posterior variance
    ic_prior_var: float = 0.1      # variance of the IC prior N(mu_prior, var); its mean is learned
    co_prior_tau: float = 10.0     # AR(1) prior of inferred inputs: initial time constant, in bins (learned)
    co_prior_nvar: float = 0.1     # AR(1) prior: initial noise variance (learned)
    kl_ic_scale: float = 1e-6      # weight of KL_ic. recon is a mean per entry and KL a sum per trial, so relative to a
                                   # per-trial ELBO this is beta = kl_ic_scale * T * N (0.003 on Lorenz). Larger
                                   # values squeeze the initial condition and slow learning (1e-4: R2 0.89 vs 0.96)
    kl_co_scale: float = 1e-5      # weight of KL_co
    l2_gen_scale: float = 1.0      # weight of the L2 penalty on the generator's recurrent kernel
    l2_con_scale: float = 0.0      # weight of the L2 penalty on the controller's recurrent kernel
    kl_ramp_start: int = 0         # epoch at which the KL weight starts rising from 0
    kl_ramp_epochs: int = 20       # epochs over which it rises to 1 (0: no ramp)
    l2_ramp_start: int = 0         # likewise for the L2 weight
    l2_ramp_epochs: int = 20
    recon: str = "poisson"         # reconstruction likelihood; see LIKELIHOODS

    def __post_init__(self):
        for name in ("n_neurons", "ic_enc_dim", "ic_dim", "gen_dim", "fac_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"LFADSConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("n_recon", "ext_input_dim", "co_dim", "ci_lag"):
            if getattr(self, name) < 0:
                raise ValueError(f"LFADSConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("dropout", "cd_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"LFADSConfig.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.recon not in LIKELIHOODS:
            raise ValueError(f"LFADSConfig.recon: unknown likelihood {self.recon!r}; choose from {sorted(LIKELIHOODS)}")

    @property
    def n_out(self) -> int:
        return self.n_recon or self.n_neurons


# -----------------------------------------------------------------------------
# reconstruction likelihoods: the read-out produces n_params numbers per channel


class PoissonLikelihood:
    """ spike counts: x ~ Poisson(exp(log_rate)), one parameter per channel """
    n_params = 1

    @staticmethod
    def nll(params, x):  # params (B, T, N) log-rates; x (B, T, N) counts -> (B, T, N)
        return torch.exp(params) - x * params + torch.lgamma(x + 1)

    @staticmethod
    def mean(params):  # the rate, counts per bin
        return torch.exp(params)


LIKELIHOODS = {"poisson": PoissonLikelihood}


def check_counts(x, name: str, n_channels: Optional[int] = None, spikes: bool = True):
    """ Validate a (B, T, N) tensor at the model boundary, with errors that say what is wrong. """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape (trials, time, neurons), got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"{name}: expected 3 dims (trials, time, neurons), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor (use x.float()), got dtype {x.dtype}")
    if n_channels is not None and x.shape[-1] != n_channels:
        raise ValueError(f"{name}: the model expects {n_channels} neurons/channels, got {x.shape[-1]} (shape {tuple(x.shape)})")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    if spikes and (x < 0).any():
        raise ValueError(f"{name}: spike counts must be >= 0, found a minimum of {x.min().item():g}")


# -----------------------------------------------------------------------------


def _init_gru(gru, clip_gate_bias=1.0):
    """ LFADS-style init: weights ~ N(0, 1/fan_in), gate biases 1, hidden-hidden bias frozen at 0. """
    for name, p in gru.named_parameters():
        if name.startswith("weight_ih"):
            nn.init.normal_(p, std=1.0 / math.sqrt(p.shape[1]))
        elif name.startswith("weight_hh"):
            nn.init.normal_(p, std=1.0 / math.sqrt(p.shape[1]))
        elif name.startswith("bias_ih"):
            H = p.shape[0] // 3
            with torch.no_grad():
                p.zero_()
                p[: 2 * H] = clip_gate_bias  # reset and update gates start at 1 (slow, remembering units)
        elif name.startswith("bias_hh"):
            nn.init.zeros_(p)
            p.requires_grad_(False)


class BiGRUEncoder(nn.Module):
    """ bidirectional GRU over (B, T, N) with a learned initial state """

    def __init__(self, n_in, hidden, clip):
        super().__init__()
        self.gru = nn.GRU(n_in, hidden, batch_first=True, bidirectional=True)
        _init_gru(self.gru)
        self.h0 = nn.Parameter(torch.zeros(2, 1, hidden))
        self.clip = clip

    def forward(self, x):  # x (B, T, N)
        h0 = self.h0.expand(-1, x.shape[0], -1).clamp(-self.clip, self.clip).contiguous()
        seq, h_last = self.gru(x, h0)  # seq (B, T, 2H), h_last (2, B, H)
        return seq, h_last


class LFADS(nn.Module):
    """ sequential VAE: BiGRU encoders -> IC (+ inferred inputs) -> GRU generator -> factors -> rates """

    def __init__(self, cfg: LFADSConfig):
        super().__init__()
        self.cfg = cfg
        self.likelihood = LIKELIHOODS[cfg.recon]
        self.drop = nn.Dropout(cfg.dropout)
        # IC path
        self.ic_enc = BiGRUEncoder(cfg.n_neurons, cfg.ic_enc_dim, cfg.cell_clip)
        self.ic_post = nn.Linear(2 * cfg.ic_enc_dim, 2 * cfg.ic_dim)  # -> mean, logvar
        self.ic_prior_mean = nn.Parameter(torch.zeros(cfg.ic_dim))
        self.ic_to_g0 = nn.Linear(cfg.ic_dim, cfg.gen_dim)
        # controller path
        if cfg.co_dim > 0:
            self.ci_enc = BiGRUEncoder(cfg.n_neurons, cfg.ci_enc_dim, cfg.cell_clip)
            self.con = nn.GRUCell(2 * cfg.ci_enc_dim + cfg.fac_dim, cfg.con_dim)
            _init_gru(self.con)
            self.con_h0 = nn.Parameter(torch.zeros(1, cfg.con_dim))
            self.co_post = nn.Linear(cfg.con_dim, 2 * cfg.co_dim)  # -> mean, logvar
            self.co_prior_log_tau = nn.Parameter(torch.full((cfg.co_dim,), math.log(cfg.co_prior_tau)))
            self.co_prior_log_nvar = nn.Parameter(torch.full((cfg.co_dim,), math.log(cfg.co_prior_nvar)))
        # generator: nn.GRU so the autonomous case runs as one fused sequence kernel. With no inputs at
        # all it still needs an input size >= 1; we feed a zero column.
        self.gen_in_dim = cfg.co_dim + cfg.ext_input_dim
        self.gen = nn.GRU(max(self.gen_in_dim, 1), cfg.gen_dim, batch_first=True)
        _init_gru(self.gen)
        if self.gen_in_dim == 0:  # the zero column's input weights do nothing: zero and freeze them
            nn.init.zeros_(self.gen.weight_ih_l0)
            self.gen.weight_ih_l0.requires_grad_(False)
        # factors (kernel-normalised, no bias) and read-out
        self.fac = nn.Linear(cfg.gen_dim, cfg.fac_dim, bias=False)
        nn.init.normal_(self.fac.weight, std=1.0 / math.sqrt(cfg.gen_dim))
        self.readout = nn.Linear(cfg.fac_dim, cfg.n_out * self.likelihood.n_params)
        nn.init.normal_(self.readout.weight, std=1.0 / math.sqrt(cfg.fac_dim))
        nn.init.zeros_(self.readout.bias)

    @classmethod
    def from_config_dict(cls, d: dict) -> "LFADS":
        known = {f.name for f in fields(LFADSConfig)}
        unknown = set(d) - known
        if unknown:
            raise KeyError(f"unknown LFADSConfig field(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(LFADSConfig(**d))

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def init_readout_bias(self, counts):
        """ Start the read-out at each neuron's mean log-rate: training then begins from the PSTH-free
        baseline instead of spending epochs learning the firing rates. counts: (B, T, N) tensor. """
        if self.likelihood is not PoissonLikelihood:
            return
        mean = counts.reshape(-1, counts.shape[-1]).float().mean(0).clamp_min(1e-3)  # (N,)
        with torch.no_grad():
            self.readout.bias[: mean.numel()] = mean.log()

    # -------------------------------------------------------------------------

    def factors(self, g):  # g (..., G) -> (..., F), with unit-norm rows of W_fac
        w = self.fac.weight / self.fac.weight.norm(dim=1, keepdim=True)
        return F.linear(self.drop(g), w)

    def forward(self, x, ext_input=None, n_steps=None, sample=None):
        """ x: (B, T, N) counts (or the coordinated-dropout-masked version of them).
        ext_input: (B, T', E) known inputs, T' >= n_steps. n_steps: generator steps (default T; more
        for forward prediction). sample: draw from the posteriors (default: when training). """
        cfg = self.cfg
        check_counts(x, "LFADS input", cfg.n_neurons, spikes=False)
        B, T, _ = x.shape
        n_steps = T if n_steps is None else n_steps
        sample = self.training if sample is None else sample
        if cfg.ext_input_dim:
            if ext_input is None:
                raise ValueError(f"LFADS was built with ext_input_dim={cfg.ext_input_dim}: pass ext_input of shape (B, T, {cfg.ext_input_dim})")
            check_counts(ext_input, "ext_input", cfg.ext_input_dim, spikes=False)
            if ext_input.shape[0] != B or ext_input.shape[1] < n_steps:
                raise ValueError(f"ext_input has shape {tuple(ext_input.shape)}; expected ({B}, >= {n_steps}, {cfg.ext_input_dim})")
            ext_input = ext_input[:, :n_steps]
        elif ext_input is not None:
            raise ValueError("ext_input was given but the model has ext_input_dim=0")

        x = self.drop(x)
        # --- initial condition
        _, h_last = self.ic_enc(x)                              # (2, B, H_ic)
        e = torch.cat([h_last[0], h_last[1]], dim=-1)           # (B, 2*H_ic)
        ic_mean, ic_logvar = self.ic_post(self.drop(e)).chunk(2, dim=-1)  # (B, ic_dim) each
        ic_std = torch.sqrt(torch.exp(ic_logvar) + cfg.ic_post_var_min)
        ic = ic_mean + ic_std * torch.randn_like(ic_std) if sample else ic_mean
        g0 = self.ic_to_g0(ic).clamp(-cfg.cell_clip, cfg.cell_clip)  # (B, G)

        out = dict(ic_mean=ic_mean, ic_std=ic_std, ic_sample=ic, gen_init=g0)
        if cfg.co_dim == 0:
            # --- autonomous (or externally driven) generator: one fused kernel over time
            if cfg.ext_input_dim:
                u = ext_input                                    # (B, n_steps, E)
            else:
                u = x.new_zeros(B, n_steps, 1)                   # no input: a zero column
            g, _ = self.gen(u, g0.unsqueeze(0).contiguous())     # (B, n_steps, G)
            out["gen_states"] = g
            out["factors"] = self.factors(g)                     # (B, n_steps, F)
        else:
            out.update(self._controlled_generator(x, g0, ext_input, n_steps, sample))
        out["params"] = self.readout(out["factors"])             # (B, n_steps, N_out * n_params)
        return out

    def _controlled_generator(self, x, g0, ext_input, n_steps, sample):
        """ The generator with a controller: a Python loop over time (the controller needs f_{t-1}). """
        cfg = self.cfg
        B, T, _ = x.shape
        ci_seq, _ = self.ci_enc(x)                               # (B, T, 2*H_ci)
        fwd, bwd = ci_seq.split(cfg.ci_enc_dim, dim=-1)
        L = cfg.ci_lag
        if L > 0:  # forward half delayed by L bins, backward half advanced by L
            fwd = F.pad(fwd, (0, 0, L, 0))[:, :T]
            bwd = F.pad(bwd, (0, 0, 0, L))[:, L:]
        ci = torch.cat([fwd, bwd], dim=-1)
        if n_steps > T:  # forward prediction: no encoder information past the data
            ci = F.pad(ci, (0, 0, 0, n_steps - T))
        ci = self.drop(ci)                                       # (B, n_steps, 2*H_ci)
        w_ih, w_hh, b_ih, b_hh = self.gen.weight_ih_l0, self.gen.weight_hh_l0, self.gen.bias_ih_l0, self.gen.bias_hh_l0
        w_fac = self.fac.weight / self.fac.weight.norm(dim=1, keepdim=True)
        g = g0
        f = F.linear(self.drop(g), w_fac)
        c = self.con_h0.expand(B, -1)
        gs, fs, cs, means, stds, us = [], [], [], [], [], []
        for t in range(n_steps):
            c = self.con(torch.cat([ci[:, t], self.drop(f)], dim=-1), c).clamp(-cfg.cell_clip, cfg.cell_clip)
            co_mean, co_logvar = self.co_post(c).chunk(2, dim=-1)   # (B, co) each
            co_std = torch.exp(0.5 * co_logvar)
            u = co_mean + co_std * torch.randn_like(co_std) if sample else co_mean
            gen_in = torch.cat([u, ext_input[:, t]], dim=-1) if cfg.ext_input_dim else u
            g = torch.gru_cell(gen_in, g, w_ih, w_hh, b_ih, b_hh).clamp(-cfg.cell_clip, cfg.cell_clip)
            f = F.linear(self.drop(g), w_fac)
            gs.append(g); fs.append(f); cs.append(c); means.append(co_mean); stds.append(co_std); us.append(u)
        st = lambda xs: torch.stack(xs, dim=1)
        return dict(gen_states=st(gs), factors=st(fs), con_states=st(cs),
                    co_means=st(means), co_stds=st(stds), gen_inputs=st(us))

    # -------------------------------------------------------------------------
    # loss terms

    def kl_ic(self, ic_mean, ic_std):
        """ analytic KL(N(mean, std^2) || N(prior_mean, prior_var)), summed over dims, mean over trials """
        pv = self.cfg.ic_prior_var
        var = ic_std ** 2
        kl = 0.5 * (math.log(pv) - torch.log(var) + (var + (ic_mean - self.ic_prior_mean) ** 2) / pv - 1.0)
        return kl.sum(-1).mean()

    def ar1_log_prior(self, u):
        """ log p(u) under the AR(1) prior, per trial: u (B, T, co) -> (B,) """
        tau = torch.exp(self.co_prior_log_tau)
        nvar = torch.exp(self.co_prior_log_nvar)
        alpha = torch.exp(-1.0 / tau)                            # (co,)
        var0 = nvar / (1 - alpha ** 2)                           # stationary variance for the first step
        lp0 = -0.5 * (math.log(2 * math.pi) + torch.log(var0) + u[:, 0] ** 2 / var0)
        resid = u[:, 1:] - alpha * u[:, :-1]
        lpt = -0.5 * (math.log(2 * math.pi) + torch.log(nvar) + resid ** 2 / nvar)
        return lp0.sum(-1) + lpt.sum((1, 2))

    def kl_co(self, co_means, co_stds, u):
        """ Monte-Carlo KL of the inferred inputs: log q(u) - log p(u) on the sample, mean over trials """
        log_q = -0.5 * (math.log(2 * math.pi) + 2 * torch.log(co_stds) + ((u - co_means) / co_stds) ** 2)
        return (log_q.sum((1, 2)) - self.ar1_log_prior(u)).mean()

    def l2(self):
        """ 0.5 ||W_hh||^2 of the generator (and controller), scaled, per recurrent weight """
        terms = [(self.gen.weight_hh_l0, self.cfg.l2_gen_scale)]
        if self.cfg.co_dim:
            terms.append((self.con.weight_hh, self.cfg.l2_con_scale))
        total, size = 0.0, 0
        for w, scale in terms:
            if scale > 0:
                total = total + scale * 0.5 * w.pow(2).sum()
                size += w.numel()
        return total / size if size else torch.zeros((), device=self.gen.weight_hh_l0.device)

    # -------------------------------------------------------------------------
    # the interface the generic Trainer uses

    def weight_schedules(self):
        """ KL and L2 weights as functions of the (fractional) epoch: linear ramps from 0 to 1 """
        def ramp(start, n):
            return lambda epoch: 1.0 if n <= 0 else float(min(max((epoch - start) / n, 0.0), 1.0))
        c = self.cfg
        return {"kl": ramp(c.kl_ramp_start, c.kl_ramp_epochs), "l2": ramp(c.l2_ramp_start, c.l2_ramp_epochs)}

    def _unpack(self, batch):
        """ batch: x, or (encod, recon), or (encod, recon, ext_input) """
        if isinstance(batch, torch.Tensor):
            return batch, batch, None
        if len(batch) == 2:
            return batch[0], batch[1], None
        return batch[0], batch[1], batch[2]

    def compute_losses(self, batch, weights=None, coordinated_dropout=None):
        """ The loss of one batch and its parts (for logging). weights: {'kl': w, 'l2': w} (default 1). """
        cfg = self.cfg
        weights = weights or {}
        encod, recon, ext = self._unpack(batch)
        check_counts(recon, "recon_data", cfg.n_out, spikes=cfg.recon in ("poisson",))
        if recon.shape[0] != encod.shape[0] or recon.shape[1] < encod.shape[1]:
            raise ValueError(f"recon_data shape {tuple(recon.shape)} does not fit encod_data shape {tuple(encod.shape)}")
        cd = self.training if coordinated_dropout is None else coordinated_dropout
        cd = cd and cfg.cd_rate > 0
        if cd:  # hide a random subset of the input; only hidden entries carry reconstruction gradient
            keep = torch.rand_like(encod) >= cfg.cd_rate
            x_in = encod * keep / (1 - cfg.cd_rate)
        else:
            x_in = encod
        out = self(x_in, ext_input=ext, n_steps=recon.shape[1])
        nll = self.likelihood.nll(out["params"], recon)         # (B, T_recon, N_out)
        if cd:
            B, T, N = encod.shape
            seen = nll[:, :T, :N]
            seen = torch.where(keep, seen.detach(), seen)        # gradient only where the input was hidden
            nll = torch.cat([torch.cat([seen, nll[:, :T, N:]], dim=2), nll[:, T:]], dim=1)
        recon_loss = nll.mean()
        kl_ic = self.kl_ic(out["ic_mean"], out["ic_std"])
        kl = cfg.kl_ic_scale * kl_ic
        losses = {"recon": recon_loss, "kl_ic": kl_ic}
        if cfg.co_dim:
            kl_co = self.kl_co(out["co_means"], out["co_stds"], out["gen_inputs"])
            kl = kl + cfg.kl_co_scale * kl_co
            losses["kl_co"] = kl_co
        l2 = self.l2()
        losses["l2"] = l2
        losses["loss"] = recon_loss + weights.get("l2", 1.0) * l2 + weights.get("kl", 1.0) * kl
        return losses

    def training_step(self, batch, weights):
        return self.compute_losses(batch, weights)

    def validation_step(self, batch, weights):
        return self.compute_losses(batch, weights, coordinated_dropout=False)

    # -------------------------------------------------------------------------

    @torch.no_grad()
    def posterior_average(self, encod, ext_input=None, n_samples=50, batch_size=2048, n_steps=None):
        """ Sample the posteriors n_samples times with dropout off and average rates and latents.
        batch_size: trial-samples per forward pass (trials x n_samples are evaluated in chunks of this size).
        Returns numpy arrays named as in lfads-torch's output file (without the split prefix):
        output_params (rates, counts per bin), factors, gen_states, gen_init, ic_mean, ic_std, and with
        a controller co_means, co_stds, gen_inputs, con_states. """
        was_training = self.training
        self.eval()
        check_counts(encod, "encod_data", self.cfg.n_neurons, spikes=False)
        B = encod.shape[0]
        chunk = max(1, batch_size // max(n_samples, 1)) if n_samples > 1 else batch_size
        pieces = {}
        try:
            for i in range(0, B, chunk):
                x = encod[i:i + chunk]
                b = x.shape[0]
                S = max(n_samples, 1)
                xr = x.repeat_interleave(S, dim=0)                  # (b*S, T, N)
                er = ext_input[i:i + chunk].repeat_interleave(S, dim=0) if ext_input is not None else None
                out = self(xr, ext_input=er, n_steps=n_steps, sample=n_samples > 0)
                rates = self.likelihood.mean(out["params"])
                res = {"output_params": rates, "factors": out["factors"], "gen_states": out["gen_states"],
                       "gen_init": out["gen_init"], "ic_mean": out["ic_mean"], "ic_std": out["ic_std"]}
                for k in ("co_means", "co_stds", "gen_inputs", "con_states"):
                    if k in out:
                        res[k] = out[k]
                for k, v in res.items():
                    v = v.reshape(b, S, *v.shape[1:]).mean(1)        # average over samples
                    pieces.setdefault(k, []).append(v.cpu().numpy())
        finally:
            self.train(was_training)
        return {k: np.concatenate(v, axis=0) for k, v in pieces.items()}
