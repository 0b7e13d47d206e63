import math

import numpy as np
import pytest
import torch

import minilatent.sparks as sparks_module
from minilatent.sparks import (SPARKS, SPARKSConfig, HebbianAttention, hebbian_states, hebbian_scan, native_kernel,
                               saved_tensor_bytes)


# the recurrence runs in pure torch (False) or in the optional compiled kernel (True; skipped without a compiler)
NATIVE = [False, pytest.param(True, marks=pytest.mark.skipif(native_kernel() is None,
                                                             reason="no compiled kernel (no C++ compiler?)"))]


def spikes(B=3, T=20, N=5, p=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, T, N, generator=g) < p).double()


def numpy_hebbian(s, wpre, wpost, taupre, taupost, dt, V, b, clip=(-0.5, 1.5), data_type="ephys"):
    """ the Hebbian attention equations of SPARKS (Skatchkovsky et al. 2024), one bin and one pair at a time
    (increments w, not dt*w) """
    B, T, N = s.shape
    H, Dh, _ = V.shape
    out = np.zeros((B, T, N, H, Dh))
    A_all = np.zeros((B, T, H, N, N))
    for b_ in range(B):
        for h in range(H):
            xpre = np.zeros((N, N)); xpost = np.zeros((N, N)); A = np.zeros((N, N))
            for t in range(T):
                st = s[b_, t]
                for i in range(N):
                    for j in range(N):
                        if data_type == "ephys":
                            xpre[i, j] = xpre[i, j] * math.exp(-dt / taupre[h, i, j]) + wpre[h, i, j] * st[j]
                            xpost[i, j] = xpost[i, j] * math.exp(-dt / taupost[h, i, j]) + wpost[h, i, j] * st[i]
                        else:
                            xpre[i, j], xpost[i, j] = st[j], st[i]
                new = np.empty((N, N))
                for i in range(N):
                    for j in range(N):
                        a = A[i, j] + (1 - A[i, j]) * xpre[i, j] * (st[i] != 0) - A[i, j] * xpost[i, j] * (st[j] != 0)
                        new[i, j] = min(max(a, clip[0]), clip[1])
                A = new
                A_all[b_, t, h] = A
                for i in range(N):
                    out[b_, t, i, h] = A[i] @ V[h].T + b[h]
    return out, A_all


