""" NWB input: small files written with pynwb in the Neural Latents Benchmark's layout, binned counts checked
against a direct computation in whole microseconds (spikes on bin edges, units silent in a trial). """
import datetime
import sys

import numpy as np
import pytest

from minilatent import datafiles

pynwb = pytest.importorskip("pynwb")


def write_nwb(path, units, trials, trial_columns=(), unit_heldout=None, obs_intervals=None):
    """ units: list of spike-time arrays (s); trials: list of dicts with start_time, stop_time and columns """
    nwb = pynwb.NWBFile(session_description="test", identifier="test",
                        session_start_time=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc))
    if unit_heldout is not None:
        nwb.add_unit_column("heldout", "held-out units (NLB)")
    for u, st in enumerate(units):
        kw = {"heldout": bool(unit_heldout[u])} if unit_heldout is not None else {}
        iv = obs_intervals[u] if obs_intervals is not None else [[0.0, 100.0]]
        nwb.add_unit(spike_times=np.asarray(st, np.float64), obs_intervals=iv, **kw)
    for c in trial_columns:
        nwb.add_trial_column(c, f"column {c}")
    for t in trials:
        nwb.add_trial(**t)
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return str(path)


def direct_counts(units_us, starts_us, n_bins, bin_us):
    """ the reference: integer microseconds, half-open bins [start + k bin, start + (k+1) bin) """
    out = np.zeros((len(starts_us), n_bins, len(units_us)))
    for i, s in enumerate(starts_us):
        for u, st in enumerate(units_us):
            for t in st:
                if s <= t < s + n_bins * bin_us:
                    out[i, (t - s) // bin_us, u] += 1
    return out


def make_session(rng, n_units=5, n_trials=12, bin_ms=10):
    """ random spikes (whole microseconds) plus spikes exactly on bin edges and at window ends, one silent unit """
    starts_us = [1_000_000 + 700_000 * i for i in range(n_trials)]
    lengths_us = [500_000 + 10_000 * (i % 3) for i in range(n_trials)]      # 500, 510, 520 ms trials
    move_us = [s + 200_000 + 1000 * int(rng.integers(0, 50)) for s in starts_us]
    units_us = []
    for u in range(n_units):
        if u == 2:
            units_us.append(np.array([], np.int64))                          # silent unit
            continue
        t = rng.integers(0, starts_us[-1] + 800_000, size=300)
        edges = [s + k * bin_ms * 1000 for s in starts_us for k in (0, 3, 7)]  # exactly on bin edges
        edges += [m - 100_000 for m in move_us] + [m + 250_000 for m in move_us]  # on the aligned window's ends
        units_us.append(np.unique(np.concatenate([t, edges])))
    trials = [dict(start_time=s / 1e6, stop_time=(s + L) / 1e6, move_onset_time=m / 1e6,
                   split="val" if i % 4 == 3 else ("test" if i == 0 else "train"), cond=f"c{i % 3}")
              for i, (s, L, m) in enumerate(zip(starts_us, lengths_us, move_us))]
    return units_us, starts_us, lengths_us, move_us, trials


@pytest.fixture
def session(tmp_path):
    rng = np.random.default_rng(0)
    units_us, starts_us, lengths_us, move_us, trials = make_session(rng)
    path = write_nwb(tmp_path / "rec.nwb", [u / 1e6 for u in units_us], trials,
                     trial_columns=("move_onset_time", "split", "cond"), unit_heldout=[0, 0, 0, 1, 1])
    return path, units_us, starts_us, lengths_us, move_us


def test_binned_counts_match_a_direct_computation_aligned_to_an_event(session):
    path, units_us, starts_us, lengths_us, move_us = session
    d = datafiles.load_nwb(path, bin_ms=10, align="move_onset_time", window=(-100, 250), split_column="split",
                           condition_column="cond", heldout=None)           # every unit (the file marks 2 held out)
    ref = direct_counts(units_us, [m - 100_000 for m in move_us], 35, 10_000)
    train = [i for i in range(12) if i % 4 != 3 and i != 0]
    valid = [i for i in range(12) if i % 4 == 3]
    np.testing.assert_array_equal(d["train_trial_idx"], train)
    np.testing.assert_array_equal(d["valid_trial_idx"], valid)
    np.testing.assert_array_equal(d["train_encod_data"], ref[train])
    np.testing.assert_array_equal(d["valid_recon_data"], ref[valid])
    assert d["train_encod_data"].dtype == np.float32 and d["dt"] == pytest.approx(0.01)
    assert (d["train_encod_data"][..., 2] == 0).all()                        # the silent unit
    # the spikes placed on the window's first edge are counted, those on its end are not
    assert ref[:, 0].sum() > 0
    np.testing.assert_array_equal(d["train_cond_idx"], [i % 3 for i in train])
    assert list(d["cond_values"]) == ["c0", "c1", "c2"]


def test_default_window_is_trial_start_to_the_shortest_stop(session):
    path, units_us, starts_us, lengths_us, _ = session
    d = datafiles.load_nwb(path, bin_ms=20, valid_fraction=0.25, seed=1, heldout=None)
    n_bins = min(lengths_us) // 20_000
    ref = direct_counts(units_us, starts_us, n_bins, 20_000)
    assert d["train_encod_data"].shape == (9, n_bins, 5) and d["valid_encod_data"].shape == (3, n_bins, 5)
    np.testing.assert_array_equal(d["train_encod_data"], ref[d["train_trial_idx"]])
    np.testing.assert_array_equal(d["valid_encod_data"], ref[d["valid_trial_idx"]])
    assert sorted(np.concatenate([d["train_trial_idx"], d["valid_trial_idx"]]).tolist()) == list(range(12))
    d2 = datafiles.load_nwb(path, bin_ms=20, valid_fraction=0.25, seed=1)
    np.testing.assert_array_equal(d["valid_trial_idx"], d2["valid_trial_idx"])   # seeded


def test_heldout_units_from_the_column_or_a_seeded_choice(session, tmp_path):
    path, units_us, starts_us, lengths_us, move_us = session
    d = datafiles.load_nwb(path, bin_ms=10, heldout="column", split_column="split")
    assert d["train_encod_data"].shape[2] == 3 and d["train_recon_data"].shape[2] == 5
    np.testing.assert_array_equal(d["heldout_idx"], [3, 4])
    auto = datafiles.load_nwb(path, bin_ms=10, split_column="split")         # the file's column, by default
    np.testing.assert_array_equal(auto["heldout_idx"], [3, 4])
    np.testing.assert_array_equal(auto["train_encod_data"], d["train_encod_data"])
    full = datafiles.load_nwb(path, bin_ms=10, split_column="split", heldout=None)   # the column ignored
    assert full["train_encod_data"].shape[2] == 5 and "heldout_idx" not in full
    np.testing.assert_array_equal(d["train_recon_data"], full["train_recon_data"])   # held-in first: same order here
    # a file without the column: nothing held out by default, a seeded choice of K on request
    trials = make_session(np.random.default_rng(0))[4]
    plain = write_nwb(tmp_path / "plain.nwb", [u / 1e6 for u in units_us], trials,
                      trial_columns=("move_onset_time", "split", "cond"))
    assert "heldout_idx" not in datafiles.load_nwb(plain, bin_ms=10, split_column="split")
    k = datafiles.load_nwb(plain, bin_ms=10, heldout=2, split_column="split", seed=5)
    assert k["valid_encod_data"].shape[2] == 3 and len(k["heldout_idx"]) == 2
    np.testing.assert_array_equal(k["valid_recon_data"][..., 3:], full["valid_recon_data"][..., k["heldout_idx"]])
    with pytest.raises(ValueError, match="has no 'heldout' column"):
        datafiles.load_nwb(plain, bin_ms=10, heldout="column")


def test_a_file_that_marks_its_heldout_units_refuses_a_random_choice(session):
    path = session[0]
    for call in (lambda: datafiles.load_nwb(path, bin_ms=10, heldout=2),
                 lambda: datafiles.load_dataset(path, bin_ms=10, heldout_neurons=2)):
        with pytest.raises(ValueError, match=r"marks 2 of 5 units as held out \(column 'heldout'\), so a random "
                           r"choice of 2 held-out neurons \(--heldout-neurons\) is refused") as e:
            call()
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="heldout must be 'auto', 'column', None or a number"):
        datafiles.load_nwb(path, heldout="yes")


