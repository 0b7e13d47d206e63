""" LFADS, the full model: inferred inputs (controller, AR(1) prior), other likelihoods, several sessions. """
import math

import numpy as np
import pytest
import torch

from conftest import small_cfg
from minilatent import synthetic, datafiles, metrics
from minilatent.lfads import (LFADS, LFADSConfig, GaussianLikelihood, GammaLikelihood, ZeroInflatedGammaLikelihood,
                              check_sessions)
from minilatent.trainer import Trainer, TrainerConfig


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


def test_make_lorenz_sessions_share_latents_but_not_neurons():
    s = synthetic.make_lorenz_sessions(neurons=(4, 6), n_conditions=3, trials_per_condition=2, n_valid_per_condition=1,
                                       n_bins=15, seed=2)
    np.testing.assert_array_equal(s[0]["train_latents"], s[1]["train_latents"])
    assert s[0]["train_encod_data"].shape[2] == 4 and s[1]["train_encod_data"].shape[2] == 6
    for d in s:   # the truth is exp(W z + b) of that session's own read-out
        W = d["readout_weights"]
        np.testing.assert_allclose(np.log(metrics.true_rates(d, "train")), d["train_latents"] @ W + math.log(0.05),
                                   rtol=1e-4, atol=1e-4)


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


# -----------------------------------------------------------------------------
# data helpers


def test_pulse_timing_accuracy_scores_peaks_and_chance():
    rng = np.random.default_rng(0)
    B, T = 200, 60
    t_true = rng.integers(15, 45, size=B)
    true = np.zeros((B, T, 1)); true[np.arange(B), t_true, 0] = 1.0
    u = rng.normal(scale=0.1, size=(B, T, 2)) + 0.5                   # a common offset that must not matter
    shift = rng.integers(-2, 3, size=B)
    u[np.arange(B), t_true + shift, 0] += 3.0
    acc, chance = metrics.pulse_timing_accuracy(u, true, window=3)
    assert acc == 1.0 and chance < 0.35
    acc1, _ = metrics.pulse_timing_accuracy(u, true, window=1)
    assert acc1 == pytest.approx(np.mean(np.abs(shift) <= 1))
    with pytest.raises(ValueError, match="same trials and bins"):
        metrics.pulse_timing_accuracy(u[:, :10], true)


def test_gaussian_lorenz_is_signed_continuous_and_loads_back(tmp_path):
    d = synthetic.make_lorenz_gaussian(n_channels=5, n_conditions=4, trials_per_condition=3, n_valid_per_condition=1,
                                       n_bins=20, noise_std=0.3, seed=0)
    x, mean = d["train_encod_data"], metrics.true_rates(d, "train")
    assert (x < 0).any() and not np.array_equal(x, np.round(x))
    assert np.std(x - mean) == pytest.approx(0.3, rel=0.1)
    np.testing.assert_allclose(mean, d["train_latents"] @ d["readout_weights"], rtol=1e-5, atol=1e-5)
    p = tmp_path / "g.h5"
    datafiles.save_h5(p, d)
    with pytest.raises(ValueError, match=">= 0"):
        datafiles.load_h5(p)
    back = datafiles.load_h5(p, counts=False, nonnegative=False)
    np.testing.assert_array_equal(back["train_encod_data"], x)


def test_copied_lfads_trains_two_sessions_with_a_controller_and_zig(copied_model):
    copied_model("lfads.py", """
        import numpy as np, torch
        import lfads
        torch.manual_seed(0)
        cfg = lfads.LFADSConfig(session_neurons=(4, 7), read_in_dim=3, fac_dim=3, gen_dim=8, ic_enc_dim=8, ic_dim=4,
                                co_dim=1, ci_enc_dim=4, con_dim=4, recon="zig", zig_loc=0.1)
        m = lfads.LFADS(cfg)
        m.init_pcr([np.random.rand(5, 10, 4), np.random.rand(5, 10, 7)])
        xs = [torch.where(torch.rand(6, 10, n) < 0.5, torch.zeros(6, 10, n), torch.rand(6, 10, n) + 0.2) for n in (4, 7)]
        loss = sum(m.compute_losses((x, x), session=s)["loss"] for s, x in enumerate(xs))
        loss.backward()
        assert torch.isfinite(loss)
        """)


def test_plot_inferred_input_frame_draws_and_rejects_bad_bins():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from minilatent import widgets
    rng = np.random.default_rng(0)
    u, pulse = rng.normal(size=(20, 1)), np.zeros((20, 1))
    pulse[7] = 1.0
    fig = widgets.plot_inferred_input_frame(10, u, pulse, rng.normal(size=(20, 8)), rates=rng.random((20, 5)),
                                            true_rates=rng.random((20, 5)), spikes=rng.poisson(1.0, (20, 5)),
                                            co_stds=np.full((20, 1), 0.1))
    assert len(fig.axes) == 3
    line = fig.axes[0].lines[0]
    np.testing.assert_array_equal(line.get_ydata(), u[:11, 0])        # drawn up to bin t only
    plt.close(fig)
    with pytest.raises(ValueError, match="outside the trial's 20 bins"):
        widgets.plot_inferred_input_frame(20, u)
