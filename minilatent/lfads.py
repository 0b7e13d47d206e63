"""
LFADS: Latent Factor Analysis via Dynamical Systems, in one file.

References:
  Sussillo, Jozefowicz, Abbott & Pandarinath (2016) "LFADS - Latent Factor Analysis via Dynamical Systems"
  Pandarinath et al. (2018) "Inferring single-trial neural population dynamics using sequential
    auto-encoders", Nature Methods
  Keshtkaran & Pandarinath (2019) "Enabling hyperparameter optimization in sequential autoencoders
    for spiking neural data" (coordinated dropout)
  lfads-torch (Sedler & Pandarinath 2023), the reference PyTorch implementation
  Sussillo & Barak (2013) "Opening the black box: low-dimensional dynamics in high-dimensional recurrent neural
    networks" (the fixed points of a trained generator: see fixed_points.py and lfads_generator_step here)

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
    KL_co = log q(u) - log p(u) on the sampled u, summed over time and dims, mean over trials (training);
            in eval mode (validation, at the posterior mean) its closed form for a factorised q (kl_co_analytic)
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
expressiveness; trained models are not interchangeable between the two. Like lfads-torch we freeze the
hidden-hidden bias at 0 and start the update/reset gate biases at 1. The state stays bounded without an
explicit clip after the first step: h_t = (1 - z) n + z h_{t-1} is a convex combination of h_{t-1} and n in
(-1, 1), so |h_t| <= max(|h_0|, 1); we clamp h_0 to +-cell_clip (the controller loop needs no per-step clamp).

With a controller the generator cannot run as one fused call (u_t depends on f_{t-1}), so it runs as a Python
loop of torch.gru_cell steps. Everything that does not depend on the loop state is computed for all steps
before the loop: the controller's input-side matmul of ci_t, the generator's of ext_t, the sampling noise.

The file reads top to bottom: the config; the core modules (likelihoods, encoders, the generator); LFADS with
forward and its losses; the checks of the inputs; then, after the `extensions` line, what the core does not need:
other likelihoods (Gamma, zero-inflated Gamma), posterior averaging, several sessions (read-ins, init_pcr), the
generator's step map for fixed-point analysis, and notes on where we differ from lfads-torch.
"""

import math
from dataclasses import dataclass, fields
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
    kl_co_scale: float = 1e-4      # weight of KL_co (1e-4 recovered the input pulses of benchmarks/lfads_chaotic_rnn.py;
                                   # 1e-5 and 1e-3 did not)
    l2_gen_scale: float = 1.0      # weight of the L2 penalty on the generator's recurrent kernel
    l2_con_scale: float = 0.0      # weight of the L2 penalty on the controller's recurrent kernel
    kl_ramp_start: int = 0         # epoch at which the KL weight starts rising from 0
    kl_ramp_epochs: int = 20       # epochs over which it rises to 1 (0: no ramp)
    l2_ramp_start: int = 0         # likewise for the L2 weight
    l2_ramp_epochs: int = 20
    recon: str = "poisson"         # reconstruction likelihood: 'poisson' (spikes), 'gaussian', 'gamma', 'zig'; see LIKELIHOODS
    zig_loc: float = 0.0           # zero-inflated Gamma: nonzero data are > zig_loc and x - zig_loc ~ Gamma (lfads-torch's gamma_loc)
    # several sessions: recordings of different neurons that share the dynamics (encoders, generator, factors)
    session_neurons: tuple = ()    # neurons per session, e.g. (30, 45); () = one session of n_neurons without a read-in
    read_in_dim: int = 0           # with sessions: each is read in by Linear(N_s -> read_in_dim) before the encoders,
                                   # and read out by its own Linear(fac_dim -> N_s); init_pcr sets both from the data

    def __post_init__(self):  # types and ranges of every field: _check_config, with the other checks below
        _check_config(self)

    @property
    def n_out(self) -> int:
        return self.n_recon or self.n_neurons

    @property
    def n_sessions(self) -> int:
        return len(self.session_neurons)


# -----------------------------------------------------------------------------
# reconstruction likelihoods: the read-out produces n_params numbers per channel, laid out as
# [param 1 of every channel, param 2 of every channel, ...] (lfads-torch's layout). Each likelihood
# gives the NLL per entry, the mean (what the output file calls output_params), a read-out bias that
# starts the model at each channel's marginal distribution, and a check of the data it accepts.


class Likelihood:
    """ base class: a likelihood is built from the config (most ignore it) """
    n_params = 1

    def __init__(self, cfg=None):
        pass

    @staticmethod
    def check(x, name):  # any finite data (check_counts already looked for NaN)
        pass


class PoissonLikelihood(Likelihood):
    """ spike counts: x ~ Poisson(exp(log_rate)), one parameter per channel """
    n_params = 1

    @staticmethod
    def nll(params, x):  # params (B, T, N) log-rates; x (B, T, N) counts -> (B, T, N)
        return torch.exp(params) - x * params + torch.lgamma(x + 1)

    @staticmethod
    def mean(params):  # the rate, counts per bin
        return torch.exp(params)

    @staticmethod
    def init_bias(x):  # x (samples, N) -> (N,): each neuron's mean log-rate
        return x.mean(0).clamp_min(1e-3).log()

    @staticmethod
    def check(x, name):
        if (x < 0).any():
            raise ValueError(f"{name}: spike counts must be >= 0, found a minimum of {x.min().item():g}")


class GaussianLikelihood(Likelihood):
    """ continuous data: x ~ N(mean, exp(logvar)); parameters [means, logvars] (lfads-torch's Gaussian) """
    n_params = 2

    @staticmethod
    def nll(params, x):  # params (B, T, 2N) -> (B, T, N); the full NLL, 0.5 log(2 pi) included
        mean, logvar = params.chunk(2, dim=-1)
        logvar = logvar.clamp_min(-13.8)                     # var >= 1e-6, as torch's gaussian_nll_loss
        return 0.5 * (math.log(2 * math.pi) + logvar + (x - mean) ** 2 * torch.exp(-logvar))

    @staticmethod
    def mean(params):
        return params.chunk(2, dim=-1)[0]

    @staticmethod
    def init_bias(x):
        return torch.cat([x.mean(0), x.var(0).clamp_min(1e-6).log()])


