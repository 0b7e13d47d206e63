""" LFADS: the model, its losses and likelihoods, the controller, several sessions, posterior averaging. """
import functools
import math

import numpy as np
import pytest
import torch

from minilatent import synthetic, datafiles, metrics
from minilatent.lfads import (LFADS, LFADSConfig, PoissonLikelihood, GaussianLikelihood, GammaLikelihood,
                              ZeroInflatedGammaLikelihood, check_sessions)
from minilatent.trainer import Trainer, TrainerConfig

import conftest
from conftest import counts, small_cfg


@pytest.mark.parametrize("co_dim,ext", [(0, 0), (2, 0), (0, 3), (2, 3)])
def test_forward_shapes_and_every_parameter_gets_gradient(co_dim, ext):
    torch.manual_seed(0)
    cfg = small_cfg(co_dim=co_dim, ext_input_dim=ext)
    m = LFADS(cfg)
    x = counts()
    e = torch.randn(5, 12, ext) if ext else None
    out = m(x, ext_input=e)
    assert out["params"].shape == (5, 12, 6)
    assert out["factors"].shape == (5, 12, 3)
    assert out["gen_states"].shape == (5, 12, 10)
    assert out["ic_mean"].shape == out["ic_std"].shape == (5, 4)
    assert out["gen_init"].shape == (5, 10)
    if co_dim:
        for k in ("co_means", "co_stds", "gen_inputs"):
            assert out[k].shape == (5, 12, co_dim)
        assert out["con_states"].shape == (5, 12, 6)
    batch = (x, x, e) if ext else (x, x)
    m.compute_losses(batch)["loss"].backward()
    for name, p in m.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_factor_rows_have_unit_norm_and_states_stay_bounded():
    torch.manual_seed(0)
    m = LFADS(small_cfg(cell_clip=5.0))
    with torch.no_grad():
        m.ic_to_g0.weight.mul_(100.0)  # push g0 far out: it must be clamped
    out = m(counts() * 10)
    w = m.fac.weight / m.fac.weight.norm(dim=1, keepdim=True)
    assert torch.allclose(w.norm(dim=1), torch.ones(3))
    assert out["gen_init"].abs().max() <= 5.0
    assert out["gen_states"].abs().max() <= 5.0


@pytest.mark.parametrize("co_dim", [0, 2])
def test_forward_prediction_runs_the_generator_past_the_data(co_dim):
    torch.manual_seed(0)
    m = LFADS(small_cfg(co_dim=co_dim)).double().eval()
    x = counts(T=10).double()
    fit, pred = m(x), m(x, n_steps=15)
    assert pred["params"].shape == (5, 15, 6)
    # predicting further changes nothing inside the data: the first 10 steps are the fit itself
    for k in ("gen_states", "factors", "params"):
        torch.testing.assert_close(pred[k][:, :10], fit[k], rtol=0, atol=1e-12)
    # past the data the generator keeps running from its last state; without a controller it has no input, so
    # each step is the GRU cell on a zero input (a plain loop), with the read-out of the factors
    g = pred["gen_states"]
    if co_dim == 0:
        gen = m.gen
        for t in range(10, 15):
            g_ref = torch.gru_cell(torch.zeros(5, 1, dtype=torch.float64), g[:, t - 1], gen.weight_ih_l0,
                                   gen.weight_hh_l0, gen.bias_ih_l0, gen.bias_hh_l0)
            torch.testing.assert_close(g[:, t], g_ref, rtol=0, atol=1e-12)
    else:   # the controller sees no encoder input past the data: its output is the same for any spikes there
        x2 = torch.cat([x, 3 * counts(T=5, seed=1).double()], 1)       # 5 more bins of (different) data
        assert not torch.allclose(m(x2)["gen_inputs"][:, 10:], pred["gen_inputs"][:, 10:])
    torch.testing.assert_close(pred["factors"][:, 10:], m.factors(g[:, 10:]), rtol=0, atol=1e-12)
    rates_past = pred["params"][:, 10:]
    assert torch.isfinite(rates_past).all() and not torch.allclose(rates_past[:, 0], rates_past[:, -1])


def test_kl_ic_matches_monte_carlo():
    torch.manual_seed(0)
    m = LFADS(small_cfg(ic_prior_var=0.1))
    with torch.no_grad():
        m.ic_prior_mean.copy_(torch.tensor([0.3, -0.2, 0.0, 0.1]))
    mean = torch.tensor([[0.5, -1.0, 0.2, 0.0], [0.0, 0.3, -0.4, 1.0]], dtype=torch.float64)
    std = torch.tensor([[0.2, 0.5, 0.3, 0.1], [0.4, 0.3, 0.2, 0.6]], dtype=torch.float64)
    analytic = m.double().kl_ic(mean, std).item()
    q = torch.distributions.Normal(mean, std)
    p = torch.distributions.Normal(m.ic_prior_mean.detach().double(), math.sqrt(0.1))
    z = q.sample((400_000,))
    mc = (q.log_prob(z) - p.log_prob(z)).sum(-1).mean().item()
    assert analytic == pytest.approx(mc, rel=5e-3)


