import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

from minilatent import widgets


def test_stepper_draws_the_start_frame_and_redraws_when_the_slider_moves():
    calls = []
    box = widgets.stepper(lambda t: calls.append(t), n_steps=10, start=3)
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