def make_layer(N=5, H=2, D=6, data_type="ephys", w_start=0.3, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = SPARKSConfig(n_neurons=N, embed_dim=D, n_heads=H, data_type=data_type, w_start=w_start, tau_s=0.05,
                       **kw)
    layer = HebbianAttention(N, cfg).double()
    if data_type == "ephys":
        with torch.no_grad():   # spread the time constants and increments so that every pair differs
            layer.log_taupre.add_(0.5 * torch.randn_like(layer.log_taupre))
            layer.log_taupost.add_(0.5 * torch.randn_like(layer.log_taupost))
            layer.log_wpre.add_(0.3 * torch.randn_like(layer.log_wpre))
            layer.log_wpost.add_(0.3 * torch.randn_like(layer.log_wpost))
    with torch.no_grad():
        layer.value_bias.normal_()
    return layer, cfg


@pytest.mark.parametrize("native", NATIVE)
@pytest.mark.parametrize("data_type,w_start,chunk", [("ephys", 0.3, 4), ("ephys", 0.9, 7), ("ephys", 0.3, 64),
                                                     ("calcium", 0.3, 5)])
def test_layer_matches_a_numpy_loop_of_the_equations(data_type, w_start, chunk, native):
    # w_start 0.9: traces exceed 1, so the soft bounds overshoot and the clip at [-0.5, 1.5] is exercised
    layer, cfg = make_layer(data_type=data_type, w_start=w_start, bptt_chunk=chunk, native=native)
    s = spikes(T=23)
    if data_type == "calcium":
        s = s * torch.rand(s.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    out, (P, Q, A) = layer(s.transpose(0, 1).contiguous())
    p = {k: v.detach().numpy() for k, v in layer.named_parameters()}
    ex = {k: np.exp(p[k]) for k in ("log_wpre", "log_wpost", "log_taupre", "log_taupost")} if data_type == "ephys" \
        else {k: np.ones((2, 5, 5)) for k in ("log_wpre", "log_wpost", "log_taupre", "log_taupost")}
    ref, A_ref = numpy_hebbian(s.numpy(), ex["log_wpre"], ex["log_wpost"], ex["log_taupre"], ex["log_taupost"],
                               cfg.dt, p["value"], p["value_bias"], data_type=data_type)
    got = out.detach().numpy().reshape(23, 3, 5, 2, 3).transpose(1, 0, 2, 3, 4)
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)
    np.testing.assert_allclose(A.numpy(), A_ref[:, -1], atol=1e-6, rtol=0)
    if w_start == 0.9:
        assert (A_ref == 1.5).any() or (A_ref == -0.5).any(), "the clip case was not exercised"
    # the teaching helper gives the same states
    _, _, A_all = hebbian_states(s.transpose(0, 1), *layer.coefficients())
    np.testing.assert_allclose(A_all.numpy().transpose(1, 0, 2, 3, 4), A_ref, atol=1e-6, rtol=0)


class _AutogradScan(torch.nn.Module):
    """ the same recurrence written with plain differentiable torch ops: the gradient reference """

    @staticmethod
    def run(u, dP, cP, dQ, cQ, W, lo=-0.5, hi=1.5):
        T, B, N = u.shape
        H = dP.shape[0]
        P = Q = A = u.new_zeros(B, H, N, N)
        outs = []
        for t in range(T):
            uj, ui = u[t].view(B, 1, 1, N), u[t].view(B, 1, N, 1)
            P = P * dP + cP * uj
            Q = Q * dQ + cQ * ui
            A = torch.clamp(A + (1 - A) * P * (ui != 0) - A * Q * (uj != 0), lo, hi)
            outs.append(torch.einsum("bhij,hdj->bihd", A, W))
        return torch.stack(outs)


@pytest.mark.parametrize("native", NATIVE)
@pytest.mark.parametrize("w_start,chunk", [(0.3, 4), (0.9, 5), (0.3, 100)])
def test_gradients_match_autograd_through_the_plain_recurrence(w_start, chunk, native):
    layer, cfg = make_layer(w_start=w_start, bptt_chunk=chunk)
    u = spikes(T=17).transpose(0, 1).contiguous()
    coeffs = [c.detach().requires_grad_(True) for c in layer.coefficients()]
    W = layer.value.detach().clone().requires_grad_(True)
    z = torch.zeros(3, 2, 5, 5, dtype=torch.float64)
    m = (u != 0).double()
    out = hebbian_scan(u, m, coeffs, W, torch.zeros(2, 3, dtype=torch.float64), (z, z, z), chunk, (-0.5, 1.5),
                       native)[0]
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g1 = torch.autograd.grad((out * weight).sum(), coeffs + [W])
    coeffs2 = [c.detach().requires_grad_(True) for c in coeffs]
    W2 = W.detach().clone().requires_grad_(True)
    ref = _AutogradScan.run(u, *coeffs2, W2)
    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), atol=1e-10)
    g2 = torch.autograd.grad((ref * weight).sum(), coeffs2 + [W2])
    for name, a, b in zip(("dP", "cP", "dQ", "cQ", "W"), g1, g2):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-9, rtol=1e-7, err_msg=name)


