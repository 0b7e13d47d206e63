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