LIKELIHOODS = {"poisson": PoissonLikelihood, "gaussian": GaussianLikelihood}   # + gamma, zig (extensions)


# -----------------------------------------------------------------------------
# the modules: GRU initialisation, the bidirectional encoder, LFADS


def _init_gru(gru, gate_bias=1.0):
    """ LFADS-style init: weights ~ N(0, 1/fan_in), reset and update gate biases gate_bias, the candidate's bias 0,
    hidden-hidden bias frozen at 0. One difference from lfads-torch: it draws both weight matrices of its *encoder*
    GRUs with variance 1/(input + hidden size) (its generator and controller with 1/fan_in, as here), so our encoders
    start with somewhat larger weights (1/sqrt(fan_in) each); the effect of this on training is not measured. """
    for name, p in gru.named_parameters():
        if name.startswith("weight_"):                            # weight_ih and weight_hh alike
            nn.init.normal_(p, std=1.0 / math.sqrt(p.shape[1]))
        elif name.startswith("bias_ih"):
            H = p.shape[0] // 3
            with torch.no_grad():
                p.zero_()
                p[: 2 * H] = gate_bias  # reset and update gates start at 1 (slow, remembering units)
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
        self.likelihood = LIKELIHOODS[cfg.recon](cfg)
        self.drop = nn.Dropout(cfg.dropout)
        enc_in = cfg.read_in_dim if cfg.n_sessions else cfg.n_neurons   # what the encoders read
        # IC path
        self.ic_enc = BiGRUEncoder(enc_in, cfg.ic_enc_dim, cfg.cell_clip)
        self.ic_post = nn.Linear(2 * cfg.ic_enc_dim, 2 * cfg.ic_dim)  # -> mean, logvar
        self.ic_prior_mean = nn.Parameter(torch.zeros(cfg.ic_dim))
        self.ic_to_g0 = nn.Linear(cfg.ic_dim, cfg.gen_dim)
        # controller path
        if cfg.co_dim > 0:
            self.ci_enc = BiGRUEncoder(enc_in, cfg.ci_enc_dim, cfg.cell_clip)
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
        if not cfg.n_sessions:
            self.readout = self._make_readout(cfg.n_out)
        else:  # several sessions: their own read-in and read-out around the shared model
            self.read_in = nn.ModuleList([nn.Linear(n, cfg.read_in_dim) for n in cfg.session_neurons])
            for lin in self.read_in:
                nn.init.normal_(lin.weight, std=1.0 / math.sqrt(lin.in_features))
                nn.init.zeros_(lin.bias)
            self.readouts = nn.ModuleList([self._make_readout(n) for n in cfg.session_neurons])

    def _make_readout(self, n_channels):
        lin = nn.Linear(self.cfg.fac_dim, n_channels * self.likelihood.n_params)
        nn.init.normal_(lin.weight, std=1.0 / math.sqrt(self.cfg.fac_dim))
        nn.init.zeros_(lin.bias)
        return lin

    def forward(self, x, ext_input=None, n_steps=None, sample=None, session=None):
        """ x: (B, T, N) counts (or the coordinated-dropout-masked version of them).
        ext_input: (B, T', E) known inputs, T' >= n_steps. n_steps: generator steps (default T; more
        for forward prediction). sample: draw from the posteriors (default: when training).
        session: which session x comes from (models with several sessions only). """
        cfg = self.cfg
        s = self._session(session)
        check_shape(x, "LFADS input" if s is None else f"LFADS input (session {s})",
                    cfg.n_neurons if s is None else cfg.session_neurons[s])
        x = x.to(self.fac.weight.dtype)                          # float64 input: cast to the model's dtype
        B, T, _ = x.shape
        n_steps = T if n_steps is None else _check_steps(n_steps)
        sample = self.training if sample is None else sample
        _check_ext_input(ext_input, cfg.ext_input_dim, B, n_steps)
        if ext_input is not None:
            ext_input = ext_input.to(x.dtype)[:, :n_steps]                # (B, n_steps, E)
        return self._decode(self._encode(x, s), ext_input, n_steps, sample, s)

    def _encode(self, x, s):
        """ The encoders, run once per trial: x (B, T, N) -> IC posterior (mean, std) and, with a controller,
        its input sequence ci (B, T, 2*H_ci) (lagged, before dropout). s: the session index or None. """
        cfg = self.cfg
        if s is not None:
            x = self.read_in[s](x)                              # (B, T, read_in_dim)
        x = self.drop(x)
        # --- initial condition
        _, h_last = self.ic_enc(x)                              # (2, B, H_ic)
        e = torch.cat([h_last[0], h_last[1]], dim=-1)           # (B, 2*H_ic)
        ic_mean, ic_logvar = self.ic_post(self.drop(e)).chunk(2, dim=-1)  # (B, ic_dim) each
        ic_std = torch.sqrt(torch.exp(ic_logvar) + cfg.ic_post_var_min)
        enc = dict(ic_mean=ic_mean, ic_std=ic_std)
        if cfg.co_dim:
            enc["ci"] = self._controller_input(x)              # (B, T, 2*H_ci)
        return enc

    def _decode(self, enc, ext_input, n_steps, sample, s):
        """ Sample the posteriors and run the generator from the encodings (rows may repeat a trial: the
        posterior average samples each trial many times from one encoding). Returns forward's dict. """
        cfg = self.cfg
        ic_mean, ic_std = enc["ic_mean"], enc["ic_std"]
        B = ic_mean.shape[0]
        ic = ic_mean + ic_std * torch.randn_like(ic_std) if sample else ic_mean
        g0 = self.ic_to_g0(ic).clamp(-cfg.cell_clip, cfg.cell_clip)  # (B, G)

        out = dict(ic_mean=ic_mean, ic_std=ic_std, ic_sample=ic, gen_init=g0)
        if cfg.co_dim == 0:
            # --- autonomous (or externally driven) generator: one fused kernel over time
            if cfg.ext_input_dim:
                u = ext_input                                    # (B, n_steps, E)
            else:
                u = ic_mean.new_zeros(B, n_steps, 1)             # no input: a zero column
            g, _ = self.gen(u, g0.unsqueeze(0).contiguous())     # (B, n_steps, G)
            out["gen_states"] = g
            out["factors"] = self.factors(g)                     # (B, n_steps, F)
        else:
            out.update(self._controlled_generator(enc["ci"], g0, ext_input, n_steps, sample))
        out["params"] = self._readout(s)(out["factors"])         # (B, n_steps, N_out * n_params)
        return out

    def factors(self, g):  # g (..., G) -> (..., F), with unit-norm rows of W_fac
        w = self.fac.weight / self.fac.weight.norm(dim=1, keepdim=True)
        return F.linear(self.drop(g), w)

    def _controller_input(self, x):
        """ the controller's encoder: x (B, T, N) -> ci (B, T, 2*H_ci), forward half delayed by ci_lag """
        cfg = self.cfg
        T = x.shape[1]
        ci_seq, _ = self.ci_enc(x)                               # (B, T, 2*H_ci)
        fwd, bwd = ci_seq.split(cfg.ci_enc_dim, dim=-1)
        L = cfg.ci_lag
        if L > 0:  # forward half delayed by L bins, backward half advanced by L
            fwd = F.pad(fwd, (0, 0, L, 0))[:, :T]
            bwd = F.pad(bwd, (0, 0, 0, L))[:, L:]
        return torch.cat([fwd, bwd], dim=-1)

    def _controlled_generator(self, ci, g0, ext_input, n_steps, sample):
        """ The generator with a controller: a Python loop over time (the controller needs f_{t-1}). """
        cfg = self.cfg
        B, T, _ = ci.shape
        if n_steps > T:  # forward prediction: no encoder information past the data
            ci = F.pad(ci, (0, 0, 0, n_steps - T))
        ci = self.drop(ci)                                       # (B, n_steps, 2*H_ci)
        # Everything that does not depend on the loop state is computed for all steps at once: the
        # controller's input-side matmul of ci (+ bias), the generator's of ext_input (+ bias), and the
        # noise of the samples. The loop then only does what the recurrence needs: two GRU cells, the
        # controller output and the factors. No clamps in the loop: a GRU state stays within
        # max(|h_0|, 1) (see the note at the top), and h_0 is clamped.
        H2, co, E = 2 * cfg.ci_enc_dim, cfg.co_dim, cfg.ext_input_dim
        wc_ci, wc_f = self.con.weight_ih.split([H2, cfg.fac_dim], dim=1)
        pre_c = F.linear(ci, wc_ci, self.con.bias_ih)            # (B, n_steps, 3*C)
        wc_hh, bc_hh = self.con.weight_hh, self.con.bias_hh
        wg_u, wg_e = self.gen.weight_ih_l0.split([co, E], dim=1)
        bg_ih, wg_hh, bg_hh = self.gen.bias_ih_l0, self.gen.weight_hh_l0, self.gen.bias_hh_l0
        pre_g = F.linear(ext_input, wg_e, bg_ih) if E else None  # (B, n_steps, 3*G)
        w_co, b_co = self.co_post.weight, self.co_post.bias
        eps = torch.randn(B, n_steps, co, dtype=ci.dtype, device=ci.device) if sample else None
        w_fac = self.fac.weight / self.fac.weight.norm(dim=1, keepdim=True)
        g = g0
        f = F.linear(self.drop(g), w_fac)
        c = self.con_h0.expand(B, -1).clamp(-cfg.cell_clip, cfg.cell_clip)
        gs, fs, cs, cos, us = [], [], [], [], []
        for t in range(n_steps):
            c = torch.gru_cell(self.drop(f), c, wc_f, wc_hh, pre_c[:, t], bc_hh)          # (B, C)
            co_t = F.linear(c, w_co, b_co)                                                # (B, 2*co)
            u = co_t[:, :co]                                                              # posterior mean
            if sample:
                u = u + torch.exp(0.5 * co_t[:, co:]) * eps[:, t]
            g = torch.gru_cell(u, g, wg_u, wg_hh, bg_ih if pre_g is None else pre_g[:, t], bg_hh)  # (B, G)
            f = F.linear(self.drop(g), w_fac)                                             # (B, F)
            gs.append(g); fs.append(f); cs.append(c); cos.append(co_t); us.append(u)
        st = lambda xs: torch.stack(xs, dim=1)
        co_mean, co_logvar = st(cos).chunk(2, dim=-1)            # (B, n_steps, co) each
        return dict(gen_states=st(gs), factors=st(fs), con_states=st(cs),
                    co_means=co_mean, co_stds=torch.exp(0.5 * co_logvar), gen_inputs=st(us))

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

    def kl_co_analytic(self, co_means, co_stds):
        """ KL(q || AR(1) prior) of the inferred inputs in closed form, for q = prod_t N(m_t, s_t^2) (the
        posterior along the posterior-mean path, where the means do not depend on sampled inputs):
          E_q log q = -1/2 sum_t [log 2 pi + 2 log s_t + 1]
          E_q log p = -1/2 [log 2 pi + log v0 + (m_1^2 + s_1^2) / v0]
                      - 1/2 sum_{t>1} [log 2 pi + log nvar + ((m_t - a m_{t-1})^2 + s_t^2 + a^2 s_{t-1}^2) / nvar]
        summed over time and dims, mean over trials. Validation (eval mode, no sampling) uses this. """
        tau = torch.exp(self.co_prior_log_tau)
        nvar = torch.exp(self.co_prior_log_nvar)
        a = torch.exp(-1.0 / tau)                                # (co,)
        var0 = nvar / (1 - a ** 2)
        m, v = co_means, co_stds ** 2                            # (B, T, co)
        e_log_q = -0.5 * (math.log(2 * math.pi) + torch.log(v) + 1.0).sum((1, 2))
        lp0 = -0.5 * (math.log(2 * math.pi) + torch.log(var0) + (m[:, 0] ** 2 + v[:, 0]) / var0).sum(-1)
        sq = (m[:, 1:] - a * m[:, :-1]) ** 2 + v[:, 1:] + a ** 2 * v[:, :-1]
        lpt = -0.5 * (math.log(2 * math.pi) + torch.log(nvar) + sq / nvar).sum((1, 2))
        return (e_log_q - lp0 - lpt).mean()

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

    def compute_losses(self, batch, weights=None, coordinated_dropout=None, session=None):
        """ The loss of one batch and its parts (for logging). weights: {'kl': w, 'l2': w} (default 1).
        session: which session the batch comes from (models with several sessions only). """
        cfg = self.cfg
        weights = weights or {}
        encod, recon, ext = self._unpack(batch)
        name = "recon_data" if session is None else f"recon_data (session {session})"
        check_shape(recon, name, self.n_outputs(session))        # values: checked once by check_data
        encod, recon = encod.to(self.fac.weight.dtype), recon.to(self.fac.weight.dtype)
        if recon.shape[0] != encod.shape[0] or recon.shape[1] < encod.shape[1]:
            raise ValueError(f"recon_data shape {tuple(recon.shape)} does not fit encod_data shape {tuple(encod.shape)}")
        cd = self.training if coordinated_dropout is None else coordinated_dropout
        cd = cd and cfg.cd_rate > 0
        if cd:  # hide a random subset of the input; only hidden entries carry reconstruction gradient
            keep = torch.rand_like(encod) >= cfg.cd_rate
            x_in = encod * keep / (1 - cfg.cd_rate)
        else:
            x_in = encod
        out = self(x_in, ext_input=ext, n_steps=recon.shape[1], session=session)
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
        if nll.shape[2] > encod.shape[2]:   # held-out neurons: the held-in part alone, a validation score that never
            losses["recon_heldin"] = nll[:, :encod.shape[1], :encod.shape[2]].mean()   # reads them (monitor)
        if cfg.co_dim:
            if self.training:   # Monte-Carlo on the sampled inputs, as lfads-torch
                kl_co = self.kl_co(out["co_means"], out["co_stds"], out["gen_inputs"])
            else:               # eval mode runs at the posterior mean: there the MC form is no estimate
                kl_co = self.kl_co_analytic(out["co_means"], out["co_stds"])
            kl = kl + cfg.kl_co_scale * kl_co
            losses["kl_co"] = kl_co
        l2 = self.l2()
        losses["l2"] = l2
        losses["loss"] = recon_loss + weights.get("l2", 1.0) * l2 + weights.get("kl", 1.0) * kl
        return losses

    def training_step(self, batch, weights, session=None):
        return self.compute_losses(batch, weights, session=session)

    def check_data(self, batch, session=None):
        """ The full check of a dataset (encod, recon[, ext_input]) before training (the Trainer calls it once):
        shapes, finite values, and what the likelihood accepts (e.g. counts >= 0 for Poisson). """
        encod, recon, ext = self._unpack(batch)
        sfx = "" if session is None else f" (session {session})"
        check_counts(encod, "encod_data" + sfx, self.n_inputs(session), spikes=False)
        check_counts(recon, "recon_data" + sfx, self.n_outputs(session), spikes=False)
        self.likelihood.check(recon, "recon_data" + sfx)
        if recon.shape[0] != encod.shape[0] or recon.shape[1] < encod.shape[1]:
            raise ValueError(f"recon_data{sfx} shape {tuple(recon.shape)} does not fit encod_data shape {tuple(encod.shape)}")
        if ext is not None:
            check_counts(ext, "ext_input" + sfx, self.cfg.ext_input_dim, spikes=False)
            if ext.shape[0] != encod.shape[0] or ext.shape[1] < recon.shape[1]:
                raise ValueError(f"ext_input{sfx} has shape {tuple(ext.shape)}; expected ({encod.shape[0]}, >= {recon.shape[1]}, "
                                 f"{self.cfg.ext_input_dim})")

    def validation_step(self, batch, weights, session=None):
        return self.compute_losses(batch, weights, coordinated_dropout=False, session=session)

    # -------------------------------------------------------------------------
    # construction, sessions and read-out bias

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

    def init_readout_bias(self, counts, session=None):
        """ Start the read-out at each channel's marginal distribution (Poisson: its mean log-rate; other
        likelihoods: their moments): training then begins from the PSTH-free baseline instead of spending
        epochs learning the firing rates. counts: (B, T, N) tensor (recon_data of the session). """
        readout = self._readout(self._session(session))
        x = counts.reshape(-1, counts.shape[-1]).float()                 # (B*T, N)
        bias = self.likelihood.init_bias(x)                              # (n_params * N,)
        if bias.numel() != readout.bias.numel():
            raise ValueError(f"init_readout_bias: the data have {x.shape[1]} channels, the read-out reconstructs "
                             f"{readout.bias.numel() // self.likelihood.n_params} (pass recon_data)")
        with torch.no_grad():
            readout.bias.copy_(bias)

    def _session(self, session):
        """ the session index to use (None for a one-session model), with a clear error for a bad one """
        S = self.cfg.n_sessions
        if S == 0:
            if session not in (None, 0):
                raise KeyError(f"unknown session {session!r}: this model was built for one session (no session_neurons)")
            return None
        if session is None:
            raise ValueError(f"this model has {S} sessions {self.cfg.session_neurons} (neurons each): pass session=k")
        if isinstance(session, bool) or not isinstance(session, (int, np.integer)) or not 0 <= session < S:
            raise KeyError(f"unknown session {session!r}: this model has sessions 0..{S - 1} "
                           f"with {self.cfg.session_neurons} neurons")
        return int(session)

    def _readout(self, s):
        return self.readout if s is None else self.readouts[s]

    def n_inputs(self, session=None):
        """ neurons/channels the model reads for a session """
        s = self._session(session)
        return self.cfg.n_neurons if s is None else self.cfg.session_neurons[s]

    def n_outputs(self, session=None):
        """ neurons/channels the model reconstructs for a session """
        s = self._session(session)
        return self.cfg.n_out if s is None else self.cfg.session_neurons[s]

    # -------------------------------------------------------------------------
    # extensions, defined as functions below the `extensions` line

    def posterior_average(self, encod, ext_input=None, n_samples=50, batch_size=256, n_steps=None, session=None,
                          progress=None):
        """ rates and latents averaged over posterior samples, dropout off: see posterior_average below """
        return posterior_average(self, encod, ext_input, n_samples, batch_size, n_steps, session, progress)

    def init_pcr(self, session_data):
        """ start every session's read-in and read-out in one shared space: see init_pcr below """
        return init_pcr(self, session_data)


