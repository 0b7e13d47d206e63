
import pytest
import torch
import torch.nn as nn

from minilatent.lfads import LFADS, LFADSConfig
from minilatent.trainer import Trainer, TrainerConfig, keep_freed_memory


def tiny_data(seed=0, B=24):
    g = torch.Generator().manual_seed(seed)
    x = torch.poisson(torch.full((B, 15, 5), 0.6), generator=g)
    return (x, x)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return LFADS(LFADSConfig(n_neurons=5, ic_enc_dim=6, ic_dim=4, gen_dim=8, fac_dim=3, kl_ramp_epochs=3))


def cfg(**kw):
    base = dict(max_epochs=4, batch_size=8, progress=False, seed=1)
    base.update(kw)
    return TrainerConfig(**base)


def same_state(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_gives_identical_training():
    runs = []
    for _ in range(2):
        m = tiny_model()
        t = Trainer(m, tiny_data(), tiny_data(1, 8), cfg())
        h = t.fit()
        runs.append((m.state_dict(), h.column("train_loss")))
    assert same_state(runs[0][0], runs[1][0])
    assert (runs[0][1] == runs[1][1]).all()
    # and a different seed differs
    m = tiny_model()
    Trainer(m, tiny_data(), tiny_data(1, 8), cfg(seed=2)).fit()
    assert not same_state(runs[0][0], m.state_dict())


def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path):
    ck = tmp_path / "ck.pt"
    m_full = tiny_model()
    full = Trainer(m_full, tiny_data(), tiny_data(1, 8), cfg(early_stopping_patience=10))
    full.fit()

    class Crash(Exception):
        pass

    m1 = tiny_model()
    t1 = Trainer(m1, tiny_data(), tiny_data(1, 8), cfg(checkpoint_path=str(ck), early_stopping_patience=10))

    def crash(tr):
        if tr.epoch == 3:
            raise Crash  # dies during epoch 3's bookkeeping: the last checkpoint is from epoch 2
    t1.add_callback("on_epoch_end", crash)
    with pytest.raises(Crash):
        t1.fit()
    assert torch.load(ck, weights_only=True)["epoch"] == 2

    m2 = tiny_model(seed=123)  # different init: everything must come from the checkpoint
    t2 = Trainer(m2, tiny_data(), tiny_data(1, 8), cfg(checkpoint_path=str(ck), early_stopping_patience=10))
    t2.load_checkpoint(ck)
    t2.fit()
    assert t2.epoch == full.epoch == 4
    assert same_state(m_full.state_dict(), m2.state_dict())
    # the checkpoint also holds the weights to use, which the trained model ends up with
    final = torch.load(ck, weights_only=True)["final_model"]
    assert same_state(final, m2.state_dict())
    assert [r["valid_loss"] for r in full.history.rows] == [r["valid_loss"] for r in t2.history.rows]


def test_a_checkpoint_whose_best_weights_were_chosen_by_another_monitor_is_refused_before_anything_loads(tmp_path):
    ck = tmp_path / "ck.pt"
    Trainer(tiny_model(), tiny_data(), tiny_data(1, 8), cfg(checkpoint_path=str(ck))).fit()
    m = tiny_model(seed=5)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    t = Trainer(m, tiny_data(), tiny_data(1, 8), cfg(monitor="recon"))
    with pytest.raises(ValueError, match="kept its best weights by valid_loss, this trainer monitors valid_recon"):
        t.load_checkpoint(ck)
    assert same_state(before, m.state_dict()) and t.epoch == 0   # the best weights of one score never meet the other
    Trainer(m, tiny_data(), tiny_data(1, 8), cfg()).load_checkpoint(ck)   # the same monitor loads


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    ck = tmp_path / "ck.pt"
    t = Trainer(tiny_model(), tiny_data(), None, cfg(max_epochs=1, checkpoint_path=str(ck)))
    t.fit()
    good = ck.read_bytes()

    def broken_save(obj, name, *a, **k):          # torch.save gets the temporary file's name
        with open(name, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        t.save_checkpoint(ck)
    assert ck.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_weight_schedules_reach_the_model_as_ramps():
    seen = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def weight_schedules(self):
            return {"kl": lambda e: min(e / 2.0, 1.0)}

        def training_step(self, batch, weights):
            seen.append(weights["kl"])
            return {"loss": (self.w - batch.mean()) ** 2}

    x = torch.ones(8, 3)
    Trainer(Probe(), x, None, cfg(max_epochs=3, batch_size=4, ema_decay=None)).fit()
    # two batches per epoch: the weight is evaluated at fractional epochs 0, 0.5, 1, 1.5, 2, 2.5
    assert seen == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]


