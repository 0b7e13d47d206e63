""" Reading and writing data files: HDF5 layouts, validation, atomic saves, held-out neuron splits. """

import os

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


# -----------------------------------------------------------------------------
# trials from a continuous recording: synthetic centre-out hand paths with known onsets and directions


def centre_out_session(dt, n_reaches=24, seed=0, noise=0.004, amp=0.08, dur=0.5):
    """ a hand that rests at (0, 0), reaches to one of 8 targets (amp m, minimum-jerk over dur s, direction
    jittered by up to 15 degrees), holds, returns the same way and rests again. Returns positions and velocities
    sampled at the bin starts, the true start times (s), the true angles and the targets. """
    rng = np.random.default_rng(seed)
    t_start, angles, targets, segs, t = [], [], [], [], 1.0
    for i in range(n_reaches):
        k = int(rng.integers(8))
        a = k * np.pi / 4 + np.radians(rng.uniform(-15, 15))
        t_start.append(t)
        angles.append(a)
        targets.append(k)
        segs += [(t, np.zeros(2), amp * np.array([np.cos(a), np.sin(a)]))]
        t += dur + rng.uniform(0.6, 1.0)                                  # hold at the target
        segs += [(t, amp * np.array([np.cos(a), np.sin(a)]), np.zeros(2))]
        t += dur + rng.uniform(0.8, 1.5)                                  # rest at the centre
    time = np.arange(0, t + 1.0, dt)
    pos, vel = np.zeros((len(time), 2)), np.zeros((len(time), 2))
    for t0, p0, p1 in segs:                                               # minimum jerk from p0 to p1
        tau = np.clip((time - t0) / dur, 0, 1)
        inside = (time >= t0) & (time <= t0 + dur)
        pos[time >= t0] = p0 + (p1 - p0) * (10 * tau ** 3 - 15 * tau ** 4 + 6 * tau ** 5)[time >= t0, None]
        vel[inside] = (p1 - p0) * (30 * (tau ** 2 - 2 * tau ** 3 + tau ** 4) / dur)[inside, None]
    vel = vel + noise * rng.standard_normal(vel.shape)
    return pos, vel, np.array(t_start), np.array(angles), np.array(targets)


@pytest.mark.parametrize("dt", [0.02, 0.05, 0.1])
def test_reach_onsets_finds_known_onsets_and_directions(dt):
    pos, vel, t_start, angles, targets = centre_out_session(dt)
    r = datafiles.reach_onsets(vel, dt, hand_pos=pos)
    assert len(r["onset"]) == len(t_start)                              # every reach out, no return
    # the speed of a minimum-jerk reach passes 20 % of its peak at 12.9 % of its duration; the onset is the first
    # bin at or after that crossing (speed is sampled at bin starts here), give or take the noise
    cross = (t_start + 0.129 * 0.5) / dt
    assert np.all((r["onset"] - cross > -0.5) & (r["onset"] - cross < 1.5)), (r["onset"], cross)
    np.testing.assert_array_equal(r["cond_idx"], targets)
    err = np.degrees(np.abs(np.angle(np.exp(1j * (r["direction"] - angles)))))
    assert err.max() < 5
    assert np.all(r["peak"] > r["onset"]) and np.all(r["end"] > r["peak"])
    assert np.all((r["amplitude"] > 0.85 * 0.08) & (r["amplitude"] < 1.02 * 0.08))   # onset to end: not the tails
    # the return movements too, pointing the other way, without the centre-out rule
    both = datafiles.reach_onsets(vel, dt, hand_pos=pos, centre_out=False)
    assert len(both["onset"]) == 2 * len(t_start)
    np.testing.assert_array_equal(both["cond_idx"][1::2], (targets + 4) % 8)
    # from positions alone (velocity by differences), and with four sectors
    p = datafiles.reach_onsets(None, dt, hand_pos=pos, n_directions=4)
    assert len(p["onset"]) == len(t_start) and np.all(np.abs(p["onset"] - cross) < 1.5)
    np.testing.assert_array_equal(p["cond_idx"], np.round(angles / (np.pi / 2)).astype(int) % 4)