def test_load_dataset_holds_out_the_units_the_file_marks(session, tmp_path):
    d = datafiles.load_dataset(session[0], bin_ms=10)
    np.testing.assert_array_equal(d["heldout_idx"], [3, 4])
    assert d["valid_encod_data"].shape[2] == 3 and d["valid_recon_data"].shape[2] == 5


def test_trials_a_unit_did_not_observe_are_left_out(tmp_path):
    rng = np.random.default_rng(1)
    units_us, starts_us, lengths_us, move_us, trials = make_session(rng, n_units=2)
    obs = [[[0.0, 100.0]], [[0.0, starts_us[6] / 1e6 + 0.1]]]                  # unit 1 lost after trial 5
    path = write_nwb(tmp_path / "gap.nwb", [u / 1e6 for u in units_us], trials, ("move_onset_time", "split", "cond"),
                     obs_intervals=obs)
    d = datafiles.load_nwb(path, bin_ms=10, split_column="split")
    used = np.concatenate([d["train_trial_idx"], d["valid_trial_idx"]])
    assert used.max() <= 5 and int(d["n_unobserved_trials"]) == 6


def bad_files(tmp_path):
    rng = np.random.default_rng(2)
    units_us, starts_us, lengths_us, move_us, trials = make_session(rng, n_units=2)
    units = [u / 1e6 for u in units_us]
    cols = ("move_onset_time", "split", "cond")
    return {
        "no units": (write_nwb(tmp_path / "a.nwb", [], trials, cols), {}),
        "no trials": (write_nwb(tmp_path / "b.nwb", units, []), {}),
        "align": (write_nwb(tmp_path / "c.nwb", units, trials, cols), dict(align="go_cue_time", window=(0, 100))),
        "window": (str(tmp_path / "c.nwb"), dict(align="move_onset_time", window=(-400, 100))),
    }


