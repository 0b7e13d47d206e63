""" Fidelity fixes after comparing LFADS equation by equation with lfads-torch (issue 11, item 6). """
import functools

import numpy as np
import torch

import conftest
from minilatent.lfads import LFADS


small_cfg = functools.partial(conftest.small_cfg, co_dim=2)     # with a controller unless told otherwise


def test_analytic_kl_co_matches_monte_carlo_average():
    # the closed form against the Monte-Carlo KL (log q - log p on samples of q), averaged over many samples
    torch.manual_seed(0)
    m = LFADS(small_cfg(co_prior_tau=3.0, co_prior_nvar=0.2))
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
    m = LFADS(small_cfg(co_dim=3))
    x = torch.poisson(torch.full((8, 20, 6), 0.5))
    m.eval()
    with torch.no_grad():
        losses = m.compute_losses((x, x))
        out = m(x)
        at_mean = m.kl_co(out["co_means"], out["co_stds"], out["gen_inputs"]).item()
    assert losses["kl_co"].item() > 0
    assert at_mean < 0 < losses["kl_co"].item()       # the old figure: log q(mean) - log p(mean), not a KL