# -----------------------------------------------------------------------------
# checks of the inputs, made where data enter: the config, forward and compute_losses (shapes only: no values
# read, no device sync), check_data (the Trainer calls it once per dataset: shapes and values), posterior_average


def _check_config(cfg):
    """ LFADSConfig's fields: types first (2.5 neurons is not a count), then ranges; session_neurons becomes a tuple """
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if f.type in (int, "int") and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
            raise TypeError(f"LFADSConfig.{f.name} must be an integer, got {v!r}")
        if f.type in (float, "float") and (isinstance(v, bool) or not isinstance(v, (int, float, np.number))
                                           or not math.isfinite(v)):
            raise TypeError(f"LFADSConfig.{f.name} must be a finite number, got {v!r}")
    rules = [(("n_neurons", "ic_enc_dim", "ic_dim", "gen_dim", "fac_dim", "ci_enc_dim", "con_dim"), lambda v: v >= 1, ">= 1"),
             (("n_recon", "ext_input_dim", "co_dim", "ci_lag", "kl_ramp_start", "kl_ramp_epochs", "l2_ramp_start",
               "l2_ramp_epochs", "read_in_dim"), lambda v: v >= 0, ">= 0"),
             (("dropout", "cd_rate"), lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
             (("cell_clip", "ic_post_var_min", "ic_prior_var", "co_prior_tau", "co_prior_nvar"), lambda v: v > 0, "> 0"),
             (("kl_ic_scale", "kl_co_scale", "l2_gen_scale", "l2_con_scale", "zig_loc"), lambda v: v >= 0, ">= 0")]
    for names, ok, what in rules:
        for name in names:
            if not ok(getattr(cfg, name)):
                raise ValueError(f"LFADSConfig.{name} must be {what}, got {getattr(cfg, name)}")
    for n in cfg.session_neurons:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"LFADSConfig.session_neurons must hold integers (neurons per session), got {n!r}")
    cfg.session_neurons = tuple(int(n) for n in cfg.session_neurons)
    if cfg.session_neurons:
        if min(cfg.session_neurons) < 1 or cfg.read_in_dim < 1:
            raise ValueError(f"LFADSConfig: several sessions need read_in_dim >= 1 and neuron counts >= 1, got "
                             f"read_in_dim={cfg.read_in_dim}, session_neurons={cfg.session_neurons}")
        if cfg.n_recon:
            raise ValueError("LFADSConfig: held-out channels (n_recon) are supported for one session only")
    if cfg.n_recon and cfg.n_recon < cfg.n_neurons:
        raise ValueError(f"LFADSConfig.n_recon must be 0 or >= n_neurons={cfg.n_neurons} (the reconstructed "
                         f"channels include the encoded ones), got {cfg.n_recon}")
    if cfg.recon not in LIKELIHOODS:
        raise ValueError(f"LFADSConfig.recon: unknown likelihood {cfg.recon!r}; choose from {sorted(LIKELIHOODS)}")


