import math

import numpy as np
import pytest
import torch

from conftest import counts, small_cfg
from minilatent.lfads import LFADS, LFADSConfig, PoissonLikelihood


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
