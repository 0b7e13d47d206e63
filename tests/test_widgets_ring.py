"""The lesson-07 viewers draw what they are given (checked on the figure's own data) and validate the frame index."""
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from minilatent import widgets


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