def check_shape(x, name: str, n_channels: Optional[int] = None):
    """ The cheap check that every forward pass makes: a non-empty floating (B, T, N) tensor with the right N.
    It reads no values (no device sync). """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape (trials, time, neurons), got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"{name}: expected 3 dims (trials, time, neurons), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor (use x.float()), got dtype {x.dtype}")
    if n_channels is not None and x.shape[-1] != n_channels:
        raise ValueError(f"{name}: the model expects {n_channels} neurons/channels, got {x.shape[-1]} (shape {tuple(x.shape)})")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name}: empty ({x.shape[0]} trials, {x.shape[1]} bins)")


def check_counts(x, name: str, n_channels: Optional[int] = None, spikes: bool = True):
    """ The full check where data enter (Trainer.fit via check_data, posterior_average): shape, then values. """
    check_shape(x, name, n_channels)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    if spikes and (x < 0).any():
        raise ValueError(f"{name}: spike counts must be >= 0, found a minimum of {x.min().item():g}")


def _check_ext_input(ext_input, E, B, n_steps, values=False):
    """ known inputs (B, >= n_steps, E) for a model built with ext_input_dim=E > 0, None for E = 0.
    values: also check the values (finite), as where a dataset enters; forward checks the shape only """
    if not E:
        if ext_input is not None:
            raise ValueError("ext_input was given but the model has ext_input_dim=0")
        return
    if ext_input is None:
        raise ValueError(f"LFADS was built with ext_input_dim={E}: pass ext_input of shape (B, T, {E})")
    if values:
        check_counts(ext_input, "ext_input", E, spikes=False)
    else:
        check_shape(ext_input, "ext_input", E)
    if ext_input.shape[0] != B or ext_input.shape[1] < n_steps:
        raise ValueError(f"ext_input has shape {tuple(ext_input.shape)}; expected ({B}, >= {n_steps}, {E})")


