""" The copy test: each model file (and the fixed-point finder) copied alone into an empty folder runs in a
fresh interpreter that cannot see the package. One case per file, each with its own snippet and check. """
import pytest

CASES = {
    # test_lfads_copied_alone_imports_and_trains_a_step
    "lfads.py": ("""
        import torch
        import lfads
        assert lfads.__file__.startswith(sys.path[0]), lfads.__file__
        torch.manual_seed(0)
        model = lfads.LFADS(lfads.LFADSConfig(n_neurons=7, gen_dim=8, ic_enc_dim=8, ic_dim=4, fac_dim=3))
        x = torch.poisson(torch.full((5, 12, 7), 0.5))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        before = model.compute_losses((x, x))["loss"].item()
        for _ in range(20):
            loss = model.compute_losses((x, x))["loss"]
            opt.zero_grad(); loss.backward(); opt.step()
        model.eval()
        after = model.compute_losses((x, x))["loss"].item()
        assert after < before, (before, after)
        print('loss', before, after)
        """, "loss"),
    # test_sparks_copied_alone_imports_and_learns
    "sparks.py": ("""
        import torch
        import sparks
        assert sparks.__file__.startswith(sys.path[0]), sparks.__file__
        torch.manual_seed(0)
        cfg = sparks.SPARKSConfig(n_neurons=6, n_outputs=2, embed_dim=8, latent_dim=3, tau_p=2, dec_hidden=8)
        model = sparks.SPARKS(cfg)
        x = (torch.rand(4, 20, 6) < 0.3).float()
        y = torch.stack([x[..., :3].sum(-1), x[..., 3:].sum(-1)], -1)     # a target the spikes determine
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        model.eval(); before = model.compute_losses((x, y))["recon"].item(); model.train()
        for _ in range(30):
            loss = model.compute_losses((x, y))["loss"]
            opt.zero_grad(); loss.backward(); opt.step()
        model.eval()
        after = model.compute_losses((x, y))["recon"].item()
        assert after < 0.5 * before, (before, after)
        print('loss', before, after)
        """, "loss"),
    # test_circuits_copied_alone_builds_simulates_and_checks_theory
    "circuits.py": ("""
        import numpy as np
        import torch
        import circuits
        assert circuits.__file__.startswith(sys.path[0]), circuits.__file__
        cfg = circuits.CircuitConfig(sizes=(400, 400), K=50, gain=0.5, seed=0)
        net = circuits.Circuit(cfg)
        res = net.simulate(0.2, M0=torch.tensor([0.1, 0.15]), spikes=True, record_every=10)
        assert res["rates"].shape == (2, 20, 800) and res["spikes"].shape == (2, 20, 800)
        m, q = circuits.mean_field_threshold_linear(cfg.J, cfg.J0, 0.15, net.K, net.sizes, cfg.gain)
        err = np.abs(res["pop_rates"][1, -1].numpy() - m) / m
        assert err.max() < 0.1, err
        tc, A = circuits.ring_bump(-2.0, 4.0, 1.0)
        assert abs(np.degrees(tc) - 90.0) < 1e-6
        print('rates', res["pop_rates"][1, -1].tolist(), 'mean field', m.tolist())
        """, "mean field"),
    # test_fixed_points_copied_alone_finds_a_closed_form_fixed_point
    "fixed_points.py": ("""
        import math
        import torch
        import fixed_points
        assert fixed_points.__file__.startswith(sys.path[0]), fixed_points.__file__
        # h -> rho R(theta) h + b, a contracting rotation: one fixed point h* = (I - rho R)^-1 b, eigenvalues
        # rho exp(+-i theta), stable for rho < 1
        rho, th = 0.9, 0.3
        R = torch.tensor([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]], dtype=torch.float64)
        b = torch.tensor([0.5, -1.0], dtype=torch.float64)
        step = lambda h: rho * h @ R.T + b
        starts = torch.randn(20, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
        r = fixed_points.find_fixed_points(step, starts)
        h_star = torch.linalg.solve(torch.eye(2, dtype=torch.float64) - rho * R, b)
        assert r["points"].shape == (1, 2) and torch.allclose(r["points"][0], h_star, atol=1e-12), r["points"]
        ev = sorted(r["eigvals"][0].tolist(), key=lambda z: z.imag)
        assert abs(ev[0] - rho * complex(math.cos(th), -math.sin(th))) < 1e-12
        assert abs(ev[1] - rho * complex(math.cos(th), math.sin(th))) < 1e-12
        assert bool(r["stable"][0]) and len(r["slow_points"]) == 0
        # the ghost of a saddle-node, x -> x + 0.1 (1e-3 + x^2): slow, not fixed
        ghost = fixed_points.find_fixed_points(lambda x: x + 0.1 * (1e-3 + x ** 2),
                                               torch.linspace(-1, 1, 11, dtype=torch.float64)[:, None])
        assert len(ghost["points"]) == 0 and len(ghost["slow_points"]) == 1
        print('fixed point', r["points"][0].tolist())
        """, "fixed point"),
}


@pytest.mark.parametrize("filename", list(CASES), ids=[
    "lfads_copied_alone_imports_and_trains_a_step", "sparks_copied_alone_imports_and_learns",
    "circuits_copied_alone_builds_simulates_and_checks_theory", "fixed_points_copied_alone_finds_a_closed_form_fixed_point"])
def test_a_model_file_copied_alone_runs(copied_model, filename):
    snippet, said = CASES[filename]
    out = copied_model(filename, snippet)
    assert said in out


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