def test_poisson_nll_matches_direct_formula():
    log_rate = torch.tensor([[[-1.0, 0.5, 2.0]]])
    x = torch.tensor([[[0.0, 3.0, 7.0]]])
    got = PoissonLikelihood.nll(log_rate, x)
    for i in range(3):
        lam, k = math.exp(log_rate[0, 0, i].item()), int(x[0, 0, i].item())
        direct = -math.log(lam ** k * math.exp(-lam) / math.factorial(k))
        assert got[0, 0, i].item() == pytest.approx(direct, rel=1e-6)


def test_coordinated_dropout_passes_gradient_only_through_hidden_entries():
    torch.manual_seed(0)
    m = LFADS(small_cfg(dropout=0.0, cd_rate=0.4))
    m.train()
    x = torch.ones(4, 12, 6)  # all ones, so the model input reveals the mask: 0 = hidden, 1/(1-cd) = kept
    seen = {}
    def grab_input(mod, args):
        seen["x_in"] = args[0].clone()

    def grab_params(mod, inp, out):
        out.retain_grad()
        seen["params"] = out
    m.register_forward_pre_hook(grab_input)
    m.readout.register_forward_hook(grab_params)
    losses = m.compute_losses((x, x))
    losses["recon"].backward()
    grad = seen["params"].grad
    kept = seen["x_in"] > 0
    assert torch.allclose(seen["x_in"][kept], torch.tensor(1 / 0.6))
    assert 0.45 < kept.float().mean() < 0.75
    assert (grad[kept] == 0).all()
    assert (grad[~kept] != 0).all()
    # the reported loss still counts every entry
    m.eval()
    assert losses["recon"].item() == pytest.approx(
        PoissonLikelihood.nll(seen["params"].detach(), x).mean().item(), rel=1e-6)


def test_recon_heldin_is_the_direct_poisson_nll_of_the_held_in_neurons_over_the_observed_bins():
    # held-out neurons (recon wider than encod) and forward bins (recon longer): recon_heldin, the validation score
    # the command line keeps its epoch by, is the mean Poisson NLL of the encoded neurons over the encoded bins only;
    # without held-out neurons there is no such entry
    torch.manual_seed(0)
    m = LFADS(small_cfg(n_recon=9)).eval()
    encod, recon = counts(B=3, T=10, N=6), counts(B=3, T=13, N=9)
    recon[:, :10, :6] = encod
    with torch.no_grad():
        losses = m.compute_losses((encod, recon))
        log_rate = m(encod, n_steps=13)["params"][:, :10, :6].double()
    lam, k = log_rate.exp().numpy(), recon[:, :10, :6].double().numpy()
    direct = np.mean(lam - k * np.log(lam) + np.vectorize(math.lgamma)(k + 1))
    assert losses["recon_heldin"].item() == pytest.approx(direct, rel=1e-5)
    assert losses["recon"].item() != pytest.approx(direct, rel=1e-3)      # the held-out neurons and forward bins differ
    assert "recon_heldin" not in LFADS(small_cfg()).eval().compute_losses((encod, encod))


def test_coordinated_dropout_is_off_at_inference():
    torch.manual_seed(0)
    m = LFADS(small_cfg(cd_rate=0.5)).eval()
    x = counts()
    a, b = m.compute_losses((x, x))["loss"], m.compute_losses((x, x))["loss"]
    assert a.item() == b.item()


def test_ar1_prior_log_density_matches_direct_computation():
    torch.manual_seed(0)
    m = LFADS(small_cfg(co_dim=2, co_prior_tau=7.0, co_prior_nvar=0.2)).double()
    u = torch.randn(3, 9, 2, dtype=torch.float64)
    got = m.ar1_log_prior(u)
    a = math.exp(-1 / math.exp(m.co_prior_log_tau[0].item()))  # tau as stored (float32-rounded 7.0)
    nvar = math.exp(m.co_prior_log_nvar[0].item())
    for b in range(3):
        total = 0.0
        for d in range(2):
            def log_normal(x, mean, var):
                return -0.5 * math.log(2 * math.pi * var) - (x - mean) ** 2 / (2 * var)
            total += log_normal(u[b, 0, d].item(), 0.0, nvar / (1 - a * a))
            for t in range(1, 9):
                total += log_normal(u[b, t, d].item(), a * u[b, t - 1, d].item(), nvar)
        assert got[b].item() == pytest.approx(total, rel=1e-10)


def test_posterior_average_averages_rates_not_log_rates():
    torch.manual_seed(0)
    m = LFADS(small_cfg())
    x = counts(B=3)
    res = m.posterior_average(x, n_samples=20)
    # redo by hand: 20 samples of each trial, mean of exp(log rate)
    torch.manual_seed(1)
    m.eval()
    assert res["output_params"].shape == (3, 12, 6)
    assert res["ic_mean"].shape == (3, 4)
    torch.manual_seed(5)
    a = m.posterior_average(x, n_samples=20)["output_params"]
    torch.manual_seed(5)
    xr = x.repeat_interleave(20, 0)
    with torch.no_grad():
        out = m(xr, sample=True)
    rates = torch.exp(out["params"]).reshape(3, 20, 12, 6).mean(1).numpy()
    log_rates = out["params"].reshape(3, 20, 12, 6).mean(1).exp().numpy()
    np.testing.assert_allclose(a, rates, rtol=1e-5)
    assert np.abs(a - log_rates).max() > 1e-4  # Jensen: the two averages differ
    assert m.training is False


