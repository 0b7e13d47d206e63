""" The dataset suite of benchmarks/lfads_datasets.py: generators hit their stated sizes and rates, and the
public-like file arrives in the original LFADS layout with truth in Hz. """
import numpy as np
import pytest

from minilatent import synthetic, datafiles, metrics


@pytest.mark.parametrize("rate", [1.0, 20.0])
def test_lorenz_rate_has_the_mean_rate_it_was_asked_for(rate):
    d = synthetic.make_lorenz_rate(n_neurons=20, n_trials=200, n_bins=50, mean_rate_hz=rate, seed=3)
    truth = np.concatenate([d["train_truth"], d["valid_truth"]])
    assert truth.mean() == pytest.approx(rate, rel=1e-4)                  # exact by construction
    counts = np.concatenate([d["train_encod_data"], d["valid_encod_data"]])
    se = np.sqrt(rate * 0.01 / counts.size)                               # Poisson: the count mean's std error
    assert abs(counts.mean() - rate * 0.01) < 5 * se
    assert d["train_encod_data"].shape == (160, 50, 20) and d["valid_encod_data"].shape == (40, 50, 20)
    # the rates are the model's: log rate is affine in the true latents
    z = d["train_latents"].reshape(-1, 3)
    logr = np.log(d["train_truth"].reshape(-1, 20))
    A = np.c_[z, np.ones(len(z))]
    resid = logr - A @ np.linalg.lstsq(A, logr, rcond=None)[0]
    assert np.abs(resid).max() < 1e-3


def test_chaotic_rnn_rate_hits_its_rate_and_counts_are_poisson_of_the_truth():
    d = synthetic.make_chaotic_rnn_rate(n_neurons=30, n_trials=200, n_bins=60, mean_rate_hz=4.0, seed=2)
    truth = np.concatenate([d["train_truth"], d["valid_truth"]])
    assert truth.mean() == pytest.approx(4.0, rel=1e-4)
    x, r = d["train_encod_data"].astype(np.float64), d["train_truth"].astype(np.float64) * 0.01
    assert abs(x.sum() - r.sum()) < 5 * np.sqrt(r.sum())
    assert d["train_encod_data"].shape == (160, 60, 30)


def test_suite_spans_the_ranges_of_the_issue():
    rates, neurons, trials, bins = [], [], [], []
    for name, (fn, kw) in synthetic.SUITE.items():
        rates.append(kw["mean_rate_hz"]); neurons.append(kw["n_neurons"])
        trials.append(kw["n_trials"]); bins.append(kw["n_bins"])
        assert all(1.0 <= r <= 20.0 for r in rates) and 20 <= kw["n_neurons"] <= 200
        assert 200 <= kw["n_trials"] <= 2000 and 50 <= kw["n_bins"] <= 200
    assert (min(rates), max(rates)) == (1.0, 20.0) and (min(neurons), max(neurons)) == (20, 200)
    assert (min(trials), max(trials)) == (200, 2000) and (min(bins), max(bins)) == (50, 200)
    assert {fn.__name__ for fn, _ in synthetic.SUITE.values()} == {"make_lorenz_rate", "make_chaotic_rnn_rate"}


def test_public_like_dataset_is_in_the_original_layout_with_truth_in_hz(tmp_path):
    d = synthetic.make_suite("lorenz_sparse")
    assert "conversion_factor" not in d and "train_encod_data" not in d
    assert d["train_data"].shape == (640, 100, 60) and d["valid_data"].shape == (160, 100, 60)
    assert d["train_truth"].mean() == pytest.approx(1.8, rel=0.02)        # Hz, as the public file has it
    datafiles.save_h5(tmp_path / "f.h5", d)
    back = datafiles.load_h5(tmp_path / "f.h5")
    np.testing.assert_array_equal(back["valid_encod_data"], d["valid_data"])
    assert metrics.bits_per_spike(d["valid_truth"] * 0.01, d["valid_data"]) == pytest.approx(0.95, abs=0.02)
    with pytest.raises(KeyError, match="unknown suite dataset"):
        synthetic.make_suite("nope")


def test_affine_latent_r2_recovers_an_affine_map_and_scores_noise_low():
    rng = np.random.default_rng(0)
    lat_fit, lat_test = rng.normal(size=(20, 30, 3)), rng.normal(size=(10, 30, 3))
    M, c = rng.normal(size=(3, 5)), rng.normal(size=5)
    r2 = metrics.affine_latent_r2(lat_fit @ M + c, lat_fit, lat_test @ M + c, lat_test)
    np.testing.assert_allclose(r2, 1.0, atol=1e-10)
    noise = metrics.affine_latent_r2(rng.normal(size=(20, 30, 5)), lat_fit, rng.normal(size=(10, 30, 5)), lat_test)
    assert (noise < 0.05).all()