def scan_both(B=4, T=45, N=13, H=2, Dh=5, w=0.3, chunk=8, dtype=torch.float64, seed=0, rate=0.3, a0_clip=True):
    """ the outputs, final states and every gradient of the torch scan and of the compiled one, same inputs """
    g = torch.Generator().manual_seed(seed)
    u = (torch.rand(T, B, N, generator=g) < rate).to(dtype)
    m = (u != 0).to(dtype)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(dtype)
    coeffs = [torch.exp(-0.01 / (0.05 * torch.exp(0.5 * rnd(H, N, N)))), w * torch.exp(0.3 * rnd(H, N, N)),
              torch.exp(-0.01 / (0.05 * torch.exp(0.5 * rnd(H, N, N)))), w * torch.exp(0.3 * rnd(H, N, N))]
    W, b = rnd(H, Dh, N) / N ** 0.5, rnd(H, Dh)
    P0, Q0, A0 = 0.1 * rnd(B, H, N, N).abs(), 0.1 * rnd(B, H, N, N).abs(), rnd(B, H, N, N)
    A0 = A0.clamp(-0.5, 1.5) if a0_clip else A0
    weight = rnd(T, B, N, H, Dh)
    res = []
    for native in (False, True):
        leaves = [x.clone().requires_grad_(True) for x in coeffs + [W, b]]
        out, (P, Q, A) = hebbian_scan(u, m, leaves[:4], *leaves[4:], (P0, Q0, A0), chunk, (-0.5, 1.5), native)
        grads = torch.autograd.grad((out * weight).sum(), leaves)
        res.append([out, P, Q, A] + list(grads))
    return res


@pytest.mark.skipif(native_kernel() is None, reason="no compiled kernel (no C++ compiler?)")
@pytest.mark.parametrize("kw", [dict(), dict(w=0.9), dict(w=3.0, chunk=5), dict(N=3, H=1, Dh=16, chunk=100),
                                dict(N=20, Dh=17, T=9, chunk=4), dict(B=1, T=1),
                                dict(N=100, H=1, Dh=32, B=2, T=40, rate=0.18, chunk=16),
                                dict(N=61, H=1, Dh=24, B=2, T=30, rate=0.02), dict(rate=1.0), dict(rate=0.6),
                                dict(a0_clip=False, w=0.1)])
def test_compiled_kernel_matches_the_torch_scan(kw):
    # float64: the same equations, so the same numbers to rounding (w 0.9 and 3.0: the clip is active, and where
    # it is no gradient passes); states start away from zero (a carried state), N and Dh off the kernel's blocks.
    # The kernel skips the pairs whose neurons did not spike (their A stays): spike rates from 2% (most rows and
    # columns skipped) to every neuron in every bin (all dense), 18% at N = 100 (the benchmark's data), and a
    # carried A outside the clip (which the first bin clips everywhere)
    torch_path, native = scan_both(**kw)
    names = ("out", "P", "Q", "A", "dP", "cP", "dQ", "cQ", "W", "bias")
    for name, a, b in zip(names, torch_path, native):
        np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), atol=1e-10, rtol=1e-10, err_msg=name)
    if kw.get("w", 0.3) >= 0.9:
        A = torch_path[3]
        assert ((A == 1.5) | (A == -0.5)).any(), "the clip case was not exercised"


@pytest.mark.skipif(native_kernel() is None, reason="no compiled kernel (no C++ compiler?)")
def test_compiled_kernel_in_float32_is_as_close_to_exact_as_the_torch_scan():
    exact = scan_both(N=40, T=120, w=0.1, chunk=16)[0]
    torch32, native32 = scan_both(N=40, T=120, w=0.1, chunk=16, dtype=torch.float32)
    for k, (e, a, b) in enumerate(zip(exact, torch32, native32)):
        scale = e.abs().max().item()
        err_t = (a.double() - e).abs().max().item() / scale
        err_n = (b.double() - e).abs().max().item() / scale
        # float32 rounding only (gW sums 19,200 terms per entry, in a different order): both within 5e-6 of exact
        assert err_n < 5e-6 and err_t < 5e-6, (k, err_n, err_t)
        assert (a - b).abs().double().quantile(0.99).item() / scale < 2e-6, k    # and typically ~1e-7 apart


