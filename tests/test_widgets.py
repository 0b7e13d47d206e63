""" The notebook viewers draw what they are given and validate the frame index. """

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

from minilatent import widgets



def test_stepper_draws_the_start_frame_and_redraws_when_the_slider_moves(monkeypatch):
    import IPython.display
    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *a, **k: shown.append(a))
    calls = []
    box = widgets.stepper(lambda t: calls.append(t), n_steps=10, start=3)
    assert shown == []          # returned, not displayed: a cell ending in the call shows it exactly once
    assert calls == [3]
    play_slider = box.children[0]
    play, slider = play_slider.children
    assert (play.max, slider.max) == (9, 9)
    slider.value = 7
    assert calls == [3, 7]
    with pytest.raises(ValueError, match="n_steps"):
        widgets.stepper(lambda t: None, n_steps=0)


def test_plain_viewers_draw_up_to_t_and_reject_bad_t():
    rng = np.random.default_rng(0)
    spikes = rng.poisson(0.3, size=(50, 6))
    rates = np.full((50, 6), 0.3)
    ax = widgets.plot_raster_rates(spikes, t=20, true_rates=rates, inferred_rates=rates * 1.1)
    # the rate curves stop at bin t
    curves = [l for l in ax.lines if l.get_marker() in ("None", "", None) and len(l.get_xdata()) > 2]
    assert len(curves) == 12 and all(len(l.get_xdata()) == 21 for l in curves)
    plt.close("all")
    with pytest.raises(ValueError, match="outside"):
        widgets.plot_raster_rates(spikes, t=50)
    fig = widgets.plot_lfads_frame(10, spikes, rates, rates, rng.normal(size=(50, 3)), rng.normal(size=(50, 3)))
    assert len(fig.axes) == 2
    plt.close("all")
    with pytest.raises(ValueError, match="at least 2 dims"):
        widgets.plot_trajectory(np.zeros((5, 1)))


def test_plot_trajectory_fixes_the_limits_to_the_whole_trajectory():
    traj = np.stack([np.linspace(0, 10, 50), np.linspace(-3, 3, 50), np.linspace(5, 6, 50)], 1)   # (T, 3)
    fig = plt.figure()
    ax = fig.add_subplot(111, projection="3d")
    widgets.plot_trajectory(traj, t=0, ax=ax)          # at bin 0 only one point is drawn
    for (lo, hi), (a, b) in zip((ax.get_xlim(), ax.get_ylim(), ax.get_zlim()), zip(traj.min(0), traj.max(0))):
        assert lo <= a and hi >= b and (hi - lo) < 1.2 * (b - a)
    other = traj * 2                                     # a second curve on the same axes widens them
    widgets.plot_trajectory(other, t=0, ax=ax)
    assert ax.get_xlim()[1] >= 20 and ax.get_xlim()[0] <= 0
    plt.close("all")


# ----------------------------------------------------------------------------- circuit views (notebooks 04-06)


def test_circuit_views_draw_up_to_t_and_reject_bad_t():
    T = 30
    times = np.arange(T) * 0.01
    fig = widgets.plot_balance_frame(10, times, np.linspace(1, 2, T), -np.linspace(1, 2, T), 0.5, np.ones((T, 2)),
                                     theory=(1.0, 1.0))
    assert all(len(l.get_xdata()) == 11 for l in fig.axes[0].lines if len(l.get_xdata()) > 2)
    plt.close("all")
    ax = widgets.plot_stp_synapse(np.arange(5) * 0.1, np.full(5, 0.3), np.full(5, 0.8), t=2)
    assert len(ax.lines[0].get_xdata()) == 3
    plt.close("all")
    fig = widgets.plot_wm_frame(5, times, np.ones((T, 2)), np.ones((T, 2)) * 0.5, np.ones((T, 2)), fixed_points=(0, 1))
    assert len(fig.axes[0].lines[0].get_xdata()) == 6
    plt.close("all")
    fig = widgets.plot_ring_frame(4, times, np.random.default_rng(0).random((T, 50)), theory=np.ones(50))
    img = np.ma.filled(fig.axes[1].images[0].get_array().astype(float), np.nan)  # (N, T): angle x time
    assert np.isnan(img[:, 5:]).all() and not np.isnan(img[:, :5]).any()  # nothing drawn after t
    plt.close("all")
    with pytest.raises(ValueError, match="outside"):
        widgets.plot_ring_frame(T, times, np.ones((T, 50)))


def test_ring_decoding_frame_draws_both_phases_up_to_t():
    rng = np.random.default_rng(0)
    T, N = 40, 12
    spikes = rng.poisson(0.3, (T, N))
    ang = rng.uniform(0, 2 * np.pi, N)
    true = np.linspace(0.1, 1.0, T)
    dec = true + 0.2
    fig = widgets.plot_ring_decoding_frame(25, spikes, ang, true, dec, dt=0.02, cue_bins=[5, 6, 7])
    ax = fig.axes[0]
    lines = {l.get_label(): l for l in ax.get_lines()}
    np.testing.assert_allclose(lines["true bump phase"].get_ydata(), np.degrees(true[:26]))
    np.testing.assert_allclose(lines["decoded phase"].get_ydata(), np.degrees(dec[:26]))
    n_spk = len(ax.collections[0].get_offsets())
    assert n_spk == np.count_nonzero(spikes[:26])                          # one tick per nonzero bin up to t
    assert "error 11 deg" in fig.axes[1].get_title()                         # 0.2 rad = 11.5 deg
    plt.close(fig)