def test_several_losses_per_batch_give_several_optimizer_steps_and_sessions_are_routed():
    calls = []

    class Online(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def training_step(self, batch, weights, session):
            calls.append((session, batch.shape[-1]))
            for t in range(batch.shape[1]):
                yield {"loss": ((self.w - batch[:, t]) ** 2).mean()}

    sessions = [torch.ones(4, 3, 2), torch.ones(6, 3, 7)]
    t = Trainer(Online(), sessions, None, cfg(max_epochs=2, batch_size=4, ema_decay=None))
    t.fit()
    assert t.step == 2 * (1 + 2) * 3  # epochs x batches x time steps
    assert all(n == (2 if s == 0 else 7) for s, n in calls)
    assert {s for s, _ in calls} == {0, 1}


def test_time_budget_early_stopping_and_best_weights():
    m = tiny_model()
    t = Trainer(m, tiny_data(), tiny_data(1, 8), cfg(max_epochs=1000, max_seconds=0.5))
    t.fit()
    assert t.stop_reason == "time budget" and t.epoch < 1000

    m = tiny_model()
    t = Trainer(m, tiny_data(), tiny_data(1, 8), cfg(max_epochs=200, lr=0.3, early_stopping_patience=2,
                                                       lr_schedule="constant"))
    t.fit()
    assert t.stop_reason == "early stopping"
    v = t.history.column("valid_loss")
    assert t.best_score == v.min()
    # the model holds the best weights: validating again reproduces the best epoch's reconstruction
    # (the total loss also depends on the KL weight of the epoch, which has moved on)
    t.ema = None
    best_row = t.history.rows[int(v.argmin())]
    assert t.validate()["recon"] == pytest.approx(best_row["valid_recon"], rel=1e-6)


def test_cosine_schedule_and_bad_config():
    t = Trainer(tiny_model(), tiny_data(), None, cfg(max_epochs=2, lr=1.0, lr_min_factor=0.1))
    total = 2 * t.steps_per_epoch()
    assert t.lr_at(0) == pytest.approx(1.0)
    assert t.lr_at(total // 2) == pytest.approx(0.55)
    assert t.lr_at(total) == pytest.approx(0.1)
    with pytest.raises(KeyError, match="lr_sched"):
        Trainer(tiny_model(), tiny_data(), None, lr_sched="cosine")
    with pytest.raises(ValueError, match="trials"):
        Trainer(tiny_model(), (torch.ones(4, 3, 5), torch.ones(5, 3, 5)), None)
    with pytest.raises(ValueError, match="2 training sessions but 1"):
        Trainer(tiny_model(), [tiny_data(), tiny_data()], [tiny_data()])


def test_nan_loss_stops_with_a_clear_error():
    class Exploding(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def training_step(self, batch, weights):
            return {"loss": self.w.sum() * float("nan")}

    with pytest.raises(FloatingPointError, match="loss became nan"):
        Trainer(Exploding(), torch.ones(4, 2), None, cfg(max_epochs=1, ema_decay=None)).fit()


def test_the_trainer_leaves_the_callers_random_stream_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    m = tiny_model()
    torch.manual_seed(123)
    t = Trainer(m, tiny_data(), None, cfg(max_epochs=1))
    assert torch.equal(torch.rand(3), expected)                            # __init__ drew nothing, reseeded nothing
    torch.manual_seed(123)
    t.fit()
    assert torch.equal(torch.rand(3), expected)                            # fit ran on its own stream


def test_validation_batch_size_does_not_change_the_losses():
    t = Trainer(tiny_model(), tiny_data(), tiny_data(1, 20), cfg(max_epochs=1))
    t.fit()
    a = t.validate()
    t.cfg.valid_batch_size = 3                                            # 20 trials in 7 batches
    b = t.validate()
    assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=1e-5) for k in a)


def test_data_values_are_checked_once_per_fit_not_per_step(monkeypatch):
    calls = []
    orig = LFADS.check_data
    monkeypatch.setattr(LFADS, "check_data", lambda self, b, session=None: calls.append(1) or orig(self, b, session))
    t = Trainer(tiny_model(), tiny_data(), tiny_data(1, 8), cfg(max_epochs=3))
    t.fit()
    assert t.step == 9 and len(calls) == 2                                 # train and valid, once
    bad = tiny_data()[0].clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="train data: tensor 0 contains NaN"):
        Trainer(tiny_model(), (bad, bad), None, cfg()).fit()