def _check_steps(n_steps):
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise ValueError(f"n_steps must be an integer >= 1 (generator steps), got {n_steps!r}")
    return int(n_steps)


# ----- extensions -----------------------------------------------------------------------------------------
# What follows builds on the core above; the core trains a one-session Poisson or Gaussian model without any of it.
# Other likelihoods, posterior averaging (inference), several sessions, the generator as a step map, notes.

# -----------------------------------------------------------------------------
# other likelihoods (recon=...; the read-out gives n_params numbers per channel, laid out as lfads-torch does):
#     'poisson'   log-rate                        spike counts                                    (core)
#     'gaussian'  [mean, log variance]            continuous data (fluorescence, LFP features)    (core)
#     'gamma'     [log alpha, log beta]           positive data; mean alpha / beta
#     'zig'       [log alpha, log beta, logit q]  zero-inflated Gamma (EMG, calcium): 0 w.p. 1 - q, else
#                                                 x - zig_loc ~ Gamma(alpha, beta); mean q (alpha / beta + zig_loc)


def _gamma_nll(log_alpha, log_beta, x):  # -log Gamma(x; shape alpha, rate beta), x > 0
    alpha = torch.exp(log_alpha)
    return -(alpha * log_beta + (alpha - 1) * torch.log(x) - torch.exp(log_beta) * x - torch.lgamma(alpha))


