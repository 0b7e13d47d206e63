import math

import numpy as np
import pytest
import torch

from minilatent.circuits import (CircuitConfig, Circuit, STPConfig, TRANSFERS, balance_solution, balance_condition,
                                 mean_field_threshold_linear, stp_steady_state, stp_regular_train, stp_spike_train,
                                 ring_bump, ring_config, bump_shape, ring_cue, pulse, wm_config, wm_fixed_points,
                                 wm_stability, poisson_spikes)


def numpy_reference(net, params, n_steps, setting=0, inputs=None):
    """ the update equations of the module docstring as a float64 NumPy loop over a dense W """
    cfg, dt = net.cfg, net.cfg.dt
    W = net.dense_weights(params, setting).double().numpy()
    ext = net.external_input(params)[setting].double().numpy()
    r, I = np.zeros(net.N), np.zeros(net.N)
    stp = {}
    for k, (a, b) in enumerate(net.stp_pairs):
        stp[k] = [float(params["U"][setting, k]), float(params["tau_f"][setting, k]), float(params["tau_d"][setting, k]),
                  np.full(net.sizes[b], float(params["U"][setting, k])), np.ones(net.sizes[b])]
    out = []
    for i in range(n_steps):
        pre = np.tile(r, (net.N, 1))  # (N post, N pre): the presynaptic factor u x r seen by each post neuron
        for k, (a, b) in enumerate(net.stp_pairs):
            pre[net.slices[a], net.slices[b]] *= stp[k][3] * stp[k][4]
        h = (W * pre).sum(1)
        r_new = np.empty_like(r)
        for a, sl in enumerate(net.slices):
            ts, tau = cfg.tau_syn[a], cfg.tau[a]
            I[sl] = I[sl] * math.exp(-dt / ts) + h[sl] * (1 - math.exp(-dt / ts)) if ts > 0 else h[sl]
            x = torch.tensor(I[sl] + ext[sl] + (0 if inputs is None else inputs[sl]) - cfg.threshold[a])
            target = net.phis[a](x).numpy()
            r_new[sl] = r[sl] * math.exp(-dt / tau) + target * (1 - math.exp(-dt / tau)) if tau > 0 else target
        for k, (a, b) in enumerate(net.stp_pairs):
            U, tf, td, u, x = stp[k]
            rb = r[net.slices[b]]
            u_inf = (U / tf + U * rb) / (1 / tf + U * rb)  # exact step of the linear u equation at constant r
            u = u_inf + (u - u_inf) * np.exp(-dt * (1 / tf + U * rb))
            x_inf = (1 / td) / (1 / td + u * rb)
            stp[k][3], stp[k][4] = u, x_inf + (x - x_inf) * np.exp(-dt * (1 / td + u * rb))
        r = r_new
        out.append(r.copy())
    return np.array(out)


def small_ei(**kw):
    base = dict(sizes=(150, 100), K=(30, 20), tau=(0.02, 0.01), tau_syn=(0.005, 0.0), gain=0.5,
                transfer=("relu", "brunel"), threshold=(0.1, 0.0), stp={("E", "E"): STPConfig(0.2, 0.5, 0.3)})
    base.update(kw)
    return CircuitConfig(**base)


# ---------------------------------------------------------------------------- balanced state


def test_population_rates_match_the_finite_K_mean_field():
    cfg = CircuitConfig(sizes=(4000, 4000), K=500, gain=0.5, M0=0.15, seed=0)
    net = Circuit(cfg)
    out = net.simulate(0.3, record_every=10)
    pr = out["pop_rates"][0].double().numpy()  # (T, 2)
    # converged first: the last 50 ms change the population rates by less than 1e-4 (relative)
    assert np.max(np.abs(pr[-1] - pr[-6]) / pr[-1]) < 1e-4, pr[-6:]
    m, q = mean_field_threshold_linear(cfg.J, cfg.J0, cfg.M0, net.K, net.sizes, cfg.gain)
    np.testing.assert_allclose(pr[-1], m, rtol=0.01)
    # and the mean field is the large-K solution plus an O(1/sqrt K) correction (here ~40% above it)
    m_inf = balance_solution(cfg.J, cfg.J0, cfg.M0, cfg.gain)
    assert np.all(m > m_inf) and np.all(np.abs(m - m_inf) / m_inf < 0.6)