def test_native_none_falls_back_to_torch_true_requires_the_kernel_false_never_builds_it(monkeypatch, tmp_path):
    # one meaning of native= in sparks.py and circuits.py: None = kernel where it can run, True = require, False = never
    x, y = spikes(B=2, T=12, N=6).float(), torch.randn(2, 12, 2)
    torch.manual_seed(0)
    ref = SPARKS(SPARKSConfig(n_neurons=6, n_outputs=2, embed_dim=8, native=False))
    loss_ref = ref.compute_losses((x, y))["loss"]
    loss_ref.backward()
    for env in ({"MINILATENT_NATIVE": "0"}, {"CXX": str(tmp_path / "no-such-compiler"), "MINILATENT_CACHE": str(tmp_path)}):
        monkeypatch.setattr(sparks_module, "_NATIVE", {"lib": None, "tried": False, "error": "not tried"})
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        assert native_kernel() is None and sparks_module._NATIVE["error"]
        torch.manual_seed(0)
        model = SPARKS(SPARKSConfig(n_neurons=6, n_outputs=2, embed_dim=8))      # native=None: falls back
        loss = model.compute_losses((x, y))["loss"]
        loss.backward()
        assert loss.item() == loss_ref.item()
        for (n, p), p_ref in zip(model.named_parameters(), ref.parameters()):
            assert torch.equal(p.grad, p_ref.grad), n
            p.grad = None
        with pytest.raises(RuntimeError, match="native=True.*" + ("MINILATENT_NATIVE=0" if len(env) == 1 else "Error")):
            SPARKS(SPARKSConfig(n_neurons=6, n_outputs=2, embed_dim=8, native=True))
        monkeypatch.delenv("MINILATENT_NATIVE", raising=False)

    def no_build():
        raise AssertionError("native=False must not build or load the kernel")
    monkeypatch.setattr(sparks_module, "native_kernel", no_build)
    torch.manual_seed(0)
    model = SPARKS(SPARKSConfig(n_neurons=6, n_outputs=2, embed_dim=8, native=False))
    assert model.compute_losses((x, y))["loss"].item() == loss_ref.item()


@pytest.mark.skipif(native_kernel() is None, reason="no compiled kernel (no C++ compiler?)")
def test_native_true_refuses_a_tensor_the_kernel_cannot_run_and_none_runs_it_in_torch():
    u = spikes(B=2, T=5, N=4).transpose(0, 1).to(torch.bfloat16)
    m = (u != 0).to(u.dtype)
    co = [torch.full((1, 4, 4), 0.5, dtype=u.dtype) for _ in range(4)]
    z = torch.zeros(2, 1, 4, 4, dtype=u.dtype)
    W, b = torch.ones(1, 3, 4, dtype=u.dtype), torch.zeros(1, 3, dtype=u.dtype)
    with pytest.raises(RuntimeError, match="native=True.*bfloat16"):
        hebbian_scan(u, m, co, W, b, (z, z, z), 4, (-0.5, 1.5), native=True)
    out_none = hebbian_scan(u, m, co, W, b, (z, z, z), 4, (-0.5, 1.5), native=None)[0]
    out_torch = hebbian_scan(u, m, co, W, b, (z, z, z), 4, (-0.5, 1.5), native=False)[0]
    assert torch.equal(out_none, out_torch)


def small(**kw):
    base = dict(n_neurons=6, embed_dim=8, latent_dim=3, tau_p=3, dec_hidden=10, bptt_chunk=4, dt=0.01)
    base.update(kw)
    return SPARKSConfig(**base)


@pytest.mark.parametrize("kw", [dict(), dict(n_heads=2, n_layers=1), dict(data_type="calcium", loss="mse"),
                                dict(n_outputs=2, tau_f=3)])
def test_every_parameter_gets_gradient(kw):
    torch.manual_seed(0)
    m = SPARKS(small(**kw))
    x = spikes(B=4, T=15, N=6).float()
    if kw.get("data_type") == "calcium":
        x = x * torch.rand_like(x)
    batch = (x, torch.randn(4, 15, 2)) if "n_outputs" in kw else x
    m.compute_losses(batch)["loss"].backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"