@pytest.mark.parametrize("bad,msg", [
    (torch.ones(5, 6), "3 dims"),
    (torch.ones(5, 12, 4), "expects 6 neurons"),
    (torch.ones(5, 12, 6, dtype=torch.int64), "floating-point"),
    (torch.ones(0, 12, 6), "empty"),
    (np.ones((5, 12, 6)), "torch.Tensor"),
])
def test_forward_rejects_bad_input_with_a_clear_message(bad, msg):
    m = LFADS(small_cfg())
    with pytest.raises((ValueError, TypeError), match=msg):
        m(bad)


def test_values_are_checked_where_data_enter_not_in_every_step():
    """ NaN and negative counts: refused by posterior_average, check_data and Trainer.fit (once), while
    forward/compute_losses only check shapes (issue 13: no full-tensor reads in the hot path) """
    from minilatent import Trainer
    m = LFADS(small_cfg())
    x = counts()
    nan, neg = x.clone(), x.clone()
    nan[1, 2, 3], neg[0, 0, 0] = float("nan"), -1
    with pytest.raises(ValueError, match="NaN"):
        m.posterior_average(nan, n_samples=2)
    with pytest.raises(ValueError, match=">= 0"):
        m.check_data((neg, neg))
    with pytest.raises(ValueError, match=">= 0"):
        Trainer(m, (neg, neg), None, max_epochs=1, progress=False).fit()
    m.compute_losses((neg, neg))                                      # no value check in the step itself


def test_config_errors_and_from_config_dict():
    with pytest.raises(ValueError, match="recon"):
        LFADSConfig(recon="binomial")
    with pytest.raises(ValueError, match="cd_rate"):
        LFADSConfig(cd_rate=1.0)
    with pytest.raises(KeyError, match="gen_size"):
        LFADS.from_config_dict({"gen_size": 3})
    m = LFADS.from_config_dict({"n_neurons": 4, "gen_dim": 5})
    assert m.cfg.gen_dim == 5 and m.gen.hidden_size == 5
    with pytest.raises(ValueError, match="ext_input_dim=2"):
        LFADS(small_cfg(ext_input_dim=2))(counts())


# -----------------------------------------------------------------------------
# likelihoods against their textbook densities (written with math.lgamma; no scipy)


def test_gaussian_nll_matches_direct_formula():
    mean = torch.tensor([[[0.5, -1.0, 2.0]]], dtype=torch.float64)
    logvar = torch.tensor([[[-1.0, 0.3, 1.5]]], dtype=torch.float64)
    x = torch.tensor([[[0.2, 1.0, -3.0]]], dtype=torch.float64)
    got = GaussianLikelihood.nll(torch.cat([mean, logvar], -1), x)
    for i in range(3):
        m, v, xi = mean[0, 0, i].item(), math.exp(logvar[0, 0, i].item()), x[0, 0, i].item()
        direct = -math.log(math.exp(-(xi - m) ** 2 / (2 * v)) / math.sqrt(2 * math.pi * v))
        assert got[0, 0, i].item() == pytest.approx(direct, rel=1e-12)
    assert torch.equal(GaussianLikelihood.mean(torch.cat([mean, logvar], -1)), mean)


def gamma_pdf(x, a, b):
    return b ** a * x ** (a - 1) * math.exp(-b * x) / math.gamma(a)


def test_gamma_nll_and_mean_match_direct_formula():
    a = torch.tensor([0.7, 2.0, 5.0], dtype=torch.float64)
    b = torch.tensor([1.5, 0.4, 3.0], dtype=torch.float64)
    x = torch.tensor([0.3, 4.0, 1.2], dtype=torch.float64)
    params = torch.cat([a.log(), b.log()]).view(1, 1, 6)
    got = GammaLikelihood.nll(params, x.view(1, 1, 3))[0, 0]
    for i in range(3):
        assert got[i].item() == pytest.approx(-math.log(gamma_pdf(x[i].item(), a[i].item(), b[i].item())), rel=1e-12)
    np.testing.assert_allclose(GammaLikelihood.mean(params)[0, 0].numpy(), (a / b).numpy(), rtol=1e-12)


