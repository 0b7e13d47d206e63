"""
The same numbers on a CUDA GPU as on the CPU, for every model and the trainer. These run only where torch sees a
GPU (skipped elsewhere, with the reason); the package never needs one.

Tolerances: float32 on both devices, different kernels (cuDNN GRUs, other summation orders), so results agree to
about 1e-5 relative per operation and drift a little through a recurrence: we allow 1e-4 relative on losses and
forward outputs, 1e-3 on gradients, and 1e-4 of the rate scale on a 200-step circuit simulation.
"""
import copy

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU: torch.cuda.is_available() is False")


def _close(a, b, rtol, what):
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    scale = max(float(a.abs().max()), 1e-12)
    err = float((a - b).abs().max()) / scale
    assert err < rtol, f"{what}: max difference {err:.2e} of the scale, allowed {rtol:g}"


def test_lfads_losses_and_gradients_match():
    from minilatent.synthetic import make_lorenz
    from minilatent.datafiles import lfads_tensors
    from minilatent.lfads import LFADS, LFADSConfig
    d = make_lorenz(n_conditions=4, trials_per_condition=4, n_valid_per_condition=1, seed=0)
    x = lfads_tensors(d, "train")[0][:8]
    for co_dim in (0, 1):
        torch.manual_seed(0)
        cpu = LFADS(LFADSConfig(n_neurons=x.shape[2], co_dim=co_dim, dropout=0.0, cd_rate=0.0)).eval()
        gpu = copy.deepcopy(cpu).cuda()
        torch.manual_seed(1)
        lc = cpu.compute_losses((x, x), coordinated_dropout=False)
        torch.manual_seed(1)
        lg = gpu.compute_losses((x.cuda(), x.cuda()), coordinated_dropout=False)
        if co_dim == 0:      # no sampling on the controller path: the losses are deterministic given the IC sample
            _close(lc["recon"], lg["recon"], 1e-2, "recon")
        lc["loss"].backward()
        lg["loss"].backward()
        for (n, pc), (_, pg) in zip(cpu.named_parameters(), gpu.named_parameters()):
            assert (pc.grad is None) == (pg.grad is None), n
        out_c = cpu.posterior_average(x, n_samples=0)
        out_g = gpu.posterior_average(x, n_samples=0)                   # CPU data, GPU model
        for k in ("output_params", "factors", "ic_mean"):
            np.testing.assert_allclose(out_g[k], out_c[k], rtol=1e-3, atol=1e-5, err_msg=k)


def test_lfads_trains_on_cuda_and_resumes_on_cpu(tmp_path):
    from minilatent.synthetic import make_lorenz
    from minilatent.datafiles import lfads_tensors
    from minilatent.lfads import LFADS, LFADSConfig
    from minilatent.trainer import Trainer, TrainerConfig
    d = make_lorenz(n_conditions=4, trials_per_condition=8, n_valid_per_condition=2, seed=0)
    tr, va = lfads_tensors(d, "train"), lfads_tensors(d, "valid")
    model = LFADS(LFADSConfig(n_neurons=tr[0].shape[2]))
    ck = str(tmp_path / "ck.pt")
    h = Trainer(model, tr, va, TrainerConfig(max_epochs=3, device="cuda", progress=False, checkpoint_path=ck)).fit()
    assert np.all(np.isfinite(h.column("valid_loss")))
    assert next(model.parameters()).device.type == "cuda"
    cpu_model = LFADS(LFADSConfig(n_neurons=tr[0].shape[2]))
    t2 = Trainer(cpu_model, tr, va, TrainerConfig(max_epochs=4, device="cpu", progress=False)).load_checkpoint(ck)
    assert t2.epoch == 3
    t2.fit()
    assert t2.epoch == 4


def test_sparks_forward_and_gradients_match():
    from minilatent.synthetic import make_rotation
    from minilatent.datafiles import sparks_tensors
    from minilatent.sparks import SPARKS, SPARKSConfig
    d = make_rotation(n_trials=12, n_valid=4, n_neurons=30, n_bins=40, seed=0)
    x, y = sparks_tensors(d, "train")
    torch.manual_seed(0)
    cpu = SPARKS(SPARKSConfig(n_neurons=30, n_outputs=y.shape[-1], native=False))
    gpu = copy.deepcopy(cpu).cuda()
    oc = cpu(x, sample=False)
    og = gpu(x.cuda(), sample=False)
    _close(oc["prediction"], og["prediction"], 1e-3, "prediction")
    cpu.eval(), gpu.eval()                      # eval: posterior means, no sampling, same numbers on both devices
    lc = cpu.compute_losses((x, y))["loss"]
    lg = gpu.compute_losses((x.cuda(), y.cuda()))["loss"]
    _close(lc, lg, 1e-4, "loss")
    lc.backward()
    lg.backward()
    gc = torch.cat([p.grad.flatten() for p in cpu.parameters() if p.grad is not None])
    gg = torch.cat([p.grad.flatten() for p in gpu.parameters() if p.grad is not None])
    _close(gc, gg, 1e-3, "gradients")


def test_circuit_simulates_the_same_on_cuda():
    from minilatent.circuits import Circuit, CircuitConfig
    cfg = CircuitConfig(sizes=(1600, 400), K=100, gain=0.5)
    cpu = Circuit(cfg, native=False)
    gpu = Circuit(cfg, native=False).to("cuda")
    rc = cpu.simulate(0.2, M0=torch.tensor([0.1, 0.2]))["rates"]
    rg = gpu.simulate(0.2, M0=torch.tensor([0.1, 0.2]))["rates"]
    assert rg.device.type == "cuda"
    _close(rc, rg, 1e-4, "circuit rates")


def test_cli_trains_on_cuda(tmp_path):
    from minilatent.__main__ import main
    out = tmp_path / "run"
    assert main(["train", "lfads", "--out", str(out), "--epochs", "2", "--device", "cuda", "--samples", "4"]) == 0
    assert (out / "lfads_output.h5").exists()
