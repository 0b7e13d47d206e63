def test_lfads_copied_alone_imports_and_trains_a_step(copied_model):
    out = copied_model("lfads.py", """
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
        """)
    assert "loss" in out