def test_balance_solution_uses_per_population_K_and_K_ext_as_the_finite_K_mean_field_does():
    J, J0, M0, gain = ((1.0, -1.5), (1.0, -1.0)), (2.0, 1.0), 0.15, 0.5
    # unequal in-degrees: the I population gets 5x fewer inputs, so it must fire sqrt(5)x faster to cancel
    m_inf = balance_solution(J, J0, M0, gain, K=(1e8, 2e7))
    m_mf = mean_field_threshold_linear(J, J0, M0, K=(1e8, 2e7), N=1e12, gain=gain)[0]
    np.testing.assert_allclose(m_mf, [0.301, 1.343], atol=1e-3)           # the figures
    np.testing.assert_allclose(m_inf, m_mf, rtol=4e-3)                    # large-K limit = finite-K at K ~ 1e8
    np.testing.assert_allclose(m_inf, [0.3, 0.6 * math.sqrt(5)], rtol=1e-12)
    # K_ext scales the drive: sqrt(4) = 2x the external in-degree doubles every rate
    m_ext = balance_solution(J, J0, M0, gain, K=(1e8, 2e7), K_ext=4e8)
    m_mf_ext = mean_field_threshold_linear(J, J0, M0, K=(1e8, 2e7), N=1e12, gain=gain, K_ext=4e8)[0]
    np.testing.assert_allclose(m_ext, 2 * m_inf, rtol=1e-12)
    np.testing.assert_allclose(m_ext, m_mf_ext, rtol=4e-3)
    # a number for K, or equal K, is the plain -(gain J)^-1 J0 M0
    np.testing.assert_allclose(balance_solution(J, J0, M0, gain, K=500.0), balance_solution(J, J0, M0, gain))


def test_mean_field_tends_to_the_balance_solution_for_large_K_and_solves_its_equations():
    J, J0, M0, gain = ((1.0, -1.5), (1.0, -1.0)), (2.0, 1.0), 0.15, 0.5
    m_inf = balance_solution(J, J0, M0, gain)
    np.testing.assert_allclose(m_inf, [0.3, 0.6])  # -(gain J)^-1 J0 M0 by hand: J^-1 = [[-2, 3], [-2, 2]]
    gaps = [mean_field_threshold_linear(J, J0, M0, K=K, N=1e12, gain=gain)[0] - m_inf for K in (1e6, 1e8)]
    assert np.max(np.abs(gaps[1]) / m_inf) < 3e-3
    np.testing.assert_allclose(gaps[0] / gaps[1], 10.0, rtol=0.02)  # the correction shrinks like 1/sqrt(K)
    # the returned (m, q) satisfy the self-consistency equations of the docstring
    K, N = np.array([300.0, 300.0]), np.array([2000.0, 1000.0])
    m, q = mean_field_threshold_linear(J, J0, M0, K, N, gain, theta=0.2)
    Jm = np.array(J)
    mu = gain * (Jm * np.sqrt(K)) @ m + np.sqrt(K[0]) * np.array(J0) * M0 - 0.2
    sig = np.sqrt(gain ** 2 * (Jm ** 2 * (1 - K / N)) @ q)
    z = mu / sig
    Phi = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in z])
    phi = np.exp(-z ** 2 / 2) / math.sqrt(2 * math.pi)
    np.testing.assert_allclose(m, mu * Phi + sig * phi, rtol=1e-9)
    np.testing.assert_allclose(q, (mu ** 2 + sig ** 2) * Phi + mu * sig * phi, rtol=1e-9)
    assert balance_condition(J, J0) and not balance_condition(J, (1.0, 1.0))