def test_zero_inflated_gamma_nll_and_mean_match_direct_formula():
    lik = ZeroInflatedGammaLikelihood(small_cfg(recon="zig", zig_loc=0.1))
    a = torch.tensor([0.7, 2.0, 5.0, 1.3], dtype=torch.float64)
    b = torch.tensor([1.5, 0.4, 3.0, 2.2], dtype=torch.float64)
    q = torch.tensor([0.2, 0.9, 0.5, 0.6], dtype=torch.float64)
    x = torch.tensor([0.0, 4.0, 1.2, 0.0], dtype=torch.float64)
    params = torch.cat([a.log(), b.log(), torch.log(q / (1 - q))]).view(1, 1, 12)
    got = lik.nll(params, x.view(1, 1, 4))[0, 0]
    for i in range(4):
        ai, bi, qi, xi = a[i].item(), b[i].item(), q[i].item(), x[i].item()
        direct = -math.log(1 - qi) if xi == 0 else -math.log(qi * gamma_pdf(xi - 0.1, ai, bi))
        assert got[i].item() == pytest.approx(direct, rel=1e-12)
    np.testing.assert_allclose(lik.mean(params)[0, 0].numpy(), (q * (a / b + 0.1)).numpy(), rtol=1e-12)
    # the mean is the mean of the distribution: check by sampling it
    g = torch.Generator().manual_seed(0)
    n = 400_000
    nz = torch.rand(n, 4, generator=g, dtype=torch.float64) < q
    torch.manual_seed(0)
    samp = torch.where(nz, torch.distributions.Gamma(a, b).sample((n,)) + 0.1, torch.zeros(n, 4, dtype=torch.float64))
    np.testing.assert_allclose(samp.mean(0).numpy(), lik.mean(params)[0, 0].numpy(), rtol=0.01)


@pytest.mark.parametrize("recon", ["gaussian", "gamma", "zig"])
def test_other_likelihoods_train_and_start_at_the_data_moments(recon):
    torch.manual_seed(0)
    m = LFADS(small_cfg(recon=recon, dropout=0.0))
    g = torch.Generator().manual_seed(1)
    # a mean that varies over time (the same in every trial) for the model to learn, with Gamma noise around it
    mu = 2.0 + 1.5 * torch.sin(torch.arange(12.0)[:, None] / 2 + torch.arange(6.0)).expand(8, 12, 6)
    x = torch.distributions.Gamma(torch.full((8, 12, 6), 4.0), 4.0 / mu).sample()
    if recon == "zig":
        x = torch.where(torch.rand(x.shape, generator=g) < 0.3, torch.zeros_like(x), x)
    m.init_readout_bias(x)
    with torch.no_grad():
        m.readout.weight.zero_()                         # the bias alone: the model's mean is the data mean
    mean = m.likelihood.mean(m(x)["params"]).mean((0, 1))
    np.testing.assert_allclose(mean.detach().numpy(), x.mean((0, 1)).numpy(), rtol=1e-4)
    assert m.readout.weight.shape[0] == 6 * m.likelihood.n_params

    def recon():                                          # the posterior-mean fit, no sampling noise
        m.eval()
        with torch.no_grad():
            r = m.compute_losses((x, x))["recon"].item()
        m.train()
        return r
    start = recon()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(60):                                   # it trains: 60 steps learn the time course of the mean
        loss = m.compute_losses((x, x))["loss"]
        assert torch.isfinite(loss)
        opt.zero_grad(); loss.backward(); opt.step()
    assert recon() < start - 0.08 * abs(start), (start, recon())     # measured: 13-20% lower


def test_gamma_rejects_negative_and_zero_data_with_clear_errors():
    m = LFADS(small_cfg(recon="gamma"))
    x = torch.rand(4, 12, 6) + 0.5
    bad = x.clone(); bad[1, 2, 3] = -0.5
    with pytest.raises(ValueError, match="Gamma likelihood needs data > 0.*-0.5"):
        m.check_data((x, bad))                    # the check where data enter (Trainer.fit runs it)
    zero = x.clone(); zero[0, 0, 0] = 0.0
    with pytest.raises(ValueError, match="recon='zig'"):
        m.check_data((x, zero))
    mz = LFADS(small_cfg(recon="zig", zig_loc=0.2))
    with pytest.raises(ValueError, match="zig_loc=0.2"):
        mz.check_data((x, torch.where(x > 1.0, x, torch.full_like(x, 0.1))))
    with pytest.raises(ValueError, match="unknown likelihood"):
        LFADSConfig(recon="gamma2")


# -----------------------------------------------------------------------------
# controller and the AR(1) prior