@pytest.mark.parametrize("case,msg", [("no units", "no units table"), ("no trials", "no trials table"),
                                      ("align", "align column 'go_cue_time' is not in the trials table"),
                                      ("window", "falls outside trial 0")])
def test_bad_nwb_files_raise_one_line_errors(tmp_path, case, msg):
    path, kw = bad_files(tmp_path)[case]
    with pytest.raises(ValueError, match=msg) as e:
        datafiles.load_nwb(path, bin_ms=10, **kw)
    assert "\n" not in str(e.value)


def test_not_an_nwb_file_and_bad_arguments(tmp_path, session):
    p = tmp_path / "x.nwb"
    p.write_text("not hdf5")
    with pytest.raises(ValueError, match="not a readable NWB file"):
        datafiles.load_nwb(p)
    with pytest.raises(ValueError, match="bin_ms"):
        datafiles.load_nwb(session[0], bin_ms=0)
    with pytest.raises(ValueError, match="window"):
        datafiles.load_nwb(session[0], align="move_onset_time", window=(100, 50))


def test_missing_pynwb_names_the_extra(monkeypatch, session):
    monkeypatch.setitem(sys.modules, "pynwb", None)              # import pynwb now raises ImportError
    with pytest.raises(ImportError, match=r"minilatent\[nwb\]"):
        datafiles.load_nwb(session[0])


def test_load_dataset_reads_nwb_and_uses_its_split_column(session):
    d = datafiles.load_dataset(session[0], bin_ms=10, align="move_onset_time", window=(-100, 250))
    ref = datafiles.load_nwb(session[0], bin_ms=10, align="move_onset_time", window=(-100, 250), split_column="split")
    np.testing.assert_array_equal(d["valid_trial_idx"], ref["valid_trial_idx"])
    np.testing.assert_array_equal(d["train_encod_data"], ref["train_encod_data"])


def test_the_command_line_uses_the_files_heldout_units_and_refuses_a_clash(session, tmp_path, capsys):
    from conftest import cli
    bad = cli(capsys, ["train", "lfads", session[0], "--out", tmp_path / "bad", "--epochs", 1, "--heldout-neurons", 2])
    assert bad.returncode == 2 and "is refused; leave it out to use the file's" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
    out = tmp_path / "run"
    r = cli(capsys, ["train", "lfads", session[0], "--out", out, "--epochs", 1, "--samples", 2, "--gen-dim", 8,
                     "--fac-dim", 4, "--ic-enc-dim", 8, "--bin-ms", 20])
    assert r.returncode == 0, r.stderr
    import h5py
    with h5py.File(out / "lfads_output.h5") as f:
        assert list(f["heldout_idx"][()]) == [3, 4] and f["valid_output_params"].shape[2] == 5