def test_rates_are_linear_in_the_drive_and_E_I_inputs_cancel():
    # one batched call over the drive M0: large-K rates are M0 * (2, 4) with gain 0.5
    net = Circuit(CircuitConfig(sizes=(2000, 2000), K=400, gain=0.5, seed=1))
    M0 = torch.tensor([0.1, 0.15, 0.2])
    out = net.simulate(0.2, M0=M0, record=("rates", "inputs"), record_every=20)
    pr = out["pop_rates"][:, -1].double().numpy()  # (3, 2)
    slope = np.polyfit(M0.numpy(), pr, 1)
    resid = pr - (np.outer(M0.numpy(), slope[0]) + slope[1])
    assert np.max(np.abs(resid)) < 0.01 * pr.max()
    h = out["inputs"][:, -1, net.slices[0]].mean(1)  # (3, P): mean E-input and I-input to E neurons
    ext = net.external_input(net.batch_params(M0=M0))[:, 0]
    net_in = h.sum(-1) + ext
    assert torch.all(h[:, 0] + ext > 5 * net_in.abs()) and torch.all(h[:, 1] < 0)  # excitation and inhibition cancel


# ---------------------------------------------------------------------------- the equations themselves


@pytest.mark.parametrize("native", [False, None])  # the pure-torch path, and the compiled kernel where there is one
def test_step_matches_a_numpy_loop_of_the_equations_with_stp_synaptic_currents_and_two_transfers(native):
    net = Circuit(small_ei(), native=native)
    p = net.batch_params()
    stim = torch.linspace(0, 0.5, net.N)
    out = net.simulate(0.1, stimulus=lambda i: stim)
    ref = numpy_reference(net, p, 100, inputs=stim.double().numpy())
    np.testing.assert_allclose(out["rates"][0].double().numpy(), ref, rtol=1e-4, atol=1e-5)
    assert ref[-1].max() > 0.1  # the network is active, the comparison means something