def test_kl_co_is_log_q_minus_log_p_and_its_average_is_the_analytic_gaussian_process_kl():
    """ The inferred-input posterior is a diagonal Gaussian q over (T, co); the AR(1) prior is a Gaussian
    process with covariance var0 * alpha^|i-j|. Their KL has a closed form; kl_co's Monte-Carlo estimate
    must average to it. """
    torch.manual_seed(0)
    T, co = 6, 2
    m = LFADS(small_cfg(co_dim=co, co_prior_tau=4.0, co_prior_nvar=0.3)).double()
    mean = torch.randn(1, T, co, dtype=torch.float64) * 0.5
    std = torch.rand(1, T, co, dtype=torch.float64) * 0.5 + 0.3
    # one sample: direct log densities
    u = mean + std * torch.randn_like(std)
    direct = (torch.distributions.Normal(mean, std).log_prob(u).sum() - m.ar1_log_prior(u).sum()).item()
    assert m.kl_co(mean, std, u).item() == pytest.approx(direct, rel=1e-12)
    # the expectation: analytic KL between N(mean, diag std^2) and the AR(1) process, per dimension
    analytic = 0.0
    for d in range(co):
        a = math.exp(-1 / math.exp(m.co_prior_log_tau[d].item()))
        nvar = math.exp(m.co_prior_log_nvar[d].item())
        idx = np.arange(T)
        Sp = nvar / (1 - a * a) * a ** np.abs(idx[:, None] - idx[None, :])
        Sq = np.diag(std[0, :, d].numpy() ** 2)
        mu = mean[0, :, d].numpy()
        Pi = np.linalg.inv(Sp)
        analytic += 0.5 * (np.trace(Pi @ Sq) + mu @ Pi @ mu - T + np.linalg.slogdet(Sp)[1] - np.linalg.slogdet(Sq)[1])
    n = 200_000
    us = mean + std * torch.randn(n, T, co, dtype=torch.float64)
    mc = m.kl_co(mean.expand(n, -1, -1), std.expand(n, -1, -1), us).item()
    assert mc == pytest.approx(analytic, rel=0.01)


def reference_controlled_forward(m, x, ext=None):
    """ The controller/generator equations stepped one at a time with GRU cells on concatenated inputs
    (the formulation of the LFADS papers, Sussillo et al. 2016 and Pandarinath et al. 2018, before the input-side
    matmuls were hoisted out of the loop).
    Dropout must be off and sampling off (posterior means). """
    cfg = m.cfg
    B, T, _ = x.shape
    _, h_last = m.ic_enc(x)
    ic_mean = m.ic_post(torch.cat([h_last[0], h_last[1]], -1)).chunk(2, -1)[0]
    g = m.ic_to_g0(ic_mean).clamp(-cfg.cell_clip, cfg.cell_clip)
    seq, _ = m.ci_enc(x)
    fwd, bwd = seq[..., :cfg.ci_enc_dim], seq[..., cfg.ci_enc_dim:]
    L = cfg.ci_lag
    zeros = torch.zeros(B, L, cfg.ci_enc_dim)
    ci = torch.cat([torch.cat([zeros, fwd[:, :T - L]], 1), torch.cat([bwd[:, L:], zeros], 1)], -1)
    w = m.fac.weight / m.fac.weight.norm(dim=1, keepdim=True)
    f = g @ w.T
    c = m.con_h0.expand(B, -1)
    cell = torch.nn.GRUCell(cfg.co_dim + cfg.ext_input_dim, cfg.gen_dim)
    cell.load_state_dict({"weight_ih": m.gen.weight_ih_l0, "weight_hh": m.gen.weight_hh_l0,
                          "bias_ih": m.gen.bias_ih_l0, "bias_hh": m.gen.bias_hh_l0})
    us, fs = [], []
    for t in range(T):
        c = m.con(torch.cat([ci[:, t], f], -1), c)
        u = m.co_post(c)[:, :cfg.co_dim]
        g = cell(torch.cat([u, ext[:, t]], -1) if ext is not None else u, g)
        f = g @ w.T
        us.append(u); fs.append(f)
    return torch.stack(us, 1), torch.stack(fs, 1)


@pytest.mark.parametrize("ext_dim,lag", [(0, 1), (2, 2)])
def test_controller_loop_matches_the_step_by_step_equations(ext_dim, lag):
    torch.manual_seed(0)
    m = LFADS(small_cfg(co_dim=2, ext_input_dim=ext_dim, ci_lag=lag, dropout=0.0)).eval()
    x = torch.poisson(torch.full((3, 10, 6), 1.0))
    ext = torch.randn(3, 10, ext_dim) if ext_dim else None
    with torch.no_grad():
        out = m(x, ext_input=ext)
        u_ref, f_ref = reference_controlled_forward(m, x, ext)
    torch.testing.assert_close(out["gen_inputs"], u_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["co_means"], u_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["factors"], f_ref, rtol=1e-5, atol=1e-6)


def test_inferred_inputs_peak_at_the_true_pulse_times():
    """ A small rate network with one strong pulse per trial at a random bin (notebook 02's data): after a
    short training the posterior-mean inferred input peaks within +-3 bins of the true pulse on most
    held-out trials, far above chance (the score against shuffled pulse times). """
    data = synthetic.make_chaotic_rnn(n_conditions=20, trials_per_condition=10, n_neurons=30, n_bins=50, g=1.5,
                                      input_magnitude=20.0, max_rate=100.0, with_inputs=True, seed=3)
    train, valid = datafiles.lfads_tensors(data, "train"), datafiles.lfads_tensors(data, "valid")
    torch.manual_seed(0)
    m = LFADS(LFADSConfig(n_neurons=30, ic_enc_dim=32, ic_dim=16, gen_dim=32, fac_dim=10, co_dim=1, ci_enc_dim=16,
                          con_dim=16, co_prior_tau=2.0, kl_co_scale=1e-4, kl_ramp_epochs=5, l2_ramp_epochs=5))
    m.init_readout_bias(train[1])
    Trainer(m, train, valid, TrainerConfig(max_epochs=20, batch_size=16, lr=0.03, progress=False)).fit()
    u = m.posterior_average(valid[0], n_samples=0)["co_means"]
    acc, chance = metrics.pulse_timing_accuracy(u, data["valid_inputs"], window=3)
    assert acc > 0.7 and acc > chance + 0.4, (acc, chance)


