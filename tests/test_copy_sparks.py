def test_sparks_copied_alone_imports_and_learns(copied_model):
    out = copied_model("sparks.py", """
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
        """)
    assert "loss" in out
