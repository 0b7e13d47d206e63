""" Held-out neurons and forward prediction the Neural Latents Benchmark way: co-bps, fp-bps, the split. """
import math

import numpy as np
import pytest
import torch

from minilatent import synthetic, datafiles, metrics
from minilatent.lfads import LFADS, LFADSConfig
from minilatent.trainer import Trainer, TrainerConfig


def direct_bps(rates, counts):
    """ bits/spike written out with loops and math.lgamma: the Poisson log-likelihood of the counts under the
    rates minus that under each neuron's mean count, over the total spikes, in bits """
    B, T, N = counts.shape
    gain, spikes = 0.0, 0.0
    for n in range(N):
        mean = counts[:, :, n].mean()
        for b in range(B):
            for t in range(T):
                k = counts[b, t, n]
                ll = lambda lam: k * math.log(lam) - lam - math.lgamma(k + 1) if lam > 0 else (0.0 if k == 0 else -math.inf)
                gain += ll(rates[b, t, n]) - ll(mean)
                spikes += k
    return gain / (spikes * math.log(2))


def test_regional_bits_per_spike_matches_direct_computation():
    rng = np.random.default_rng(0)
    B, T, T_fp, n_in, n_out = 4, 7, 3, 3, 2
    rates = rng.uniform(0.1, 2.0, size=(B, T + T_fp, n_in + n_out))
    counts = rng.poisson(rates).astype(np.float64)
    got = metrics.regional_bits_per_spike(rates, counts, n_heldin=n_in, n_bins=T)
    assert got["bps"] == pytest.approx(direct_bps(rates[:, :T, :n_in], counts[:, :T, :n_in]), rel=1e-10)
    assert got["co_bps"] == pytest.approx(direct_bps(rates[:, :T, n_in:], counts[:, :T, n_in:]), rel=1e-10)
    assert got["fp_bps"] == pytest.approx(direct_bps(rates[:, T:], counts[:, T:]), rel=1e-10)
    assert metrics.co_bps(rates, counts, n_in, T) == got["co_bps"]
    assert metrics.fp_bps(rates, counts, T) == got["fp_bps"]
    # the true rates beat each neuron's mean (positive), a constant wrong rate loses (negative)
    assert got["co_bps"] > 0 and metrics.co_bps(np.full_like(rates, 5.0), counts, n_in, T) < 0


def test_regions_without_neurons_bins_or_spikes_are_nan():
    x = np.ones((2, 5, 3))
    r = np.ones((2, 5, 3))
    out = metrics.regional_bits_per_spike(r, x, n_heldin=3, n_bins=5)
    assert math.isnan(out["co_bps"]) and math.isnan(out["fp_bps"]) and out["bps"] == pytest.approx(0.0, abs=1e-12)
    x[:, :, 2] = 0
    assert math.isnan(metrics.regional_bits_per_spike(r, x, n_heldin=2, n_bins=5)["co_bps"])
    with pytest.raises(ValueError, match="none held out"):
        metrics.co_bps(r, x, n_heldin=3)
    with pytest.raises(ValueError, match="no forward bins"):
        metrics.fp_bps(r, x, n_bins=5)
    with pytest.raises(ValueError, match="same"):
        metrics.regional_bits_per_spike(r[:, :4], x, 2, 4)


def test_split_heldout_moves_a_seeded_choice_of_neurons_to_the_end_of_recon_data():
    data = synthetic.make_lorenz(n_conditions=4, trials_per_condition=5, n_valid_per_condition=1, n_neurons=12,
                                 n_bins=20)
    a = datafiles.split_heldout(data, 4, seed=3)
    b = datafiles.split_heldout(data, 4, seed=3)
    c = datafiles.split_heldout(data, 4, seed=4)
    np.testing.assert_array_equal(a["heldout_idx"], b["heldout_idx"])
    assert not np.array_equal(a["heldout_idx"], c["heldout_idx"])
    hi, ho = a["heldin_idx"], a["heldout_idx"]
    assert len(ho) == 4 and sorted(np.concatenate([hi, ho]).tolist()) == list(range(12))
    for split in ("train", "valid"):
        x = data[f"{split}_encod_data"]
        np.testing.assert_array_equal(a[f"{split}_encod_data"], x[..., hi])
        np.testing.assert_array_equal(a[f"{split}_recon_data"][..., :8], x[..., hi])
        np.testing.assert_array_equal(a[f"{split}_recon_data"][..., 8:], x[..., ho])
        np.testing.assert_array_equal(a[f"{split}_truth"][..., 8:], data[f"{split}_truth"][..., ho])
    datafiles.validate(a)                                        # a dataset LFADS and the CLI accept
    assert data["train_encod_data"].shape[2] == 12               # the input is not modified


