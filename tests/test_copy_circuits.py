def test_circuits_copied_alone_builds_simulates_and_checks_theory(copied_model):
    out = copied_model("circuits.py", """
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
        """)
    assert "mean field" in out