def _gamma_moments(x):  # method of moments on (samples, N) positive data -> log alpha, log beta (N,)
    m, v = x.mean(0).clamp_min(1e-6), x.var(0).clamp_min(1e-6)
    return (m * m / v).log(), (m / v).log()


class GammaLikelihood(Likelihood):
    """ positive data: x ~ Gamma(alpha, beta) (shape, rate); parameters [log alpha, log beta] (lfads-torch's Gamma) """
    n_params = 2

    @staticmethod
    def nll(params, x):
        log_alpha, log_beta = params.chunk(2, dim=-1)
        return _gamma_nll(log_alpha, log_beta, x)

    @staticmethod
    def mean(params):
        log_alpha, log_beta = params.chunk(2, dim=-1)
        return torch.exp(log_alpha - log_beta)

    @staticmethod
    def init_bias(x):
        return torch.cat(_gamma_moments(x.clamp_min(1e-6)))

    @staticmethod
    def check(x, name):
        if (x <= 0).any():
            raise ValueError(f"{name}: the Gamma likelihood needs data > 0, found a minimum of {x.min().item():g}"
                             + (" (use recon='zig' for data with exact zeros)" if (x >= 0).all() else ""))


class ZeroInflatedGammaLikelihood(Likelihood):
    """ zero-inflated Gamma (EMG, calcium): x = 0 with probability 1 - q, else x - loc ~ Gamma(alpha, beta).
    Parameters [log alpha, log beta, logit q]. lfads-torch's ZIG uses the same density, shift (gamma_loc)
    and mean q (alpha/beta + loc); it maps alpha, beta through a sigmoid times a learned per-channel scale,
    where we use exp as in its Gamma likelihood (no extra parameters or penalty). """
    n_params = 3

    def __init__(self, cfg=None):
        self.loc = cfg.zig_loc if cfg is not None else 0.0

    def nll(self, params, x):
        log_alpha, log_beta, logit_q = params.chunk(3, dim=-1)
        zero = x == 0
        shifted = torch.where(zero, torch.ones_like(x), x - self.loc)   # any positive value where x = 0
        nonzero = F.softplus(-logit_q) + _gamma_nll(log_alpha, log_beta, shifted)  # -log q - log Gamma
        return torch.where(zero, F.softplus(logit_q), nonzero)            # -log(1 - q) at zeros

    def mean(self, params):
        log_alpha, log_beta, logit_q = params.chunk(3, dim=-1)
        return torch.sigmoid(logit_q) * (torch.exp(log_alpha - log_beta) + self.loc)

    def init_bias(self, x):
        nz = (x > 0).float()
        q = nz.mean(0).clamp(1e-3, 1 - 1e-3)
        shifted = torch.where(x > 0, x - self.loc, torch.full_like(x, float("nan")))
        m = torch.nanmean(shifted, 0).nan_to_num(1.0).clamp_min(1e-6)
        v = torch.nanmean((shifted - m) ** 2, 0).nan_to_num(1.0).clamp_min(1e-6)
        return torch.cat([(m * m / v).log(), (m / v).log(), torch.log(q / (1 - q))])

    def check(self, x, name):
        bad = (x < 0) | ((x != 0) & (x <= self.loc))
        if bad.any():
            raise ValueError(f"{name}: the zero-inflated Gamma likelihood needs data that are 0 or > zig_loc={self.loc:g}, "
                             f"found {x[bad][0].item():g}")


LIKELIHOODS.update(gamma=GammaLikelihood, zig=ZeroInflatedGammaLikelihood)


# -----------------------------------------------------------------------------
# inference: the posterior average (LFADS.posterior_average calls this)