@pytest.mark.parametrize("chunk, recompute", [(1, True), (3, False), (16, True)])
def test_fused_head_matches_autograd_through_the_layers(chunk, recompute):
    # the default head after the attention (x + W2 relu(W1 x + b1) + b2 per neuron, then the latent projection) as
    # _FFLatent computes it, against the same formula through autograd: values and every gradient, float64
    g = torch.Generator().manual_seed(0)
    t, B, N, D, F_, L2 = 7, 3, 5, 4, 6, 8
    args = [torch.randn(s, generator=g, dtype=torch.float64).requires_grad_(True)
            for s in ((t, B, N, D), (F_, D), (F_,), (D, F_), (D,), (L2, N * D), (L2,))]

    def plain(x, W1, b1, W2, b2, Wl, bl):
        y = x + torch.relu(x @ W1.t() + b1) @ W2.t() + b2
        return y.reshape(t, B, N * D) @ Wl.t() + bl

    fused = lambda *a: sparks_module._FFLatent.apply(*a, chunk, recompute)
    weight = torch.randn(t, B, L2, generator=g, dtype=torch.float64)
    for f_out, p_out in zip([fused(*args)] + list(torch.autograd.grad((fused(*args) * weight).sum(), args)),
                            [plain(*args)] + list(torch.autograd.grad((plain(*args) * weight).sum(), args))):
        np.testing.assert_allclose(f_out.detach().numpy(), p_out.detach().numpy(), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(fused, args)
    # recompute=False keeps r = relu(W1 x + b1) for backward: exactly its (t, B, N, F) float64 more
    kept = [sparks_module.saved_tensor_bytes(lambda: sparks_module._FFLatent.apply(*args, chunk, rec))[1]
            for rec in (True, False)]
    assert kept[1] - kept[0] == t * B * N * F_ * 8


def test_checkpoint_head_recomputes_the_hidden_layer_only_when_it_is_wider_than_the_attention_output():
    # ff_mult 1: r (t, B, N, F) is no larger than the attention output the head keeps anyway, so it is kept;
    # ff_mult 2: checkpoint_head recomputes it, keeping exactly t B N F float64 less than checkpoint_head=False
    x, y = spikes(B=3, T=15, N=6), torch.randn(3, 15, 2, dtype=torch.float64)
    kept = {}
    for mult in (1, 2):
        for ckpt in (True, False):
            torch.manual_seed(0)
            m = SPARKS(small(n_outputs=2, ff_mult=mult, checkpoint_head=ckpt)).double()
            kept[mult, ckpt] = sparks_module.saved_tensor_bytes(lambda: m.compute_losses((x, y)))[1]
    assert kept[1, True] == kept[1, False]
    assert kept[2, False] - kept[2, True] == 15 * 3 * 6 * (2 * 8) * 8


def test_the_model_takes_the_fused_head_only_for_the_default_layers_and_gets_the_same_gradients():
    torch.manual_seed(0)
    m = SPARKS(small(n_outputs=2, bptt_chunk=4)).double()
    assert sparks_module._ff_latent_parts(m, 0) is not None
    x, y = spikes(B=3, T=15, N=6), torch.randn(3, 15, 2, dtype=torch.float64)
    torch.manual_seed(1)                   # the same latent samples for both
    fused = torch.autograd.grad(m.compute_losses((x, y))["loss"], list(m.parameters()))
    real = sparks_module._ff_latent_parts
    try:                                   # the modules themselves, through autograd (the path of any other head)
        sparks_module._ff_latent_parts = lambda *a: None
        torch.manual_seed(1)
        plain = torch.autograd.grad(m.compute_losses((x, y))["loss"], list(m.parameters()))
    finally:
        sparks_module._ff_latent_parts = real
    for (name, _), a, b in zip(m.named_parameters(), fused, plain):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)
    assert sparks_module._ff_latent_parts(SPARKS(small(n_layers=1)), 0) is None      # conventional layers: autograd
    other = SPARKS(small())
    other.blocks[0].ff = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU(), torch.nn.Linear(8, 8))
    assert sparks_module._ff_latent_parts(other, 0) is None                             # another feed-forward: autograd


@pytest.mark.parametrize("native", NATIVE)
def test_evaluation_in_blocks_of_bins_gives_the_numbers_of_one_pass(native):
    # without gradients the encoder runs bptt_chunk bins at a time with the Hebbian state carried over; with
    # gradients all bins at once: the same means, the same final state
    torch.manual_seed(0)
    m = SPARKS(small(n_outputs=2, bptt_chunk=4, native=native)).double().eval()
    x = spikes(B=3, T=15, N=6)
    with torch.no_grad():
        blocks = m(x)
    whole = m(x)                                     # grad enabled: one scan over the 15 bins
    np.testing.assert_allclose(blocks["mu"].numpy(), whole["mu"].detach().numpy(), rtol=1e-12, atol=1e-12)
    for a, b in zip(blocks["state"]["hebbian"], whole["state"]["hebbian"]):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunk_len", [1, 4, 7])
