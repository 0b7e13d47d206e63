def test_fixed_points_copied_alone_finds_a_closed_form_fixed_point(copied_model):
    out = copied_model("fixed_points.py", """
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
        """)
    assert "fixed point" in out