@pytest.mark.parametrize("k,err,msg", [(0, ValueError, "between 1 and 11"), (12, ValueError, "between 1 and 11"),
                                       (2.5, TypeError, "whole number")])
def test_split_heldout_rejects_bad_counts(k, err, msg):
    data = synthetic.make_lorenz(n_conditions=2, trials_per_condition=3, n_valid_per_condition=1, n_neurons=12,
                                 n_bins=10)
    with pytest.raises(err, match=msg):
        datafiles.split_heldout(data, k)
    with pytest.raises(ValueError, match="already"):
        datafiles.split_heldout(datafiles.split_heldout(data, 2), 2)


def test_lfads_predicts_held_out_neurons_it_never_sees():
    # Lorenz neurons share three latents: from 24 held-in neurons LFADS can predict the 6 held-out ones.
    # After a short training the held-out rates beat each neuron's mean (co-bps > 0), below the true rates.
    lorenz = synthetic.make_lorenz(n_conditions=20, trials_per_condition=10, n_valid_per_condition=2, n_bins=50,
                                   base_rate=10.0)
    data = datafiles.split_heldout(lorenz, 6, seed=0)
    train, valid = datafiles.lfads_tensors(data, "train"), datafiles.lfads_tensors(data, "valid")
    torch.manual_seed(0)
    m = LFADS(LFADSConfig(n_neurons=24, n_recon=30, ic_enc_dim=32, gen_dim=32, ic_dim=16, fac_dim=8))
    m.init_readout_bias(train[1])
    Trainer(m, train, valid, TrainerConfig(max_epochs=12, progress=False)).fit()
    rates = m.posterior_average(valid[0], n_samples=5)["output_params"]
    assert rates.shape == valid[1].shape
    got = metrics.co_bps(rates, data["valid_recon_data"], 24)
    ceiling = metrics.co_bps(metrics.true_rates(data, "valid"), data["valid_recon_data"], 24)
    assert 0.1 < got < ceiling                                   # measured: 0.29 after 10 epochs, 0.82 after 25; ceiling 0.98


def test_heldout_figures_report_only_what_the_data_hold(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.poisson(1.0, size=(6, 8, 5)).astype(np.float32)
    d = {"valid_encod_data": x, "valid_recon_data": x}
    assert metrics.heldout_figures(x, d) == {}
    d2 = {"valid_encod_data": x[..., :3], "valid_recon_data": x}
    got = metrics.heldout_figures(np.ones_like(x), d2)
    assert set(got) == {"bps", "co_bps"} and got["co_bps"] == metrics.co_bps(np.ones_like(x), x, 3)
    d3 = {"valid_encod_data": x[:, :6], "valid_recon_data": x}
    assert set(metrics.heldout_figures(np.ones_like(x), d3)) == {"bps", "fp_bps"}


def test_load_dataset_holds_out_neurons_of_an_h5_file(tmp_path):
    data = synthetic.make_lorenz(n_conditions=3, trials_per_condition=4, n_valid_per_condition=1, n_neurons=10,
                                 n_bins=12)
    datafiles.save_h5(tmp_path / "a.h5", data)
    d = datafiles.load_dataset(tmp_path / "a.h5", heldout_neurons=3, seed=2)
    ref = datafiles.split_heldout(datafiles.load_h5(tmp_path / "a.h5"), 3, seed=2)
    np.testing.assert_array_equal(d["heldout_idx"], ref["heldout_idx"])
    np.testing.assert_array_equal(d["train_recon_data"], ref["train_recon_data"])
    with pytest.raises(ValueError, match="NWB recordings only"):
        datafiles.load_dataset(tmp_path / "a.h5", align="move_onset_time")