def test_slow_point_frame_marks_the_point_and_its_eigenvalues():
    K, H, N = 20, 6, 15
    th = np.linspace(0, 2 * np.pi, K, endpoint=False)
    pts = np.stack([np.cos(th), np.sin(th)], 1)
    ev = np.tile(np.array([0.99, 0.5, 0.4, 0.3, 0.2, 0.1], complex), (K, 1))
    rates = np.abs(np.random.default_rng(1).normal(size=(K, N)))
    fig = widgets.plot_slow_point_frame(7, pts, th, ev, rates, np.linspace(0, 6, N))
    assert fig.axes[0].get_title() == "slow point 7 of 20"
    ring_ax = [a for a in fig.axes if a.get_title() == "Jacobian eigenvalues"][0]
    assert "0.990" in ring_ax.get_legend().get_texts()[0].get_text()
    plt.close(fig)


def test_plot_rate_estimates_draws_up_to_t():
    rng = np.random.default_rng(5)
    rates = rng.uniform(0.1, 1.0, size=(30, 4))
    spikes = rng.poisson(rates)
    est = rates * 0.5
    fig, ax = plt.subplots()
    widgets.plot_rate_estimates(spikes, 9, rates, {"smoothed": est}, neurons=[2], ax=ax)
    lines = [l for l in ax.lines if l.get_label() in ("true rate", "smoothed")]
    assert len(lines) == 2
    scale = max(rates[:, 2].max(), est[:, 2].max())
    np.testing.assert_allclose(lines[0].get_ydata(), 0.85 * rates[:10, 2] / scale)
    np.testing.assert_allclose(lines[1].get_ydata(), 0.85 * est[:10, 2] / scale)
    with pytest.raises(ValueError, match="outside"):
        widgets.plot_rate_estimates(spikes, 30, rates)
    with pytest.raises(ValueError, match="'bad' has shape"):
        widgets.plot_rate_estimates(spikes, 3, rates, {"bad": est[:5]})
    fig2 = widgets.plot_spikes_latents_frame(4, spikes, rates, {"smoothed": est}, latents=rng.normal(size=(30, 3)))
    assert len(fig2.axes) == 2
    plt.close("all")


def test_plot_inferred_input_frame_draws_and_rejects_bad_bins():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from minilatent import widgets
    rng = np.random.default_rng(0)
    u, pulse = rng.normal(size=(20, 1)), np.zeros((20, 1))
    pulse[7] = 1.0
    fig = widgets.plot_inferred_input_frame(10, u, pulse, rng.normal(size=(20, 8)), rates=rng.random((20, 5)),
                                            true_rates=rng.random((20, 5)), spikes=rng.poisson(1.0, (20, 5)),
                                            co_stds=np.full((20, 1), 0.1))
    assert len(fig.axes) == 3
    line = fig.axes[0].lines[0]
    np.testing.assert_array_equal(line.get_ydata(), u[:11, 0])        # drawn up to bin t only
    plt.close(fig)
    with pytest.raises(ValueError, match="outside the trial's 20 bins"):
        widgets.plot_inferred_input_frame(20, u)


def test_hebbian_widgets_draw_and_reject_bad_input():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from minilatent import widgets
    T, N = 30, 4
    s = (np.random.default_rng(0).random((T, N)) < 0.3).astype(float)
    A = np.random.default_rng(1).random((T, N, N))
    fig = widgets.plot_hebbian_frame(10, s[:, 1], s[:, 0], A[:, 1, 0], A[:, 0, 1], A[:, 1, 0], A_all=A, spikes=s)
    assert len(fig.axes) >= 4
    plt.close("all")
    with pytest.raises(ValueError, match="outside the 30 bins"):
        widgets.plot_hebbian_pair(30, s[:, 1], s[:, 0], A[:, 1, 0], A[:, 0, 1], A[:, 1, 0])
    with pytest.raises(ValueError, match="xpre has shape"):
        widgets.plot_hebbian_pair(3, s[:, 1], s[:, 0], A[:5, 1, 0], A[:, 0, 1], A[:, 1, 0])
    with pytest.raises(ValueError, match="outside the 30 bins"):
        widgets.plot_attention_matrix(-1, A)
    plt.close("all")


def test_counts_rates_rows_scale_counts_and_rates_alike_and_mark_held_out_neurons():
    from minilatent.widgets import plot_counts_rates
    counts = np.zeros((5, 4)); counts[2, 0] = 3; counts[1, 3] = 2
    rates = np.full((5, 4), 0.5); rates[2, 0] = 1.5
    fig, ax = plt.subplots()
    plot_counts_rates(counts, rates, dt=0.05, n_heldin=3, neurons=[0, 3], ax=ax)
    bars = [p for p in ax.patches]
    # neuron 0's row: its tallest thing is the 3-spike bin, drawn at 0.85 of the row; its rate 1.5 at half that
    assert max(b.get_height() for b in bars[:5]) == pytest.approx(0.85)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["0", "3 held out"]
    assert [t.get_text() for t in ax.texts] == ["60 Hz", "40 Hz"]          # 3 / 0.05 s and 2 / 0.05 s
    plt.close(fig)