def test_online_chunks_reproduce_the_offline_forward(chunk_len):
    torch.manual_seed(0)
    m = SPARKS(small(n_outputs=2, tau_p=4)).eval()
    x = spikes(B=3, T=19, N=6).float()
    full = m(x)
    state, preds, mus = None, [], []
    for t0 in range(0, 19, chunk_len):
        out = m(x[:, t0:t0 + chunk_len], state=state)
        state = out["state"]
        preds.append(out["prediction"]); mus.append(out["mu"])
    torch.testing.assert_close(torch.cat(mus, 1), full["mu"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat(preds, 1), full["prediction"], atol=1e-5, rtol=1e-5)


def test_online_training_yields_one_loss_per_chunk_and_bounded_graphs():
    torch.manual_seed(0)
    m = SPARKS(small(n_outputs=2, online=True, online_chunk=5)).train()
    x, y = spikes(B=3, T=19, N=6).float(), torch.randn(3, 19, 2)
    losses = list(m.training_step((x, y)))
    assert len(losses) == 4                                       # ceil(19 / 5)
    for l in losses:                                              # each backpropagates on its own
        l["loss"].backward()
    # bounded: what autograd keeps for one online step's backward is the same at every chunk of a trial and for
    # a trial 4x longer (the state is carried detached), while full BPTT keeps more the longer the trial
    kept = {}
    for T in (20, 80):
        x, y = spikes(B=3, T=T, N=6).float(), torch.randn(3, T, 2)
        steps, sizes = m.training_step((x, y)), []
        while True:
            try:
                loss, nbytes = saved_tensor_bytes(lambda: next(steps))
            except StopIteration:
                break
            loss["loss"].backward()
            sizes.append(nbytes)
        assert len(sizes) == T // 5 and max(sizes[1:]) == min(sizes[1:]) and max(sizes) <= sizes[1], sizes
        m.cfg.online = False
        kept[T] = (sizes[1], saved_tensor_bytes(lambda: m.training_step((x, y)))[1])
        m.cfg.online = True
    assert kept[80][0] == kept[20][0] and 0 < kept[20][0] < kept[20][1] < kept[80][1], kept


def test_evaluation_is_deterministic_and_sampling_is_not():
    torch.manual_seed(0)
    m = SPARKS(small(n_outputs=2))
    x = spikes(B=3, T=12, N=6).float()
    a, b = m.predict(x), m.predict(x)
    np.testing.assert_array_equal(a["prediction"], b["prediction"])
    assert a["now"].shape == (3, 12, 2) and a["mu"].shape == (3, 12, 3)
    c = m.predict(x, n_samples=2)
    assert not np.allclose(c["prediction"], a["prediction"])
    assert m.training                                              # predict leaves the mode as it was


def test_sessions_route_to_their_own_blocks_and_share_the_decoder():
    torch.manual_seed(0)
    m = SPARKS(small(n_neurons=[6, 4], n_outputs=[2, 2]))
    x0, x1 = spikes(B=2, T=10, N=6).float(), spikes(B=2, T=10, N=4, seed=1).float()
    y = torch.randn(2, 10, 2)
    m.compute_losses((x1, y), session=1)["loss"].backward()
    assert m.blocks[0].attn.value.grad is None and m.to_latent[0].weight.grad is None   # session 0 untouched
    assert m.blocks[1].attn.value.grad is not None and m.decoder.hidden.weight.grad is not None
    with pytest.raises(ValueError, match="session 0 has 6 neurons, got 4"):
        m(x1, session=0)
    with pytest.raises(KeyError, match="unknown session id 2"):
        m(x0, session=2)
    # adding a session keeps what was learned and gives the newcomer its own block
    before = m.predict(x0)["prediction"]
    sid = m.add_session(5, n_outputs=2)
    assert sid == 2 and m.cfg.n_neurons == [6, 4, 5]
    np.testing.assert_array_equal(m.predict(x0)["prediction"], before)
    x2 = spikes(B=2, T=10, N=5, seed=2).float()
    m.compute_losses((x2, y), session=2)["loss"].backward()
    assert m.predict(x2, session=2)["now"].shape == (2, 10, 2)
    m2 = SPARKS.from_config_dict(dict(vars(m.cfg)))               # the config rebuilds the grown model
    m2.load_state_dict(m.state_dict())


def test_burn_in_bins_carry_no_loss():
    torch.manual_seed(0)
    m = SPARKS(small(n_outputs=1, burn_in=5)).eval()
    x = spikes(B=2, T=12, N=6).float()
    y = torch.zeros(2, 12, 1)
    y2 = y.clone(); y2[:, :5] = 100.0                              # garbage during burn-in is ignored
    assert m.compute_losses((x, y))["loss"].item() == pytest.approx(m.compute_losses((x, y2))["loss"].item())


def test_kl_is_the_analytic_gaussian_kl_summed_over_dims():
    torch.manual_seed(0)
    m = SPARKS(small(n_outputs=1, beta=0.0)).train()
    x = spikes(B=2, T=8, N=6).float()
    out = m(x)
    mu, lv = out["mu"].double(), out["logvar"].double()
    q = torch.distributions.Normal(mu, torch.exp(0.5 * lv))
    ref = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(-1).mean()
    got = m._losses(out, torch.zeros(2, 8, 1))["kl"]
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)


