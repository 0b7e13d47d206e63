""" Reading and writing data files: HDF5 layouts, validation, atomic saves, held-out neuron splits. """

import h5py
import numpy as np
import pytest

from minilatent import synthetic, datafiles, metrics

from conftest import write_h5


def test_h5_round_trip_lfads_torch_layout(tmp_path, lorenz):
    p = tmp_path / "x.h5"
    datafiles.save_h5(p, lorenz)
    back = datafiles.load_h5(p)
    for k, v in lorenz.items():
        np.testing.assert_array_equal(np.asarray(back[k]), np.asarray(v), err_msg=k)
    with h5py.File(p) as f:  # what lfads-torch reads
        for k in datafiles.DATA_KEYS:
            assert f[k].ndim == 3


def test_h5_reads_original_lfads_layout(tmp_path, lorenz):
    p = tmp_path / "orig.h5"
    with h5py.File(p, "w") as f:
        f["train_data"] = lorenz["train_encod_data"].astype(np.int64)
        f["valid_data"] = lorenz["valid_encod_data"].astype(np.int64)
        f["train_truth"] = lorenz["train_truth"]
        f["valid_truth"] = lorenz["valid_truth"]
        f["conversion_factor"] = 100.0
    d = datafiles.load_h5(p)
    np.testing.assert_array_equal(d["train_encod_data"], lorenz["train_encod_data"])
    np.testing.assert_array_equal(d["valid_recon_data"], lorenz["valid_encod_data"])
    assert d["train_encod_data"].dtype == np.float32
    np.testing.assert_allclose(metrics.true_rates(d, "valid"), metrics.true_rates(lorenz, "valid"))


GOOD = np.ones((4, 10, 3), np.float32)


@pytest.mark.parametrize("arrays,exc,msg", [
    (dict(train_encod_data=GOOD), KeyError, "valid_encod_data"),
    (dict(something=GOOD), KeyError, "train_encod_data"),
    (dict(train_data=GOOD[0], valid_data=GOOD), ValueError, "train_encod_data: expected 3 dims"),
    (dict(train_data=np.where(np.arange(3) == 1, np.nan, GOOD), valid_data=GOOD), ValueError, "NaN"),
    (dict(train_data=GOOD, valid_data=-GOOD), ValueError, "must be >= 0"),
    (dict(train_data=GOOD * 0.5, valid_data=GOOD), ValueError, "whole numbers"),
    (dict(train_data=GOOD, valid_data=np.ones((4, 10, 5))), ValueError, "3 neurons but valid_encod_data has 5"),
    (dict(train_data=GOOD.astype("S1"), valid_data=GOOD), ValueError, "dtype"),
    (dict(train_data=GOOD, valid_data=GOOD, train_truth=np.ones((2, 10, 3))), ValueError, "train_truth"),
])
def test_bad_files_give_clear_errors(tmp_path, arrays, exc, msg):
    with pytest.raises(exc, match=msg):
        datafiles.load_h5(write_h5(tmp_path / "bad.h5", **arrays))


def test_missing_and_non_hdf5_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such data file"):
        datafiles.load_h5(tmp_path / "nope.h5")
    p = tmp_path / "text.h5"
    p.write_text("hello")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        datafiles.load_h5(p)


def test_save_is_atomic_and_keeps_the_old_file_on_failure(tmp_path, lorenz):
    p = tmp_path / "keep.h5"
    datafiles.save_h5(p, lorenz)
    before = p.read_bytes()
    with pytest.raises(Exception):
        datafiles.save_h5(p, {"bad": object()})
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["keep.h5"]


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