@torch.no_grad()
def posterior_average(model, encod, ext_input=None, n_samples=50, batch_size=256, n_steps=None, session=None,
                      progress=None):
    """ Sample the posteriors n_samples times with dropout off and average rates and latents.
    The encoders run once per trial (they are deterministic with dropout off); only the sampling and the
    generator run n_samples times, on trials x samples stacked into batches of about batch_size rows
    (256 keeps a GRU's working set in a CPU's cache: we measured ~25% less CPU time per row than at 2048;
    on a GPU use thousands). Memory stays ~ batch_size x n_steps x (gen_dim + channels) floats per batch.
    progress: optional callable(trials_done, trials_total), called after each batch (e.g. a tqdm update).
    Returns numpy arrays named as in lfads-torch's output file (without the split prefix):
    output_params (rates, counts per bin), factors, gen_states, gen_init, ic_mean, ic_std, and with
    a controller co_means, co_stds, gen_inputs, con_states. session: as in forward. """
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 0:
        raise ValueError(f"n_samples must be an integer >= 0 (0: the posterior means), got {n_samples!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if n_steps is not None:
        _check_steps(n_steps)
    was_training = model.training
    model.eval()
    s = model._session(session)
    check_counts(encod, "encod_data", model.n_inputs(session), spikes=False)
    B, T, _ = encod.shape
    n_steps = T if n_steps is None else n_steps
    E = model.cfg.ext_input_dim
    _check_ext_input(ext_input, E, B, n_steps, values=True)
    S = max(n_samples, 1)
    chunk = max(1, batch_size // S)                          # trials per batch: chunk * S rows
    avg = {}
    w = model.gen.weight_hh_l0                                 # inputs follow the model (CPU data, GPU model)
    try:
        for i in range(0, B, chunk):
            x = encod[i:i + chunk].to(w.device, w.dtype)
            b = x.shape[0]
            enc = {k: v.repeat_interleave(S, dim=0) for k, v in model._encode(x, s).items()}  # (b*S, ...)
            er = ext_input[i:i + chunk, :n_steps].to(w.device, w.dtype).repeat_interleave(S, dim=0) if E else None
            out = model._decode(enc, er, n_steps, n_samples > 0, s)
            res = {"output_params": model.likelihood.mean(out["params"]), "factors": out["factors"],
                   "gen_states": out["gen_states"], "gen_init": out["gen_init"],
                   "ic_mean": out["ic_mean"], "ic_std": out["ic_std"]}
            for k in ("co_means", "co_stds", "gen_inputs", "con_states"):
                if k in out:
                    res[k] = out[k]
            for k, v in res.items():
                v = v.reshape(b, S, *v.shape[1:]).mean(1)        # average over samples: (b, ...)
                if k not in avg:                                 # filled in place: no growing lists
                    avg[k] = np.empty((B,) + tuple(v.shape[1:]), dtype=np.float32)
                avg[k][i:i + b] = v.cpu().numpy()
            if progress is not None:
                progress(i + b, B)
    finally:
        model.train(was_training)
    return avg


# -----------------------------------------------------------------------------
# several sessions (session_neurons=(N_1, N_2, ...), read_in_dim=D): recordings of different neurons share the
# encoders, controller, generator and factors; each session s has its own read-in Linear(N_s -> D) in front of
# the encoders and its own read-out Linear(fac_dim -> N_s * n_params). init_pcr starts them all in one space:
# the top principal components of the sessions' condition averages side by side, regressed on each session
# (principal-component regression, PCR). LFADS.init_pcr calls this.


@torch.no_grad()
def init_pcr(model, session_data):
    """ Initialise every session's read-in and read-out so that all sessions start in one shared space,
    as lfads-torch's multi-session recipe does. session_data: one (C, T, N_s) array per session whose
    rows correspond across sessions: typically condition-averaged rates (PSTHs) of the same C conditions.

      1. centre each session (X_s - m_s), concatenate all sessions' channels: X (C*T, sum N_s)
      2. the top read_in_dim principal components of X give shared coordinates Z (C*T, D), each scaled to
         unit variance (the scale of an input to the encoders and of the unit-norm factors)
      3. per session, least squares W_s = argmin ||(X_s - m_s) W - Z|| (minimum-norm solution, via the
         pseudo-inverse, so redundant channels are fine):  read-in(x) = (x - m_s) W_s
      4. read-out: bias = the likelihood's start at each channel's marginal (init_bias); when
         fac_dim == read_in_dim, the mean part maps Z back, pinv(W_s) (Gaussian; for Poisson
         linearised around the mean rate: d log r = dr / m). Other likelihoods keep their weights. """
    cfg = model.cfg
    if not cfg.n_sessions:
        raise ValueError("init_pcr needs a model with several sessions (LFADSConfig.session_neurons)")
    if len(session_data) != cfg.n_sessions:
        raise ValueError(f"init_pcr: got data for {len(session_data)} sessions, the model has {cfg.n_sessions}")
    xs = [torch.as_tensor(np.asarray(x), dtype=torch.float64) for x in session_data]
    for s, x in enumerate(xs):
        if x.dim() != 3 or x.shape[2] != cfg.session_neurons[s]:
            raise ValueError(f"init_pcr: session {s} must be (conditions, time, {cfg.session_neurons[s]}), "
                             f"got shape {tuple(x.shape)}")
        if x.shape[:2] != xs[0].shape[:2]:
            raise ValueError(f"init_pcr: sessions must share (conditions, time bins): session 0 has "
                             f"{tuple(xs[0].shape[:2])}, session {s} has {tuple(x.shape[:2])}")
        if not torch.isfinite(x).all():
            raise ValueError(f"init_pcr: session {s} contains NaN or infinite values")
    D = cfg.read_in_dim
    flat = [x.reshape(-1, x.shape[2]) for x in xs]                    # (C*T, N_s)
    means = [x.mean(0) for x in flat]                                  # (N_s,)
    X = torch.cat([x - m for x, m in zip(flat, means)], dim=1)        # (C*T, sum N_s)
    if D > min(X.shape):
        raise ValueError(f"init_pcr: read_in_dim={D} exceeds the rank available ({min(X.shape)})")
    _, _, Vh = torch.linalg.svd(X, full_matrices=False)
    Z = X @ Vh[:D].T                                                   # (C*T, D) shared coordinates
    Z = Z / Z.std(0).clamp_min(1e-12)                                  # unit variance: the scale of the factors
    for s, (x, m) in enumerate(zip(flat, means)):
        W = torch.linalg.pinv(x - m) @ Z                               # (N_s, D)
        model.read_in[s].weight.copy_(W.T)
        model.read_in[s].bias.copy_(-(m @ W))
        readout = model.readouts[s]
        readout.bias.copy_(model.likelihood.init_bias(x.float()).to(readout.bias.dtype))
        if cfg.fac_dim == D and isinstance(model.likelihood, (PoissonLikelihood, GaussianLikelihood)):
            back = torch.linalg.pinv(W)                                # (D, N_s): Z -> centred data
            if isinstance(model.likelihood, PoissonLikelihood):
                back = back / m.clamp_min(1e-3)
            readout.weight[: x.shape[1]] = back.T.to(readout.weight.dtype)
    return model


def check_sessions(sessions, names=None):
    """ Check data for several sessions before training: a list of (encod, recon[, ext_input]) tensor tuples.
    Every session must have the same number of time bins (the dynamics and their time base are shared);
    raises ValueError naming the session otherwise. Returns the neuron counts (session_neurons). """
    names = names or [f"session {s}" for s in range(len(sessions))]
    if not sessions:
        raise ValueError("no sessions given")
    T = sessions[0][0].shape[1]
    for name, sess in zip(names, sessions):
        encod = sess[0]
        check_counts(encod, f"{name} encod_data", spikes=False)
        if encod.shape[1] != T:
            raise ValueError(f"sessions must have the same number of time bins: {names[0]} has {T}, "
                             f"{name} has {encod.shape[1]}")
    return tuple(int(s[0].shape[2]) for s in sessions)


# -----------------------------------------------------------------------------
# the trained generator as a step map h -> h_next, for a fixed-point finder (fixed_points.py, copyable on its own:
# find_fixed_points(lfads_generator_step(model), starts); Sussillo & Barak 2013)


def lfads_generator_step(model, inputs=None, dtype=torch.float64):
    """ The update of a trained LFADS generator as a function h (B, G) -> h_next (B, G), for find_fixed_points:
    one step of its GRU (the same torch.gru_cell the model runs; no clamp, as in the model, whose states stay within
    +-1 after the first step) with a constant input. inputs: (co_dim + ext_input_dim,) input held constant (the
    inferred input u and known inputs, in the generator's input order); None: zero input, the autonomous generator.
    The weights are copied (detached) in `dtype`, so the step does not track the model's later training. """
    if not isinstance(model, LFADS):
        raise TypeError(f"lfads_generator_step: model must be an LFADS, got {type(model).__name__}")
    gen = model.gen
    w_ih, w_hh = gen.weight_ih_l0.detach().to(dtype), gen.weight_hh_l0.detach().to(dtype)
    b_ih, b_hh = gen.bias_ih_l0.detach().to(dtype), gen.bias_hh_l0.detach().to(dtype)
    n_in = w_ih.shape[1]
    if inputs is None:
        u = torch.zeros(n_in, dtype=dtype, device=w_ih.device)
    else:
        u = torch.as_tensor(inputs, dtype=dtype, device=w_ih.device).reshape(-1)
        if u.shape[0] != model.gen_in_dim or not torch.isfinite(u).all():
            raise ValueError(f"lfads_generator_step: inputs must be {model.gen_in_dim} finite numbers "
                             f"(co_dim + ext_input_dim), got shape {tuple(torch.as_tensor(inputs).shape)}")
    b_in = F.linear(u, w_ih, b_ih)                                       # (3G,): the input side is a constant

    def step(h):  # (B, G) -> (B, G)
        return torch.gru_cell(torch.zeros(h.shape[0], 0, dtype=h.dtype, device=h.device), h,
                              w_ih[:, :0], w_hh, b_in, b_hh)
    return step


def lfads_factors(model, h, dtype=None):
    """ the factors f = W_fac h of generator states h (..., G) (unit-norm rows of W_fac, no dropout) """
    w = model.fac.weight.detach()
    w = w / w.norm(dim=1, keepdim=True)
    return F.linear(h, w.to(h.dtype if dtype is None else dtype))


# -----------------------------------------------------------------------------
# notes: where we differ from lfads-torch, besides the GRU cell (see the module docstring). An equation-by-equation
# comparison; each choice is kept because it trains at least as well on our datasets, or because it keeps the code
# short:
#  - initialisation: ic_post, ic_to_g0 and co_post keep PyTorch's default Linear init (weights and biases
#    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), i.e. weight variance 1/(3 fan_in)); lfads-torch draws N(0, 1/fan_in)
#    weights with zero biases. The factor and read-out layers do follow lfads-torch.
#  - encoder GRUs: input and recurrent weights ~ N(0, 1/fan_in) of their own matrix (1/N and 1/H); lfads-torch's
#    encoder cells use N(0, 1/(N + H)) for both.
#  - external inputs go to the generator without dropout (lfads-torch applies its dropout to ext_input).
#  - g0 = ic_to_g0(ic) is clamped to +-cell_clip before the first step (lfads-torch clamps each state after the
#    step, not g0); with the convex GRU update this bounds every later state as well (see above).
#  - KL/L2 ramps rise linearly with the fractional epoch, i.e. every optimiser step; lfads-torch's ramp is
#    (epoch + 1 - start) / (increase + 1) per whole epoch (a staircase that starts above 0).
#  - L2 covers only the generator's (and controller's) recurrent kernels; lfads-torch can also penalise the
#    encoders' (l2_ic_enc_scale, l2_ci_enc_scale).
#  - the best weights (restore_best in the trainer) are chosen on the total validation loss, evaluated at the
#    posterior mean with the EMA weights; lfads-torch keeps the checkpoint with the lowest smoothed
#    validation reconstruction (valid/recon_smth) and has no EMA.
#  - validation KL of the inferred inputs: analytic at the posterior mean (kl_co_analytic); lfads-torch's is
#    Monte-Carlo on a sample.
