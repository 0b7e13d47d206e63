"""find_fixed_points against systems whose fixed points, stability and slow points are known in closed form."""
import math

import numpy as np
import pytest
import torch

from minilatent.fixed_points import find_fixed_points, jacobians, newton_distance
from minilatent.lfads import LFADS, LFADSConfig, lfads_generator_step, lfads_factors

D64 = torch.float64


def rand_starts(B, H, scale, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (2 * torch.rand(B, H, generator=g, dtype=D64) - 1) * scale


def test_affine_map_one_exact_point():
    g = torch.Generator().manual_seed(1)
    H = 6
    for radius, stable in ((0.8, True), (1.3, False)):
        A = torch.randn(H, H, generator=g, dtype=D64)
        A = radius * A / torch.linalg.eigvals(A).abs().max()                # spectral radius exactly `radius`
        b = torch.randn(H, generator=g, dtype=D64)
        step = lambda h: h @ A.T + b
        r = find_fixed_points(step, rand_starts(64, H, 3.0), unique_tol=1e-6)
        h_star = torch.linalg.solve(torch.eye(H, dtype=D64) - A, b)
        assert r["points"].shape == (1, H)
        assert torch.allclose(r["points"][0], h_star, atol=1e-10)
        assert r["q"][0] < 1e-20
        ev = np.sort_complex(torch.linalg.eigvals(A).numpy())
        np.testing.assert_allclose(np.sort_complex(r["eigvals"][0].numpy()), ev, atol=1e-9)
        assert bool(r["stable"][0]) is stable
        assert abs(r["eigvals"][0].abs()[0] - radius) < 1e-9              # sorted: largest |lambda| first
        assert len(r["slow_points"]) == 0


def test_affine_map_far_away_and_large_batch():
    # the fixed point of h -> 0.5 h + b is 2 b: far from the starts when b is large (the trust region is relative)
    H = 4
    b = torch.full((H,), 500.0, dtype=D64)
    r = find_fixed_points(lambda h: 0.5 * h + b, rand_starts(2000, H, 1.0))
    assert r["points"].shape == (1, H) and torch.allclose(r["points"][0], 2 * b, rtol=1e-12)
    assert bool(r["stable"][0])


@pytest.mark.parametrize("H,a", [(2, 1.5), (3, 2.0), (5, 2.0)])
def test_tanh_diagonal_three_to_the_H_points(H, a):
    # h -> tanh(a h) elementwise: each coordinate sits at 0 (unstable: slope a > 1) or at +-x*, x* = tanh(a x*)
    # (stable: slope a (1 - x*^2) < 1). So 3^H fixed points, 2^H of them stable (all coordinates nonzero).
    x = 1.0
    for _ in range(200):
        x = math.tanh(a * x)
    step = lambda h: torch.tanh(a * h)
    r = find_fixed_points(step, rand_starts(3000, H, 1.5, seed=H))
    pts = r["points"].numpy()
    assert len(pts) == 3 ** H
    levels = np.array([-x, 0.0, x])
    assert np.abs(pts[..., None] - levels).min(-1).max() < 1e-10          # every coordinate on a known level
    assert len({tuple(np.round(p, 6)) for p in pts}) == 3 ** H
    nonzero = (np.abs(pts) > 0.5 * x).all(1)
    assert r["stable"].sum().item() == 2 ** H
    np.testing.assert_array_equal(r["stable"].numpy(), nonzero)
    # eigenvalues: a (1 - h_i^2) per coordinate (the Jacobian is diagonal)
    for p, ev in zip(pts, r["eigvals"].numpy()):
        np.testing.assert_allclose(np.sort(ev.real), np.sort(a * (1 - p ** 2)), atol=1e-9)
        assert np.abs(ev.imag).max() < 1e-12


def test_gru_cell_with_a_fixed_point_built_by_hand():
    # n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) n + z h: h* is fixed where n(h*) = h*, so choose h*
    # and set b_in = atanh(h*) - W_in x - r(h*) (W_hn h* + b_hn). Small recurrent weights make the map a
    # contraction: one fixed point, stable.
    g = torch.Generator().manual_seed(5)
    H, I = 8, 3
    cell = torch.nn.GRUCell(I, H).double()
    with torch.no_grad():
        for p in cell.parameters():
            p.copy_(0.2 / math.sqrt(H) * torch.randn(p.shape, generator=g, dtype=D64))
        x = torch.randn(1, I, generator=g, dtype=D64)
        h_star = 0.8 * (2 * torch.rand(1, H, generator=g, dtype=D64) - 1)
        W_ir, W_iz, W_in = cell.weight_ih.chunk(3)
        W_hr, W_hz, W_hn = cell.weight_hh.chunk(3)
        b_ir, b_iz, b_in = cell.bias_ih.chunk(3)
        b_hr, b_hz, b_hn = cell.bias_hh.chunk(3)
        r_ = torch.sigmoid(x @ W_ir.T + b_ir + h_star @ W_hr.T + b_hr)
        new_b_in = torch.atanh(h_star) - x @ W_in.T - r_ * (h_star @ W_hn.T + b_hn)
        cell.bias_ih[2 * H:] = new_b_in[0]
    step = lambda h: cell(x.expand(h.shape[0], -1), h)
    assert torch.allclose(step(h_star), h_star, atol=1e-12)               # the construction is right
    r = find_fixed_points(step, rand_starts(50, H, 1.0), noise=0.1)
    assert r["points"].shape == (1, H)
    assert torch.allclose(r["points"], h_star, atol=1e-10)
    assert bool(r["stable"][0])
    jac = torch.autograd.functional.jacobian(lambda h: cell(x, h[None])[0], h_star[0])   # a separate autograd route
    np.testing.assert_allclose(np.sort_complex(r["eigvals"][0].numpy()),
                               np.sort_complex(torch.linalg.eigvals(jac).numpy()), atol=1e-10)


def test_slow_point_is_reported_as_slow():
    # the ghost of a saddle-node: h0 <- h0 + eps + h0^2 never stops (no root), but is slowest at h0 = 0, where
    # q = eps^2 / 2; h1 <- 0.5 h1 decays. Eigenvalues there: 1 and 0.5.
    eps = 1e-3
    step = lambda h: torch.stack([h[:, 0] + eps + h[:, 0] ** 2, 0.5 * h[:, 1]], 1)
    r = find_fixed_points(step, rand_starts(40, 2, 0.5), tol=1e-8, slow_tol=1e-5)
    assert len(r["points"]) == 0                                            # no fixed point ...
    assert r["slow_points"].shape == (1, 2)                                 # ... one slow point
    assert torch.allclose(r["slow_points"][0], torch.zeros(2, dtype=D64), atol=1e-6)
    assert abs(r["slow_q"][0].item() - eps ** 2 / 2) < 1e-12
    np.testing.assert_allclose(np.sort(r["slow_eigvals"][0].real.numpy()), [0.5, 1.0], atol=1e-6)
    # with eps = 0 the ghost becomes a fixed point (a double root: Newton converges only linearly there), marginal
    step0 = lambda h: torch.stack([h[:, 0] + h[:, 0] ** 2, 0.5 * h[:, 1]], 1)
    r0 = find_fixed_points(step0, rand_starts(40, 2, 0.5), tol=1e-8, unique_tol=1e-2)
    assert len(r0["points"]) == 1 and r0["points"][0].abs().max() < 1e-3
    assert abs(r0["eigvals"][0].abs()[0].item() - 1) < 1e-3


def test_line_attractor_of_a_linear_map():
    # A = V diag(1, 0.5, 0.2) V^-1: every multiple of v1 is a fixed point, with eigenvalues 1, 0.5, 0.2
    g = torch.Generator().manual_seed(2)
    V = torch.randn(3, 3, generator=g, dtype=D64)
    A = V @ torch.diag(torch.tensor([1.0, 0.5, 0.2], dtype=D64)) @ torch.linalg.inv(V)
    step = lambda h: h @ A.T
    r = find_fixed_points(step, rand_starts(100, 3, 2.0), unique_tol=1e-3)
    pts = r["points"]
    v1 = V[:, 0] / V[:, 0].norm()
    off_line = pts - (pts @ v1)[:, None] * v1
    assert len(pts) > 50                                                    # a continuum: (nearly) every start its own point
    assert off_line.abs().max() < 1e-8
    assert (pts @ v1).max() - (pts @ v1).min() > 1.0                        # spread along the line
    np.testing.assert_allclose(r["eigvals"].abs().numpy(), np.tile([1.0, 0.5, 0.2], (len(pts), 1)), atol=1e-8)
    assert not r["stable"].any()                                            # |lambda| = 1 is not < 1


def test_ring_attractor():
    # radial contraction onto the unit circle, angle unchanged: h -> h + 0.5 (1 - |h|) h. Every point of the circle
    # is fixed; eigenvalues 1 (along the ring) and 0.5 (across it). The origin is fixed too, unstable (1.5, 1.5).
    step = lambda h: h + 0.5 * (1 - h.norm(dim=1, keepdim=True)) * h
    ang = torch.linspace(0, 2 * math.pi, 37, dtype=D64)[:-1]
    h0 = torch.stack([torch.cos(ang), torch.sin(ang)], 1) * torch.linspace(0.6, 2.0, 36, dtype=D64)[:, None]
    origin = find_fixed_points(step, torch.tensor([[0.05, -0.02]], dtype=D64))
    assert origin["points"].abs().max() < 1e-12 and not origin["stable"][0]
    np.testing.assert_allclose(origin["eigvals"][0].real.numpy(), [1.5, 1.5], atol=1e-9)
    r = find_fixed_points(step, h0, unique_tol=1e-3)
    assert len(r["points"]) == 36
    assert (r["points"].norm(dim=1) - 1).abs().max() < 1e-9
    found = torch.atan2(r["points"][:, 1], r["points"][:, 0]) % (2 * math.pi)
    assert torch.allclose(torch.sort(found).values, ang, atol=1e-9)        # each start keeps its angle
    np.testing.assert_allclose(r["eigvals"].abs().numpy(), np.tile([1.0, 0.5], (36, 1)), atol=1e-8)


def test_nearly_continuous_ring_slow_points():
    # the ring above with a small tangential flow eps sin(2 theta): on the circle q = eps^2 sin^2(2 theta) / 2, zero
    # only at theta = 0, 90, 180, 270 deg (stable along the ring at 90 and 270: slope 1 + 2 eps cos(2 theta) < 1).
    # Polishing finds exactly those four; stopping early (stop_q) leaves slow points spread along the ring.
    eps = 1e-3

    def step(h):
        r = h.norm(dim=1, keepdim=True)
        th = torch.atan2(h[:, 1], h[:, 0])[:, None]
        tangent = torch.cat([-torch.sin(th), torch.cos(th)], 1)
        return h + 0.5 * (1 - r) * h + eps * torch.sin(2 * th) * tangent

    ang = torch.linspace(0, 2 * math.pi, 73, dtype=D64)[:-1] + 0.01
    h0 = torch.stack([torch.cos(ang), torch.sin(ang)], 1) * 1.2
    full = find_fixed_points(step, h0, max_iters=500)
    th = torch.atan2(full["points"][:, 1], full["points"][:, 0]) % (2 * math.pi)
    assert len(full["points"]) == 4 and len(full["slow_points"]) == 0
    assert torch.allclose(torch.sort(th).values, torch.tensor([0, 0.5, 1, 1.5], dtype=D64) * math.pi, atol=1e-8)
    np.testing.assert_array_equal(full["stable"][torch.argsort(th)].numpy(), [False, True, False, True])
    early = find_fixed_points(step, h0, tol=1e-12, slow_tol=1e-6, stop_q=1e-8)
    sp = early["slow_points"]
    assert len(sp) > 40                                                    # spread along the ring ...
    assert (sp.norm(dim=1) - 1).abs().max() < 1e-3                         # ... on it (to sqrt(2 stop_q) / 0.5)
    assert (early["slow_q"] < 1e-6).all() and (early["slow_q"] >= 1e-12).all()
    ev = early["slow_eigvals"].abs().numpy()
    assert np.all(np.abs(ev[:, 0] - 1) < 3e-3) and np.all(np.abs(ev[:, 1] - 0.5) < 1e-3)   # one |lambda| near 1


def test_flat_saturated_gate_is_a_slow_point_not_a_fixed_point():
    # issue 21: h -> s h + (1 - s) tanh(h / 2) with s = sigmoid(-3 h), a gate that shuts for h << 0 and freezes the
    # state. The only root is h = 0 (slope s(0) + (1 - s(0)) / 2 = 0.75). For h << 0 the residual
    # r = sigmoid(3 h) (tanh(h / 2) - h) and its slope both fall like e^{3h}: the minimiser drives q to ~2e-16 near
    # h = -6.5 with lambda = 1 + 5e-8, a flat stretch and no root. Newton puts the root |r / r'| ~ 1/3 away there.
    step = lambda h: torch.sigmoid(-3 * h) * h + (1 - torch.sigmoid(-3 * h)) * torch.tanh(0.5 * h)
    h0 = torch.tensor([[-1.5], [-1.0], [-0.5], [0.5], [1.0]], dtype=D64)
    r = find_fixed_points(step, h0)
    assert r["points"].shape == (1, 1) and r["points"].abs().max() < 1e-12
    assert abs(r["eigvals"][0, 0].real.item() - 0.75) < 1e-9 and bool(r["stable"][0])
    assert r["slow_points"].shape == (1, 1) and r["slow_points"][0, 0] < -5        # the flat stretch: slow ...
    assert r["slow_q"][0] < 1e-8                                                    # ... though q is below tol
    h = r["slow_points"][0, 0]
    g, u = torch.sigmoid(3 * h), torch.tanh(h / 2) - h                             # r = g u, r' = 3 g (1 - g) u + g u'
    d_exact = abs(u / (3 * (1 - g) * u + 0.5 / torch.cosh(h / 2) ** 2 - 1))
    assert abs(r["slow_dist"][0] / d_exact - 1) < 1e-6 and 0.3 < d_exact < 0.4
    old = find_fixed_points(step, h0, dist_tol=math.inf)                           # q alone, the old criterion:
    assert len(old["points"]) == 2                                                  # the flat stretch counted fixed


def test_saddle_node_ghost_is_slow_and_its_unfolding_has_two_roots():
    # x -> x + 0.1 (c + x^2). c = 1e-3: no root; the flow is slowest at x = 0 with q = (0.1 c)^2 / 2 = 5e-9, below
    # the default tol: the ghost of a saddle-node, slow and not fixed (J - I = 0.2 x vanishes there, r does not).
    # c = -1e-3: two roots +-sqrt(1e-3) with slopes 1 +- 0.2 sqrt(1e-3), the negative one stable. (No start at x = 0,
    # where q has a local maximum between the roots: a start there cannot move.)
    h0 = torch.linspace(-1, 1, 20, dtype=D64)[:, None]
    ghost = find_fixed_points(lambda x: x + 0.1 * (1e-3 + x ** 2), h0)
    assert len(ghost["points"]) == 0
    assert ghost["slow_points"].shape == (1, 1) and ghost["slow_points"].abs().max() < 1e-6
    assert abs(ghost["slow_q"][0].item() - 5e-9) < 1e-15 and ghost["slow_dist"][0] > 1e3
    assert abs(ghost["slow_eigvals"][0, 0].real.item() - 1) < 1e-6
    roots = find_fixed_points(lambda x: x + 0.1 * (-1e-3 + x ** 2), h0)
    order = torch.argsort(roots["points"][:, 0])
    c = math.sqrt(1e-3)
    assert len(roots["slow_points"]) == 0
    assert torch.allclose(roots["points"][order, 0], torch.tensor([-c, c], dtype=D64), atol=1e-12)
    np.testing.assert_allclose(roots["eigvals"][order, 0].real.numpy(), [1 - 0.2 * c, 1 + 0.2 * c], atol=1e-12)
    assert roots["stable"][order].tolist() == [True, False]
    assert (roots["dist"] < 1e-12).all()


def test_gru_fixed_points_lie_in_the_unit_cube_and_its_frozen_corners_are_slow():
    # a GRU fixed point satisfies h' - h = (1 - z)(n - h) = 0 with z < 1, so h* = n(h*) lies in (-1, 1)^H: nothing
    # outside the cube is fixed. A GRU with strong recurrent weights has regions where update gates are shut (z ~ 1)
    # and the state is frozen wherever it is; the minimiser walks out into them (|h| up to ~10) with q below tol.
    g = torch.Generator().manual_seed(0)
    H = 8
    cell = torch.nn.GRUCell(1, H).double()
    with torch.no_grad():
        cell.weight_hh.copy_(6 / math.sqrt(H) * torch.randn(3 * H, H, generator=g, dtype=D64))
        cell.bias_ih.copy_(torch.randn(3 * H, generator=g, dtype=D64))
        cell.bias_hh.zero_()
    step = lambda h: cell(torch.zeros(h.shape[0], 1, dtype=D64), h)
    starts = 2 * torch.rand(200, H, generator=g, dtype=D64) - 1
    r = find_fixed_points(step, starts)
    assert len(r["points"]) >= 1 and r["points"].abs().max() < 1                    # inside the cube ...
    with torch.no_grad():
        assert torch.allclose(step(r["points"]), r["points"], atol=1e-13, rtol=0)  # ... and roots
    outside = r["slow_points"].abs().amax(1) > 1
    assert outside.sum() > 100 and (r["slow_q"][outside] < 1e-8).sum() > 100       # frozen corners: slow
    old = find_fixed_points(step, starts, dist_tol=math.inf)                        # q alone calls them fixed
    assert (old["points"].abs().amax(1) > 1).sum() > 100


def test_newton_distance_closed_forms():
    # for an affine map F(h) = A h + b Newton is exact: (A - I)^-1 (F(h) - h) = h - h*, so d = ||h - h*||
    g = torch.Generator().manual_seed(3)
    H = 5
    A = 0.7 * torch.randn(H, H, generator=g, dtype=D64) / math.sqrt(H)
    b = torch.randn(H, generator=g, dtype=D64)
    step = lambda h: h @ A.T + b
    h = rand_starts(30, H, 4.0)
    h_star = torch.linalg.solve(torch.eye(H, dtype=D64) - A, b)
    d = newton_distance(step(h) - h, jacobians(step, h), torch.zeros(30, dtype=D64))
    assert torch.allclose(d, (h - h_star).norm(dim=1), rtol=1e-10)
    # J - I = diag(0, -0.5), singular: a residual in its range has a finite distance, one outside it an infinite one,
    # one outside it at round-off (below noise) none
    jac = torch.diag(torch.tensor([1.0, 0.5], dtype=D64)).expand(3, 2, 2)
    r = torch.tensor([[0.0, 1.0], [1e-3, 1.0], [1e-17, 1.0]], dtype=D64)
    d = newton_distance(r, jac, torch.full((3,), 1e-15, dtype=D64))
    assert abs(d[0].item() - 2) < 1e-12 and math.isinf(d[1].item()) and abs(d[2].item() - 2) < 1e-12


def test_lfads_generator_step_is_the_model_update():
    torch.manual_seed(0)
    model = LFADS(LFADSConfig(n_neurons=12, gen_dim=16, fac_dim=4)).eval()
    x = torch.poisson(torch.ones(5, 20, 12))
    out = model(x)
    step = lfads_generator_step(model, dtype=torch.float32)
    g0, g = out["gen_init"], out["gen_states"]
    h, hs = g0, []
    for t in range(20):
        h = step(h)
        hs.append(h)
    assert torch.allclose(torch.stack(hs, 1), g, atol=1e-5)
    assert torch.allclose(lfads_factors(model, g), out["factors"], atol=1e-6)
    # with a controller the generator's input is the inferred input: a constant u enters through weight_ih
    mc = LFADS(LFADSConfig(n_neurons=12, gen_dim=16, fac_dim=4, co_dim=2)).eval()
    u = torch.tensor([0.3, -0.2])
    s = lfads_generator_step(mc, inputs=u, dtype=torch.float32)
    ref = torch.gru_cell(u.expand(5, 2), g0, mc.gen.weight_ih_l0, mc.gen.weight_hh_l0, mc.gen.bias_ih_l0,
                         mc.gen.bias_hh_l0)
    assert torch.allclose(s(g0), ref, atol=1e-6)
    r = find_fixed_points(lfads_generator_step(model), g.reshape(-1, 16).double()[:40])
    assert len(r["points"]) >= 1 and (r["q"] < 1e-8).all()


@pytest.mark.parametrize("kw,match", [
    (dict(h0=torch.zeros(4)), "h0"), (dict(h0=torch.zeros(4, 2, dtype=torch.long)), "h0"),
    (dict(h0=torch.full((2, 2), float("nan"))), "h0"), (dict(tol=0.0), "tol"), (dict(tol=1e-3, slow_tol=1e-4), "slow_tol"),
    (dict(max_iters=0), "max_iters"), (dict(dist_tol=0.0), "dist_tol"), (dict(unique_tol=-1.0), "unique_tol"), (dict(noise=-0.1), "noise"), (dict(stop_q=-1.0), "stop_q"),
    (dict(step=lambda h: h[:, :1]), "step must return"),
])
def test_bad_input(kw, match):
    args = dict(step=lambda h: 0.5 * h, h0=torch.zeros(4, 2))
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        find_fixed_points(**args)
    with pytest.raises(TypeError, match="step"):
        find_fixed_points("not a function", torch.zeros(4, 2))
    with pytest.raises(ValueError, match="inputs"):
        lfads_generator_step(LFADS(LFADSConfig(n_neurons=3, co_dim=1)), inputs=[1.0, 2.0])