@pytest.mark.parametrize("make,msg", [
    (lambda: torch.ones(2, 5), "expected 3 dims"),
    (lambda: torch.ones(2, 5, 4), "session 0 has 6 neurons, got 4"),
    (lambda: torch.full((2, 5, 6), 2.0), "needs binary spikes"),
    (lambda: torch.full((2, 5, 6), float("nan")), "NaN"),
    (lambda: torch.ones(2, 5, 6, dtype=torch.long), "floating-point"),
])
def test_bad_inputs_name_the_problem(make, msg):
    m = SPARKS(small())
    with pytest.raises(ValueError, match=msg):      # where data enter: check_data (Trainer.fit) and predict
        m.check_data(make())
    with pytest.raises(ValueError, match=msg):
        m.predict(make())


def test_bad_targets_name_the_problem():
    x = spikes(B=2, T=5, N=6).float()
    with pytest.raises(ValueError, match="without n_outputs"):
        SPARKS(small()).compute_losses((x, torch.ones(2, 5, 2)))
    with pytest.raises(ValueError, match="predicts 2 outputs per bin"):
        SPARKS(small(n_outputs=2)).compute_losses((x, torch.ones(2, 5, 3)))
    with pytest.raises(ValueError, match="does not match the input"):
        SPARKS(small(n_outputs=2)).compute_losses((x, torch.ones(2, 4, 2)))
    with pytest.raises(ValueError, match="no target was given"):
        SPARKS(small(n_outputs=2)).compute_losses(x)
    # a target of any shape per bin: (B, T, 2, 3) is 6 outputs
    SPARKS(small(n_outputs=6)).compute_losses((x, torch.ones(2, 5, 2, 3)))
    with pytest.raises(ValueError, match="embed_dim 8 is not divisible by n_heads 3"):
        small(n_heads=3)
    with pytest.raises(KeyError, match="unknown SPARKSConfig field"):
        SPARKS.from_config_dict({"n_neurons": 3, "embed": 4})


def test_init_output_bias_starts_at_the_mean_rate():
    torch.manual_seed(0)
    x = spikes(B=6, T=30, N=6, p=0.2).float()
    for loss in ("bernoulli", "poisson"):
        m = SPARKS(small(loss=loss, tau_f=2)).eval()
        with torch.no_grad():
            m.decoder.out[0].weight.zero_()
        m.init_output_bias(x)
        p = m.predict(x)["prediction"]                                   # probabilities / rates
        np.testing.assert_allclose(p[0, 0, 0], x.reshape(-1, 6).mean(0).clamp(1e-3, 1 - 1e-3).numpy(), rtol=1e-5)