# -----------------------------------------------------------------------------
# several sessions


def multi_cfg(**kw):
    return small_cfg(session_neurons=(5, 9), read_in_dim=4, **kw)


def test_sessions_of_different_sizes_share_the_dynamics():
    torch.manual_seed(0)
    m = LFADS(multi_cfg(co_dim=1))
    x0, x1 = torch.poisson(torch.ones(4, 12, 5)), torch.poisson(torch.ones(3, 12, 9))
    o0, o1 = m(x0, session=0), m(x1, session=1)
    assert o0["params"].shape == (4, 12, 5) and o1["params"].shape == (3, 12, 9)
    assert o0["factors"].shape == (4, 12, 3) and o1["factors"].shape == (3, 12, 3)
    # one set of encoders, generator, factors; per-session read-in/out only
    per_session = {n for n, _ in m.named_parameters() if n.startswith(("read_in.", "readouts."))}
    assert per_session == {f"{k}.{s}.{w}" for k in ("read_in", "readouts") for s in (0, 1) for w in ("weight", "bias")}
    assert m.read_in[0].weight.shape == (4, 5) and m.readouts[1].weight.shape == (9, 3)
    # a batch of session 1 trains the shared dynamics and its own read-in/out, never session 0's
    m.compute_losses((x1, x1), session=1)["loss"].backward()
    assert m.gen.weight_hh_l0.grad.abs().sum() > 0 and m.ic_enc.gru.weight_ih_l0.grad.abs().sum() > 0
    assert m.read_in[1].weight.grad.abs().sum() > 0 and m.read_in[0].weight.grad is None
    assert m.readouts[0].weight.grad is None
    res = m.posterior_average(x0, n_samples=2, session=0)
    assert res["output_params"].shape == (4, 12, 5) and res["co_means"].shape == (4, 12, 1)


def test_trainer_fits_two_sessions_in_one_run():
    sessions = synthetic.make_lorenz_sessions(neurons=(7, 11), n_conditions=6, trials_per_condition=5,
                                              n_valid_per_condition=1, n_bins=20, seed=0)
    train = [datafiles.lfads_tensors(d, "train") for d in sessions]
    valid = [datafiles.lfads_tensors(d, "valid") for d in sessions]
    assert check_sessions(train) == (7, 11)
    torch.manual_seed(0)
    m = LFADS(small_cfg(session_neurons=(7, 11), read_in_dim=3, fac_dim=3))
    m.init_pcr([metrics.psths(d) for d in sessions])
    for s, tr in enumerate(train):
        m.init_readout_bias(tr[1], session=s)
    before = [m.compute_losses(v, session=s)["recon"].item() for s, v in enumerate(valid)]
    Trainer(m, train, valid, TrainerConfig(max_epochs=4, progress=False, ema_decay=None)).fit()
    m.eval()
    after = [m.compute_losses(v, session=s)["recon"].item() for s, v in enumerate(valid)]
    assert all(a < b for a, b in zip(after, before)), (before, after)


@pytest.mark.parametrize("recon", ["gaussian", "poisson"])
def test_pcr_initialisation_recovers_a_known_shared_mapping(recon):
    """ Sessions X_s = Z A_s + m_s observe the same latents Z through different known maps A_s. After PCR
    the read-ins send every session to the same coordinates, and the read-out maps them back. """
    rng = np.random.default_rng(0)
    C, T, D_ = 8, 10, 3
    Z = rng.normal(size=(C, T, D_))
    A = [rng.normal(size=(D_, n)) for n in (5, 9)]
    if recon == "poisson":   # small modulations around a mean rate: the linearised read-out is then accurate
        X = [2.0 + 0.01 * Z @ a for a in A]
    else:
        X = [Z @ a + rng.normal(size=a.shape[1]) for a in A]
    torch.manual_seed(0)
    m = LFADS(small_cfg(session_neurons=(5, 9), read_in_dim=D_, fac_dim=D_, recon=recon)).double()
    m.init_pcr(X)
    with torch.no_grad():
        z = [m.read_in[s](torch.as_tensor(X[s])) for s in range(2)]
        torch.testing.assert_close(z[0], z[1], rtol=1e-6, atol=1e-6 * float(z[0].abs().max()))
        # the shared coordinates are an invertible affine map of the true Z
        z1 = np.concatenate([z[0].numpy(), np.ones((C, T, 1))], -1)
        coef, *_ = np.linalg.lstsq(z1.reshape(-1, D_ + 1), Z.reshape(-1, D_), rcond=None)
        np.testing.assert_allclose(z1 @ coef, Z, atol=1e-6)
        for s in range(2):
            back = m.likelihood.mean(m.readouts[s](z[s])).numpy()
            tol = 1e-6 if recon == "gaussian" else 1e-3
            np.testing.assert_allclose(back, X[s], rtol=tol, atol=tol)


