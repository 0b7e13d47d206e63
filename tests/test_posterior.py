""" The fast posterior average (encoders once per trial, samples batched) against the slow path it replaces:
every sample re-running the whole model, as forward(x.repeat(S), sample=True) does. """
import numpy as np
import pytest
import torch

from conftest import counts, small_cfg
from minilatent.lfads import LFADS


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