def test_reach_onsets_needs_rest_before_a_reach_and_a_gap_between_reaches():
    dt = 0.05
    pos, vel, t_start, *_ = centre_out_session(dt, n_reaches=6, noise=0.0)
    moving = vel.copy()
    i = int(t_start[2] / dt)
    moving[i - 2:i] += np.array([0.1, 0.0])              # a third of the peak speed just before reach 2 starts
    r = datafiles.reach_onsets(moving, dt, centre_out=False)
    assert len(r["onset"]) == 2 * len(t_start) - 1 and not np.any(np.abs(r["onset"] * dt - t_start[2]) < 0.3)
    assert len(datafiles.reach_onsets(moving, dt, centre_out=False, rest_ms=0)["onset"]) == 2 * len(t_start)
    # two reaches 250 ms apart: one reach with the default 300 ms gap, two with a 200 ms gap
    v = np.zeros((50, 2))
    v[20:23, 0] = v[25:28, 0] = [0.1, 0.3, 0.1]
    assert list(datafiles.reach_onsets(v, dt, rest_ms=0)["onset"]) == [20]
    assert list(datafiles.reach_onsets(v, dt, rest_ms=0, min_gap_ms=200)["onset"]) == [20, 25]


@pytest.mark.parametrize("kw,msg", [
    (dict(hand_vel=np.zeros((10, 3)), dt=0.05), "must be .bins, 2."),
    (dict(hand_vel=np.zeros(10), dt=0.05), "hand_vel: expected a non-empty .bins, channels. array"),
    (dict(hand_vel=np.zeros((10, 2)), dt=0.0), "dt must be the bin width"),
    (dict(hand_vel=np.zeros((10, 2)), dt=0.05, hand_pos=np.zeros((9, 2))), "has 10 bins but the counts have 9"),
    (dict(hand_vel=np.full((10, 2), np.nan), dt=0.05), "NaN"),
    (dict(hand_vel=np.ones((10, 2)), dt=0.05, onset_fraction=1.5), "onset_fraction must be a fraction"),
    (dict(hand_vel=np.ones((10, 2)), dt=0.05, centre_out=True), "centre_out needs hand_pos"),
    (dict(hand_vel=np.zeros((10, 2)), dt=0.05), "min_peak must be a speed > 0"),
    (dict(hand_vel=None, dt=0.05), "give hand_vel or hand_pos"),
])
def test_reach_onsets_rejects_bad_input_in_one_line(kw, msg):
    with pytest.raises(ValueError, match=msg) as e:
        datafiles.reach_onsets(**kw)
    assert "\n" not in str(e.value)


def test_trials_from_continuous_cuts_aligned_windows():
    T, N = 200, 3
    counts = (np.arange(T)[:, None] * 10 + np.arange(N)[None, :]) % 7
    beh = np.stack([np.arange(T), -np.arange(T)], 1).astype(float)
    onsets = np.array([5, 50, 191])
    t = datafiles.trials_from_continuous(counts, 0.05, onsets, (-250, 450), behaviour=beh)
    assert t["counts"].shape == (3, 14, N) and t["counts"].dtype == np.float32
    assert t["behaviour"].shape == (3, 14, 2)
    for i, o in enumerate(onsets):
        np.testing.assert_array_equal(t["counts"][i], counts[o - 5:o + 9])
        assert t["behaviour"][i, 5, 0] == o                          # the onset's bin is bin 5 of the window
    np.testing.assert_array_equal(t["start"], onsets - 5)
    t20 = datafiles.trials_from_continuous(counts, 0.02, [100], (-100, 60))
    np.testing.assert_array_equal(t20["counts"][0], counts[95:103])