@pytest.mark.parametrize("call,err,msg", [
    (lambda m, x: m(x[1], session=2), KeyError, "unknown session 2.*0..1"),
    (lambda m, x: m(x[1], session="b"), KeyError, "unknown session 'b'"),
    (lambda m, x: m(x[1]), ValueError, "pass session=k"),
    (lambda m, x: m(x[1], session=0), ValueError, "expects 5 neurons.*got 9"),
    (lambda m, x: m.compute_losses((x[0], x[0]), session=3), KeyError, "unknown session 3"),
    (lambda m, x: m.init_pcr([np.ones((4, 10, 5)), np.ones((4, 11, 9))]), ValueError, "share \\(conditions, time bins\\)"),
    (lambda m, x: m.init_pcr([np.ones((4, 10, 5))]), ValueError, "data for 1 sessions"),
    (lambda m, x: check_sessions([(x[0], x[0]), (torch.ones(2, 8, 9), torch.ones(2, 8, 9))]), ValueError,
     "same number of time bins: session 0 has 12, session 1 has 8"),
])
def test_bad_session_input_gives_clear_errors(call, err, msg):
    m = LFADS(multi_cfg())
    x = (torch.ones(2, 12, 5), torch.ones(2, 12, 9))
    with pytest.raises(err, match=msg):
        call(m, x)


def test_session_config_errors():
    with pytest.raises(ValueError, match="read_in_dim >= 1"):
        LFADSConfig(session_neurons=(5, 9))
    with pytest.raises(ValueError, match="one session only"):
        LFADSConfig(session_neurons=(5, 9), read_in_dim=3, n_recon=7)
    with pytest.raises(KeyError, match="one session"):
        LFADS(small_cfg())(torch.ones(2, 5, 6), session=1)
    with pytest.raises(ValueError, match="several sessions"):
        LFADS(small_cfg()).init_pcr([np.ones((2, 3, 6))])


def test_lfads_predicts_held_out_neurons_it_never_sees():
    # Lorenz neurons share three latents: from 24 held-in neurons LFADS can predict the 6 held-out ones.
    # After a short training the held-out rates beat each neuron's mean (co-bps > 0), below the true rates.
    lorenz = synthetic.make_lorenz(n_conditions=20, trials_per_condition=10, n_valid_per_condition=2, n_bins=50,
                                   base_rate=10.0)
    data = datafiles.split_heldout(lorenz, 6, seed=0)
    train, valid = datafiles.lfads_tensors(data, "train"), datafiles.lfads_tensors(data, "valid")
    torch.manual_seed(0)
    m = LFADS(LFADSConfig(n_neurons=24, n_recon=30, ic_enc_dim=32, gen_dim=32, ic_dim=16, fac_dim=8))
    m.init_readout_bias(train[1])
    Trainer(m, train, valid, TrainerConfig(max_epochs=12, progress=False)).fit()
    rates = m.posterior_average(valid[0], n_samples=5)["output_params"]
    assert rates.shape == valid[1].shape
    got = metrics.co_bps(rates, data["valid_recon_data"], 24)
    ceiling = metrics.co_bps(metrics.true_rates(data, "valid"), data["valid_recon_data"], 24)
    assert 0.1 < got < ceiling                                   # measured: 0.29 after 10 epochs, 0.82 after 25; ceiling 0.98


controlled_cfg = functools.partial(conftest.small_cfg, co_dim=2)     # with a controller unless told otherwise


def test_analytic_kl_co_matches_monte_carlo_average():
    # the closed form against the Monte-Carlo KL (log q - log p on samples of q), averaged over many samples
    torch.manual_seed(0)
    m = LFADS(controlled_cfg(co_prior_tau=3.0, co_prior_nvar=0.2))
    B, T, co = 4, 15, 2
    means = torch.randn(B, T, co, dtype=torch.float64) * 0.5
    stds = torch.rand(B, T, co, dtype=torch.float64) * 0.4 + 0.1
    m = m.double()
    with torch.no_grad():
        exact = m.kl_co_analytic(means, stds).item()
        S = 20000
        u = means + stds * torch.randn(S, B, T, co, dtype=torch.float64)
        log_q = -0.5 * (np.log(2 * np.pi) + 2 * torch.log(stds) + ((u - means) / stds) ** 2)   # (S, B, T, co)
        mc = log_q.sum((2, 3)).mean(1) - m.ar1_log_prior(u.reshape(S * B, T, co)).reshape(S, B).mean(1)
        assert torch.allclose(m.kl_co(means, stds, u[0]), mc[0])   # the same Monte-Carlo form as training uses
    assert abs(mc.mean().item() - exact) < 4 * mc.std().item() / np.sqrt(S)
    assert exact > 0