def test_a_nan_loss_stops_at_once_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    t = Trainer(tiny_model(), tiny_data(), None, cfg(max_epochs=5, checkpoint_path=str(path)))
    orig, n = LFADS.training_step, [0]

    def step(self, batch, weights, session=None):
        n[0] += 1
        out = orig(self, batch, weights)
        if n[0] == 5:                                                      # epoch 2, second step
            out["loss"] = out["loss"] * float("nan")
        return out
    monkeypatch.setattr(LFADS, "training_step", step)
    with pytest.raises(FloatingPointError, match="epoch 2 \\(step 5\\)"):
        t.fit()
    assert n[0] == 5 and t.saved_epoch == 1
    assert torch.load(path, weights_only=True)["epoch"] == 1


def _faults_of_fresh_tensors(n=6, mib=16):
    """ minor page faults (the kernel's count) of allocating, filling and freeing a mib-MiB tensor n times """
    import resource
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        t = torch.ones(mib * 2**18)
        del t
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not keep_freed_memory(False), reason="no glibc malloc (mallopt) here")
def test_keep_freed_memory_reuses_pages_and_fit_hands_them_back(monkeypatch):
    assert keep_freed_memory(True)
    _faults_of_fresh_tensors(3)                          # the first ones map their pages
    kept = _faults_of_fresh_tensors(8)
    # 8 x 16 MiB = 32,768 pages if each were mapped afresh; with the heap kept, at most an occasional one (4,096 pages
    # each) is, depending on what the process allocated before
    assert kept <= 2 * 4096, kept
    assert keep_freed_memory(False)
    # fit() keeps freed memory while it trains only when asked (TrainerConfig.keep_freed_memory) and restores the
    # defaults after; by default it leaves the allocator alone
    calls = []
    import minilatent.trainer as trainer_module
    real = trainer_module.keep_freed_memory
    monkeypatch.setattr(trainer_module, "keep_freed_memory", lambda keep=True: calls.append(keep) or real(keep))
    torch.manual_seed(0)
    model = LFADS(LFADSConfig(n_neurons=5, gen_dim=8, ic_enc_dim=8, fac_dim=3, ic_dim=4))
    x = torch.poisson(torch.full((8, 10, 5), 2.0))
    Trainer(model, x, None, TrainerConfig(max_epochs=1, batch_size=4, progress=False, keep_freed_memory=True)).fit()
    assert calls == [True, False]
    calls.clear()
    Trainer(model, x, None, TrainerConfig(max_epochs=1, batch_size=4, progress=False)).fit()
    assert calls == []


def test_fit_leaves_the_thread_count_alone_unless_asked(monkeypatch):
    # a library call changes nothing process-wide by default: torch's thread count is never set; asked for one
    # thread, fit() trains on it and hands the caller's setting back
    seen = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: seen.append(n))
    model, x = tiny_model(), tiny_data()
    Trainer(model, x, None, cfg(max_epochs=1)).fit()
    assert seen == []
    before = torch.get_num_threads()
    Trainer(model, x, None, cfg(max_epochs=1, num_threads=1)).fit()
    assert seen == [1, before]


def test_the_default_optimiser_is_torchs_fused_adamw_and_steps_as_its_per_tensor_loop():
    # Trainer's AdamW runs fused on CPU (one kernel for all parameters); the update is AdamW's, so the same steps
    # as torch's per-tensor implementation from the same start, to float32 rounding
    model = tiny_model()
    tr = Trainer(model, tiny_data(), None, cfg(weight_decay=0.01))
    assert tr.optimizer.defaults["fused"] is True
    ref = tiny_model()
    ref.load_state_dict(model.state_dict())
    trained = lambda m: [p for p in m.parameters() if p.requires_grad]
    ref_opt = torch.optim.AdamW(trained(ref), lr=tr.cfg.lr, betas=tr.cfg.betas, weight_decay=0.01, foreach=False)
    torch.manual_seed(3)
    for _ in range(5):
        grads = [torch.randn_like(p) for p in trained(model)]
        for m, opt in ((model, tr.optimizer), (ref, ref_opt)):
            for p, g in zip(trained(m), grads):
                p.grad = g.clone()
            opt.step()
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    moved = sum((a - b).abs().sum() for a, b in zip(model.parameters(), tiny_model().parameters()))
    assert moved > 0                                          # the steps did change the weights