@pytest.mark.parametrize("args,kw,msg", [
    ((np.ones(10), 0.05, [3], (-50, 50)), {}, "counts: expected a non-empty .bins, channels. array"),
    ((-np.ones((10, 2)), 0.05, [3], (-50, 50)), {}, "whole numbers >= 0"),
    ((np.ones((10, 2)), -1, [3], (-50, 50)), {}, "dt must be the bin width"),
    ((np.ones((10, 2)), 0.05, [3], (-50, 50)), dict(behaviour=np.ones((9, 2))), "behaviour: has 9 bins"),
    ((np.ones((10, 2)), 0.05, [3.5], (-50, 50)), {}, "whole bin indices"),
    ((np.ones((10, 2)), 0.05, [], (-50, 50)), {}, "non-empty 1-D"),
    ((np.ones((10, 2)), 0.05, [3], (-60, 50)), {}, "not a whole number of 50 ms bins"),
    ((np.ones((10, 2)), 0.05, [3], (50, -50)), {}, "end > start"),
    ((np.ones((10, 2)), 0.05, [3, 1, 9], (-100, 100)), {}, "onset bin 1 .trial 1. falls outside the recording .bins 0-9., and 1 more"),
])
def test_trials_from_continuous_rejects_bad_input_in_one_line(args, kw, msg):
    with pytest.raises(ValueError, match=msg) as e:
        datafiles.trials_from_continuous(*args, **kw)
    assert "\n" not in str(e.value)


def test_split_trials_is_seeded_and_stratified():
    g = np.repeat(np.arange(8), [10, 11, 12, 9, 10, 10, 10, 2])
    v = datafiles.split_trials(len(g), 0.2, seed=3, groups=g)
    np.testing.assert_array_equal(v, datafiles.split_trials(len(g), 0.2, seed=3, groups=g))
    assert not np.array_equal(v, datafiles.split_trials(len(g), 0.2, seed=4, groups=g))
    assert list(np.bincount(g[v], minlength=8)) == [2, 2, 2, 2, 2, 2, 2, 1]
    assert datafiles.split_trials(10, 0.3).sum() == 3
    with pytest.raises(ValueError, match="valid_fraction"):
        datafiles.split_trials(10, 1.0)


# -----------------------------------------------------------------------------
# eg_data/m1_reaching.h5: derived from the shared raw recording (skipped where that file is absent)

RAW = datafiles.raw_data_dir()
HAVE_RAW = os.path.exists(os.path.join(RAW, datafiles.M1_RAW))


def test_m1_reaching_example_is_shipped_with_its_provenance():
    d = datafiles.load_h5(datafiles.eg_path("m1_reaching"))
    n_in, n_all = d["train_encod_data"].shape[2], d["train_recon_data"].shape[2]
    assert d["train_encod_data"].shape[1] == 14 and float(d["dt"]) == 0.05
    assert len(d["heldout_idx"]) == n_all - n_in and abs(n_all - n_in - 0.25 * n_all) <= 1
    assert d["train_behavior"].shape == d["train_encod_data"].shape[:2] + (2,)
    n_tr, n_va = len(d["train_cond_idx"]), len(d["valid_cond_idx"])
    assert 150 <= n_tr + n_va <= 250 and abs(n_va / (n_tr + n_va) - 0.2) < 0.03
    assert set(d["valid_cond_idx"]) == set(range(8))
    np.testing.assert_array_equal(d["train_encod_data"], d["train_recon_data"][..., :n_in])
    speed = np.hypot(*np.moveaxis(d["train_behavior"], 2, 0)).mean(0)
    assert speed[:5].max() < 0.5 * speed.max() and 6 <= speed.argmax() <= 10   # aligned to movement onset
    with h5py.File(datafiles.eg_path("m1_reaching")) as f:
        a = dict(f.attrs)
    assert "Stevenson" in a["citation"] and "MIT" in a["licence"] and "make-eg-data" in a["derivation"]
    assert os.path.getsize(datafiles.eg_path("m1_reaching")) < 1_000_000


@pytest.mark.skipif(not HAVE_RAW, reason=f"raw recording {datafiles.M1_RAW} not in {RAW}")
def test_m1_reaching_example_regenerates_bit_for_bit(tmp_path):
    paths = synthetic.make_eg_data(tmp_path, names=["m1_reaching"], raw=RAW)
    with open(paths[0], "rb") as new, open(datafiles.eg_path("m1_reaching"), "rb") as old:
        assert new.read() == old.read(), "eg_data/m1_reaching.h5 differs: run `python -m minilatent make-eg-data`"


def test_make_eg_data_skips_an_example_without_its_raw_file(tmp_path):
    said = []
    assert synthetic.make_eg_data(tmp_path, names=["m1_reaching"], raw=tmp_path, log=said.append) == []
    assert len(said) == 1 and "skipped m1_reaching.h5" in said[0] and "not found" in said[0]