def test_validation_kl_co_is_a_kl_not_a_density_at_the_mean():
    # eval mode runs the generator at the posterior mean; the reported KL must still be a KL (>= 0). The old
    # Monte-Carlo form evaluated at u = mean gave negative numbers for an untrained model.
    torch.manual_seed(0)
    m = LFADS(controlled_cfg(co_dim=3))
    x = torch.poisson(torch.full((8, 20, 6), 0.5))
    m.eval()
    with torch.no_grad():
        losses = m.compute_losses((x, x))
        out = m(x)
        at_mean = m.kl_co(out["co_means"], out["co_stds"], out["gen_inputs"]).item()
    assert losses["kl_co"].item() > 0
    assert at_mean < 0 < losses["kl_co"].item()       # the old figure: log q(mean) - log p(mean), not a KL


def slow_average(m, x, S, ext=None, n_steps=None):
    """ the reference: the whole model (encoders included) run once per sample, rates averaged """
    m.eval()
    with torch.no_grad():
        out = m(x.repeat_interleave(S, 0), ext_input=None if ext is None else ext.repeat_interleave(S, 0),
                n_steps=n_steps, sample=True)
    B = x.shape[0]
    return {k: out[k].reshape(B, S, *out[k].shape[1:]).mean(1).numpy()
            for k in ("params", "factors", "gen_states", "gen_inputs") if k in out} | \
        {"rates": torch.exp(out["params"]).reshape(B, S, *out["params"].shape[1:]).mean(1).numpy()}


@pytest.mark.parametrize("co_dim,ext", [(0, 0), (2, 0), (0, 2), (1, 2)])
def test_fast_posterior_draws_the_same_samples_as_the_slow_path(co_dim, ext):
    # with one batch and the same seed the two paths consume the random stream in the same order: equal results
    torch.manual_seed(0)
    m = LFADS(small_cfg(co_dim=co_dim, ext_input_dim=ext))
    x = counts(B=4)
    e = torch.randn(4, 15, ext) if ext else None
    torch.manual_seed(3)
    fast = m.posterior_average(x, ext_input=e, n_samples=30, batch_size=4 * 30, n_steps=15)
    torch.manual_seed(3)
    slow = slow_average(m, x, 30, e, n_steps=15)
    np.testing.assert_allclose(fast["output_params"], slow["rates"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(fast["factors"], slow["factors"], rtol=1e-5, atol=1e-6)
    if co_dim:
        np.testing.assert_allclose(fast["gen_inputs"], slow["gen_inputs"], rtol=1e-5, atol=1e-6)
    assert fast["output_params"].shape == (4, 15, 6)


def test_fast_posterior_mean_matches_slow_path_in_distribution():
    # small batches (many batches, different random streams): the two averages are independent Monte-Carlo
    # estimates of the same posterior mean rate; they agree within a few standard errors of the sample mean
    torch.manual_seed(0)
    m = LFADS(small_cfg(ic_post_var_min=2.0))                 # a wide posterior so that the samples differ
    x = counts(B=3)
    S = 3000
    torch.manual_seed(11)
    fast = m.posterior_average(x, n_samples=S, batch_size=500)["output_params"]
    torch.manual_seed(12)
    m.eval()
    with torch.no_grad():
        r = torch.exp(m(x.repeat_interleave(S, 0), sample=True)["params"]).reshape(3, S, 12, 6).double().numpy()
    slow, se = r.mean(1), r.std(1) / np.sqrt(S)
    assert (se > 1e-4).all()                                   # the samples really differ
    z = (fast - slow) / (np.sqrt(2) * se)                       # difference of two independent means
    assert np.abs(z).max() < 5.0
    # the check can fail: the average of log-rates (a plausible wrong implementation) is far outside it
    wrong = np.exp(np.log(r).mean(1))
    assert np.abs((wrong - slow) / (np.sqrt(2) * se)).max() > 8.0


def test_posterior_average_reports_progress_and_restores_training_mode():
    torch.manual_seed(0)
    m = LFADS(small_cfg())
    m.train()
    x = counts(B=7)
    calls = []
    m.posterior_average(x, n_samples=10, batch_size=30, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(3, 7), (6, 7), (7, 7)]                    # 30 rows = 3 trials x 10 samples per batch
    assert m.training


def test_posterior_mean_without_samples_is_deterministic_and_batch_independent():
    torch.manual_seed(0)
    m = LFADS(small_cfg(co_dim=1))
    x = counts(B=6)
    a = m.posterior_average(x, n_samples=0, batch_size=1)
    b = m.posterior_average(x, n_samples=0, batch_size=100)
    m.eval()
    with torch.no_grad():
        ref = torch.exp(m(x, sample=False)["params"]).numpy()
    np.testing.assert_allclose(a["output_params"], ref, rtol=1e-5)
    np.testing.assert_allclose(b["output_params"], ref, rtol=1e-5)


@pytest.mark.parametrize("kw,msg", [(dict(batch_size=0), "batch_size"), (dict(n_samples=-1), "n_samples"),
                                    (dict(ext_input=torch.zeros(5, 12, 2)), "ext_input")])
def test_posterior_average_rejects_bad_arguments(kw, msg):
    m = LFADS(small_cfg())
    with pytest.raises(ValueError, match=msg):
        m.posterior_average(counts(), **kw)