def test_batched_settings_equal_the_same_settings_one_by_one():
    net = Circuit(small_ei())
    J = torch.tensor([[[1.0, -1.5], [1.0, -1.0]], [[1.2, -1.6], [1.0, -1.1]], [[0.9, -1.5], [1.1, -1.0]]])
    M0, gain, U = torch.tensor([0.15, 0.2, 0.1]), torch.tensor([0.5, 0.4, 0.6]), torch.tensor([0.2, 0.1, 0.5])
    batched = net.simulate(0.1, J=J, M0=M0, gain=gain, U=U, record=("rates", "stp"))
    for b in range(3):
        cfg = small_ei(J=J[b].tolist(), M0=M0[b].item(), gain=gain[b].item(), stp={("E", "E"): STPConfig(U[b].item(), 0.5, 0.3)})
        one = Circuit(cfg).simulate(0.1, record=("rates", "stp"))
        torch.testing.assert_close(batched["rates"][b], one["rates"][0], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(batched["u0"][b], one["u0"][0], rtol=1e-6, atol=1e-7)
    assert batched["rates"].shape == (3, 100, 250) and batched["pop_rates"].shape == (3, 100, 2)


def test_same_seed_same_network_and_structure_statistics():
    a, b, c = Circuit(small_ei()), Circuit(small_ei()), Circuit(small_ei(seed=1))
    for k in a.blocks:
        assert torch.equal(a.blocks[k]["idx"], b.blocks[k]["idx"]) and torch.equal(a.blocks[k]["offsets"], b.blocks[k]["offsets"])
    assert not torch.equal(a.blocks[(0, 0)]["idx"], c.blocks[(0, 0)]["idx"])
    torch.testing.assert_close(a.simulate(0.05)["rates"], b.simulate(0.05)["rates"], rtol=0, atol=0)
    # Bernoulli(K/N) in-degrees: mean K, variance K (1 - K/N)
    big = Circuit(CircuitConfig(sizes=(4000, 1000), K=200, seed=3))
    deg = big.blocks[(0, 0)]["indegree"].double()
    assert abs(deg.mean().item() - 200) < 1.0 and abs(deg.var().item() / (200 * (1 - 200 / 4000)) - 1) < 0.1
    assert big.blocks[(0, 0)]["idx"].dtype == torch.int32  # stored as 0/1 structure, 4 bytes a synapse


def test_ring_and_low_rank_structure():
    # sparse ring: connection probability K/N (1 + kappa cos(dtheta))
    net = Circuit(CircuitConfig(names=("E",), sizes=(2000,), tau=(0.02,), tau_syn=(0.0,), threshold=(0.0,), J=((1.0,),),
                                J0=(1.0,), K=400, kappa=0.8, balanced=False, seed=0))
    C = net.dense_structure("E", "E").double()
    th = net.angles(0)
    d = torch.cos(th[:, None] - th[None])
    slope = (C * d).sum() / (d * d).sum() / (400 / 2000)
    assert abs(slope.item() - 0.8) < 0.05
    # all-to-all ring + low-rank: the O(N) path equals the dense matrix
    cfg = CircuitConfig(names=("E", "I"), sizes=(60, 40), conn="all", kappa=((0.5, 0.3), (0.2, 0.0)), kappa_lr=0.7,
                        balanced=False, K=(60, 40))
    net = Circuit(cfg)
    st = net.init_state(r0=torch.rand(net.N, generator=torch.Generator().manual_seed(0)))
    h = net.recurrent_input(st)[0]
    torch.testing.assert_close(h, net.dense_weights() @ st["r"][0], rtol=1e-5, atol=1e-6)


def test_transfer_functions():
    x = torch.tensor([-1.0, 0.0, 0.5, 1.0, 3.0])
    torch.testing.assert_close(TRANSFERS["relu"](x), torch.tensor([0, 0, 0.5, 1, 3.0]))
    torch.testing.assert_close(TRANSFERS["brunel"](x), torch.tensor([0, 0, 0.25, 1, 3.0]))  # sqrt(4*3-3) = 3
    torch.testing.assert_close(TRANSFERS["erf"](x), torch.tensor([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x.tolist()]))


def test_poisson_spikes_have_the_rate_times_dt_as_mean():
    counts = poisson_spikes(torch.full((20, 500, 10), 20.0), 0.01, seed=0)
    assert abs(counts.mean().item() - 0.2) < 0.005 and abs(counts.var().item() - 0.2) < 0.01
    with pytest.raises(ValueError, match=">= 0"):
        poisson_spikes(torch.tensor([-1.0]), 0.01)


# ---------------------------------------------------------------------------- short-term plasticity


def test_stp_rate_form_steady_state_in_the_network_matches_the_closed_form():
    # one population held at r = M0 (instantaneous threshold-linear, no recurrence), STP on E<-E, 4 settings at once
    cfg = CircuitConfig(names=("E",), sizes=(3,), tau=(0.0,), tau_syn=(0.0,), threshold=(0.0,), J=((0.0,),), J0=(1.0,),
                        M0=5.0, conn="none", K=3, balanced=False, stp={("E", "E"): STPConfig()}, dt=0.01)
    net = Circuit(cfg)
    r = torch.tensor([2.0, 5.0, 20.0, 50.0])
    U, tf, td = torch.tensor([0.03, 0.2, 0.5, 0.03]), torch.tensor([1.0, 0.5, 0.05, 1.5]), torch.tensor([0.2, 0.3, 0.8, 0.1])
    out = net.simulate(40.0, M0=r, U=U, tau_f=tf, tau_d=td, record=("stp",), record_every=4000)
    u_th, x_th = stp_steady_state(r.double(), U.double(), tf.double(), td.double())
    np.testing.assert_allclose(out["u0"][:, -1, 0].double().numpy(), u_th.numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(out["x0"][:, -1, 0].double().numpy(), x_th.numpy(), atol=1e-6, rtol=0)
    # depression only: the drive U r x saturates at 1/tau_d
    u, x = stp_steady_state(1e6, 0.5, 1e-12, 0.2)
    assert abs(u * x * 1e6 - 1 / 0.2) < 1e-3


@pytest.mark.parametrize("u_rest", ["zero", "U"])
@pytest.mark.parametrize("U,tf,td,D", [(0.05, 1.0, 0.1, 0.05), (0.5, 0.02, 0.8, 0.1), (0.2, 0.3, 0.3, 0.02)])
def test_stp_regular_spike_train_steady_state_matches_the_closed_form(u_rest, U, tf, td, D):
    u, x = stp_spike_train(np.arange(4000) * D, U, tf, td, u_rest)
    u_th, x_th = stp_regular_train(D, U, tf, td, u_rest)
    assert abs(u[-1] - u_th) < 1e-6 and abs(x[-1] - x_th) < 1e-6
    assert abs(u[0] - (U if u_rest == "zero" else U + U * (1 - U))) < 1e-12 and x[0] == 1.0


def test_working_memory_fixed_points_reached_from_a_pulse_and_not_from_rest():
    fp = wm_fixed_points(10.0, 0.03, 1.0, 0.2, -5.0)
    np.testing.assert_allclose(fp, [0.0, 8.08, 33.96], atol=0.01)
    stable = [wm_stability(r, 10.0, 0.03, 1.0, 0.2, -5.0, 0.02)[0] for r in fp]
    assert stable == [True, False, True]
    # at I = -10 the high state loses stability through an oscillation: complex eigenvalues with Re > 0
    fp10 = wm_fixed_points(10.0, 0.03, 1.0, 0.2, -10.0)
    ok, ev = wm_stability(fp10[-1], 10.0, 0.03, 1.0, 0.2, -10.0, 0.02)
    assert not ok and np.any((ev.real > 0) & (ev.imag != 0))
    net = Circuit(wm_config())
    cue = pulse(torch.tensor([[0.0], [10.0]]), 0.5, 1.0, net.cfg.dt)  # setting 0: no cue, setting 1: a 0.5 s pulse
    out = net.simulate(7.0, params=net.batch_params(M0=torch.ones(2)), stimulus=cue, record_every=100)
    r = out["rates"][:, -1, 0]
    assert r[0].item() == 0.0
    assert abs(r[1].item() - fp[2]) < 0.005 * fp[2]


# ---------------------------------------------------------------------------- ring attractor


def test_ring_bump_half_width_and_amplitude_match_theory_and_no_bump_below_J1_2():
    J1 = torch.tensor([1.8, 2.5, 3.0, 4.0, 6.0])
    net = Circuit(ring_config(J0=-2.0, J1=3.0, I=1.0, n=1000))
    r0 = 1 + 0.1 * torch.cos(net.angles(0) - 1.0).float()  # a slight tilt breaks the symmetry
    out = net.simulate(3.0, r0=r0, kappa=(J1 / -2.0)[:, None, None], record_every=100)
    tc, A, psi = bump_shape(out["rates"][:, -1])
    for j, j1 in enumerate(J1.tolist()):
        tc_th, A_th = ring_bump(-2.0, j1, 1.0)
        if tc_th is None:  # J1 = 1.8: flat at I / (1 - J0)
            assert np.isnan(tc[j])
            np.testing.assert_allclose(out["rates"][j, -1].numpy(), A_th, rtol=1e-4)
        else:
            assert abs(math.degrees(tc[j] - tc_th)) < 0.5, (j1, math.degrees(tc[j]), math.degrees(tc_th))
            assert abs(A[j] - A_th) < 0.01 * A_th
            assert abs(psi[j] - 1.0) < 0.01  # the bump grew where the tilt pointed
    np.testing.assert_allclose([math.degrees(ring_bump(-2.0, j, 1.0)[0]) for j in (2.5, 3, 4, 6)],
                               [119.46, 105.36, 90.00, 74.64], atol=0.01)


def test_bump_persists_after_the_cue_where_the_cue_was():
    net = Circuit(ring_config(J0=-2.0, J1=4.0, I=1.0, n=500))
    cue = pulse(ring_cue(net, "E", 2.0, 0.5), 0.0, 0.2, net.cfg.dt)
    out = net.simulate(1.0, r0=torch.full((500,), 1 / 3), stimulus=cue, record_every=50)
    tc, A, psi = bump_shape(out["rates"][0])
    assert abs(psi[-1] - 2.0) < 0.01 and abs(math.degrees(tc[-1]) - 90.0) < 0.5  # 0.8 s after the cue ended


# ---------------------------------------------------------------------------- bad configs


@pytest.mark.parametrize("kw,match", [
    (dict(K=-5), "K must be > 0"),
    (dict(K=2000), "exceeds its size"),
    (dict(transfer="tanhh"), "unknown transfer function 'tanhh'"),
    (dict(sizes=(100, 100, 100)), "sizes has 3 entries but there are 2 populations"),
    (dict(J=((1.0, -1.0),)), "J must be 2 x 2"),
    (dict(J0=(1.0, 2.0)), "cannot balance"),
    (dict(conn="dense"), "unknown connectivity 'dense'"),
    (dict(stp={("E", "X"): STPConfig()}), "stp: key"),
])
def test_bad_configs_give_clear_errors(kw, match):
    base = dict(sizes=(1000, 1000), K=100)
    base.update(kw)
    with pytest.raises((ValueError, KeyError), match=match):
        CircuitConfig(**base)


def test_bad_batches_and_inputs_give_clear_errors():
    net = Circuit(small_ei())
    with pytest.raises(ValueError, match="disagree on the batch size"):
        net.batch_params(M0=torch.ones(3), gain=torch.ones(2))
    with pytest.raises(KeyError, match="unknown parameter"):
        net.batch_params(tau=torch.ones(3))
    with pytest.raises(ValueError, match="J must have shape"):
        net.batch_params(J=torch.ones(3, 3))
    with pytest.raises(ValueError, match="has no such block"):
        Circuit(small_ei(conn=(("sparse", "none"), ("sparse", "sparse")))).batch_params(J=torch.ones(2, 2, 2))
    with pytest.raises(ValueError, match="cannot vary across the batch"):
        net.batch_params(kappa=torch.ones(2, 2, 2))
    with pytest.raises(ValueError, match="stimulus must be"):
        net.simulate(0.01, stimulus=torch.zeros(10, 7))
    with pytest.raises(KeyError, match="unknown population"):
        ring_cue(net, "X", 0.0, 1.0)


def test_ei_fixed_points_are_where_an_all_to_all_network_settles_from_low_and_high_starts():
    from minilatent.circuits import ei_fixed_points
    J = ((12.0, -4.0), (10.0, -2.0))
    fps = ei_fixed_points(J, (-4.5, -6.0))
    assert [s for *_, s in fps] == [True, False, True]
    cfg = CircuitConfig(names=("E", "I"), sizes=(5, 5), tau=(0.01, 0.005), tau_syn=(0.0, 0.0), transfer="sigmoid",
                        threshold=(0.0, 0.0), J=J, J0=(-4.5, -6.0), M0=1.0, conn="all", K=(5, 5), balanced=False)
    r0 = torch.stack([torch.zeros(10), torch.ones(10)])
    out = Circuit(cfg).simulate(1.0, params=Circuit(cfg).batch_params(M0=torch.ones(2)), r0=r0, record_every=100)
    np.testing.assert_allclose(out["pop_rates"][0, -1].numpy(), fps[0][:2], atol=1e-5)
    np.testing.assert_allclose(out["pop_rates"][1, -1].numpy(), fps[2][:2], atol=1e-5)
    with pytest.raises(ValueError, match="transfer must be"):
        ei_fixed_points(J, (-4.5, -6.0), transfer="relu")


# ---------------------------------------------------------------------------- the optional compiled kernel


def test_compiled_kernel_matches_the_pure_torch_path_for_every_batch_width():
    from minilatent import circuits
    if circuits.native_kernel() is None:
        pytest.skip(f"no compiled kernel here: {circuits._NATIVE['error']}")
    cfg = small_ei(sizes=(300, 200), K=(60, 40))
    fast, ref = Circuit(cfg, native=True), Circuit(cfg, native=False)
    assert fast.kernel is not None and ref.kernel is None
    for B in (1, 3, 8, 16, 21):
        M0 = torch.linspace(0.1, 0.3, B)
        a = fast.simulate(0.05, M0=M0, record=("rates", "stp"))
        b = ref.simulate(0.05, M0=M0, record=("rates", "stp"))
        torch.testing.assert_close(a["rates"], b["rates"], rtol=1e-5, atol=1e-6)
        if B == 21:  # every setting of a batch is bitwise the setting run alone
            one = fast.simulate(0.05, M0=M0[5:6])
            assert torch.equal(a["rates"][5], one["rates"][0])


def test_without_a_compiler_the_torch_path_runs_and_native_true_says_why(tmp_path, monkeypatch):
    from minilatent import circuits
    monkeypatch.setattr(circuits, "_NATIVE", {"fn": None, "tried": False, "error": "not tried"})
    monkeypatch.delenv("MINILATENT_NATIVE", raising=False)
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("MINILATENT_CACHE", str(tmp_path / "cache"))
    assert circuits.native_kernel() is None and "FileNotFoundError" in circuits._NATIVE["error"]
    net = Circuit(small_ei())
    assert net.kernel is None and net.simulate(0.01)["rates"].shape == (1, 10, 250)
    with pytest.raises(RuntimeError, match="native=True.*FileNotFoundError"):
        Circuit(small_ei(), native=True)

    def no_build():
        raise AssertionError("native=False must not build or load the kernel")
    monkeypatch.setattr(circuits, "native_kernel", no_build)   # the same meaning of native= as in sparks.py
    assert torch.equal(Circuit(small_ei(), native=False).simulate(0.01)["rates"], net.simulate(0.01)["rates"])


@pytest.mark.parametrize("n_pre", [40000, 70000])  # uint16 indices above 2^15, and int32 indices above 2^16
def test_compiled_kernel_index_widths(n_pre):
    from minilatent import circuits
    if circuits.native_kernel() is None:
        pytest.skip(f"no compiled kernel here: {circuits._NATIVE['error']}")
    cfg = CircuitConfig(names=("E", "I"), sizes=(20, n_pre), tau=(0.0, 0.0), threshold=(0.0, 0.0), J=((0.0, -1.0), (0.0, 0.0)),
                        J0=(1.0, 1.0), conn=(("none", "sparse"), ("none", "none")), K=(1.0, 2000.0), balanced=False)
    r0 = torch.rand(2, 20 + n_pre, generator=torch.Generator().manual_seed(0))
    fast, ref = Circuit(cfg, native=True), Circuit(cfg, native=False)
    h_fast = fast.recurrent_input(fast.init_state(r0=r0, M0=torch.ones(2)))
    h_ref = ref.recurrent_input(ref.init_state(r0=r0, M0=torch.ones(2)))
    assert fast.blocks[(0, 1)]["idx"].max() > 2 ** 15
    torch.testing.assert_close(h_fast, h_ref, rtol=1e-5, atol=1e-4)


def test_stp_step_is_exact_for_u_and_first_order_for_x_during_a_transient():
    # a constant presynaptic rate from t = 0 (threshold-linear, tau = 0, a constant drive), u and x from rest
    U, tf, td, r = 0.2, 0.5, 0.3, 20.0

    def run(dt):
        cfg = CircuitConfig(names=("E",), sizes=(3,), tau=(0.0,), tau_syn=(0.0,), threshold=(0.0,), J=((0.0,),),
                            J0=(r,), M0=1.0, conn="none", K=1.0, balanced=False, dt=dt,
                            stp={("E", "E"): STPConfig(U=U, tau_f=tf, tau_d=td)})
        out = Circuit(cfg, native=False).simulate(0.2, r0=torch.full((3,), r), record=("rates", "stp"))
        assert torch.all(out["rates"] == r)
        return out["u0"][0, -1, 0].item(), out["x0"][0, -1, 0].item()

    def rk4(n=20000, T=0.2):  # the (u, x) equations of the docstring, finely integrated
        h, u, x = T / n, U, 1.0
        f = lambda u, x: np.array([(U - u) / tf + U * (1 - u) * r, (1 - x) / td - u * x * r])
        y = np.array([u, x])
        for _ in range(n):
            k1 = f(*y); k2 = f(*(y + h / 2 * k1)); k3 = f(*(y + h / 2 * k2)); k4 = f(*(y + h * k3))
            y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return y
    ku = 1 / tf + U * r
    u_star = (U / tf + U * r) / ku
    u_exact = u_star + (U - u_star) * math.exp(-0.2 * ku)
    x_ref = rk4()[1]
    errs = []
    for dt in (4e-3, 2e-3, 1e-3):
        u, x = run(dt)
        assert abs(u - u_exact) < 1e-8           # u: exact for a constant rate (float32 U: ~3e-9)
        errs.append(abs(x - x_ref))
    assert 1.8 < errs[0] / errs[1] < 2.2 and 1.8 < errs[1] / errs[2] < 2.2, errs   # x: first order in dt
    assert errs[2] < 1e-3, errs
