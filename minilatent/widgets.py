"""
Widgets that step through dynamics, for the tutorials.

Every widget wraps a *plain plotting function* `plot_fn(t)` (or of its parameters) that a normal
notebook cell can call too: a Play button never advances when notebooks are executed headless
(nbval, CI), so lessons call the plain function at two or three time points and offer the widget for
exploration. The viewers below are such plain functions: `plot_*(..., t=...)` draw one frame.

    stepper(plot_fn, n_steps)           Play + slider + output area that calls plot_fn(t)
    plot_raster_rates(...)              spikes of one trial with true and inferred rates up to bin t
    plot_trajectory(...)                a latent / factor trajectory in 3-D (or 2-D) drawn up to bin t
    plot_lfads_frame(...)               both side by side: the LFADS view used in the notebooks
"""

import numpy as np
import matplotlib.pyplot as plt

# -----------------------------------------------------------------------------


def stepper(plot_fn, n_steps, start=0, step=1, interval_ms=150, description="time bin", label=None):
    """ A Play button and a slider over t in [0, n_steps) that redraws plot_fn(t) in an output area.
    plot_fn draws with matplotlib (and may call plt.show()). Returns the ipywidgets container without
    displaying it: end a cell with the call (or pass the result to display) to show it, once. """
    import ipywidgets as widgets

    if n_steps < 1:
        raise ValueError(f"stepper: n_steps must be >= 1, got {n_steps}")
    play = widgets.Play(value=start, min=0, max=n_steps - 1, step=step, interval=interval_ms, description="play")
    slider = widgets.IntSlider(value=start, min=0, max=n_steps - 1, step=step, description=description,
                               continuous_update=True, layout=widgets.Layout(width="60%"))
    widgets.jslink((play, "value"), (slider, "value"))
    out = widgets.Output()

    def draw(change=None):
        with out:
            out.clear_output(wait=True)
            plot_fn(slider.value)
            plt.show()

    slider.observe(draw, names="value")
    draw()
    children = [widgets.HBox([play, slider])]
    if label:
        children.insert(0, widgets.HTML(f"<b>{label}</b>"))
    return widgets.VBox(children + [out])


# -----------------------------------------------------------------------------
# LFADS views


def plot_raster_rates(spikes, t=None, true_rates=None, inferred_rates=None, neurons=None, dt=None, ax=None,
                      title=None):
    """ One trial: spikes as a raster (ticks), true rates (grey) and inferred rates (orange) per neuron,
    drawn up to bin t (all bins if t is None). spikes/rates: (T, N) counts per bin. Each neuron's row is
    scaled to its own peak rate. (A two-curve case of plot_rate_estimates below.) """
    estimates = {"inferred rate": inferred_rates} if inferred_rates is not None else None
    return plot_rate_estimates(spikes, t, true_rates, estimates, neurons=neurons, dt=dt, ax=ax,
                               title=title or "spikes and rates")


def plot_counts_rates(counts, rates, dt, n_heldin=None, truth=None, neurons=None, ax=None, title=None):
    """ One trial of real data: per neuron a row with its spike counts per bin (grey bars) and the inferred rate
    (a line), both in counts per bin on the row's own scale, labelled with the rate at the row's full height in
    spikes/s; neurons from n_heldin on are held out (never encoded: red, marked). counts/rates: (T, N).
    neurons: which rows to draw (default: up to 6 held-in and 6 held-out, the most active). """
    counts, rates = np.asarray(counts, float), np.asarray(rates, float)
    T, N = counts.shape
    n_heldin = N if n_heldin is None else n_heldin
    if neurons is None:
        act = counts.sum(0) + rates.sum(0)
        pick = lambda idx, k: sorted(idx[np.argsort(-act[idx])[:k]].tolist())
        neurons = pick(np.arange(n_heldin), 6 if n_heldin < N else 12) + pick(np.arange(n_heldin, N), 6)
    ax = ax or plt.gca()
    t = np.arange(T) * dt
    for row, n in enumerate(neurons):
        top = max(counts[:, n].max(), rates[:, n].max(), 1e-9)
        held = n >= n_heldin
        ax.bar(t, counts[:, n] / top * 0.85, bottom=row, width=dt * 0.9, align="edge", color="0.75")
        if truth is not None:
            ax.step(t, row + truth[:, n] / top * 0.85, where="post", color="0.3", lw=1, ls="--")
        ax.step(t, row + rates[:, n] / top * 0.85, where="post", color="C3" if held else "C0", lw=1.5)
        ax.text(t[-1] + dt * 1.05, row + 0.4, f"{top / dt:.0f} Hz", fontsize=7, va="center")
    ax.set_yticks(np.arange(len(neurons)) + 0.4)
    ax.set_yticklabels([f"{n} held out" if n >= n_heldin else str(n) for n in neurons], fontsize=7)
    for lab, n in zip(ax.get_yticklabels(), neurons):
        lab.set_color("C3" if n >= n_heldin else "k")
    ax.set_xlim(0, t[-1] + dt * 1.4)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("neuron (column of recon_data)")
    ax.set_title(title or "spike counts (bars) and inferred rates (lines); right: each row's full height")
    return ax


def plot_trajectory(traj, t=None, ax=None, color="C0", label=None, others=None, title=None):
    """ Draw a (T, D) trajectory (D >= 2; the first three dims) up to bin t, with a dot at t.
    others: optional list of (T, D) trajectories drawn faintly in full for context. The axis limits cover
    the whole trajectory (and the others, and whatever earlier calls drew on the same axes), so they stay
    put while t moves. """
    traj = np.asarray(traj)
    T, D = traj.shape
    if D < 2:
        raise ValueError(f"plot_trajectory needs at least 2 dims, got shape {traj.shape}")
    t = T - 1 if t is None else int(t)
    if not 0 <= t < T:
        raise ValueError(f"t={t} is outside the trajectory's {T} bins")
    three = D >= 3
    if ax is None:
        fig = plt.gcf()
        ax = fig.add_subplot(111, projection="3d" if three else None)
    dims = (0, 1, 2) if three else (0, 1)
    for o in others or []:
        ax.plot(*[np.asarray(o)[:, d] for d in dims], color="0.8", lw=0.6)
    ax.plot(*[traj[: t + 1, d] for d in dims], color=color, lw=1.5, label=label)
    ax.scatter(*[traj[t:t + 1, d] for d in dims], color=color, s=30)
    # limits from every point this axes is asked to show, not only the part drawn so far
    pts = np.concatenate([traj[:, list(dims)]] + [np.asarray(o)[:, list(dims)] for o in others or []])
    lo, hi = np.nanmin(pts, 0), np.nanmax(pts, 0)
    if hasattr(ax, "_minilatent_limits"):
        lo, hi = np.minimum(lo, ax._minilatent_limits[0]), np.maximum(hi, ax._minilatent_limits[1])
    ax._minilatent_limits = (lo, hi)
    pad = 0.05 * np.where(hi > lo, hi - lo, 1.0)
    for d, set_lim in zip(range(len(dims)), (ax.set_xlim, ax.set_ylim, getattr(ax, "set_zlim", None))):
        set_lim(lo[d] - pad[d], hi[d] + pad[d])
    if title:
        ax.set_title(title)
    if label:
        ax.legend(loc="upper left", fontsize=8)
    return ax


def plot_lfads_frame(t, spikes, true_rates, inferred_rates, factors, true_latents=None, neurons=None, dt=None):
    """ The LFADS view at bin t: raster with true and inferred rates (left); the inferred factors
    mapped to the true latent space if given, else the first three factors (right). """
    fig = plt.figure(figsize=(11, 4))
    ax1 = fig.add_subplot(1, 2, 1)
    plot_raster_rates(spikes, t, true_rates, inferred_rates, neurons=neurons, dt=dt, ax=ax1)
    ax2 = fig.add_subplot(1, 2, 2, projection="3d")
    if true_latents is not None:
        plot_trajectory(true_latents, t, ax=ax2, color="0.5", label="true latent")
        plot_trajectory(factors, t, ax=ax2, color="C1", label="from factors")
        ax2.set_title("latent state (affine map of the factors)")
    else:
        plot_trajectory(factors, t, ax=ax2, color="C1", title="factors 1-3")
    fig.tight_layout()
    return fig


# -----------------------------------------------------------------------------
# spikes and rates (notebook 00): raster with several rate estimates, and the latent state


def plot_rate_estimates(spikes, t=None, true_rates=None, estimates=None, neurons=None, dt=None, ax=None,
                        title=None):
    """ One trial up to bin t: spikes as a raster, the true rate (thick grey) and each rate estimate of
    `estimates` ({label: (T, N)} counts per bin, coloured) per neuron, all on one scale per neuron so that
    the estimates are comparable. Returns the axes. """
    spikes = np.asarray(spikes)
    if spikes.ndim != 2:
        raise ValueError(f"plot_rate_estimates: spikes must be one trial (T, N), got shape {spikes.shape}")
    T, N = spikes.shape
    estimates = dict(estimates or {})
    curves = ({"true rate": np.asarray(true_rates)} if true_rates is not None else {})
    for k, v in estimates.items():
        curves[k] = np.asarray(v)
    for k, v in curves.items():
        if v.shape != spikes.shape:
            raise ValueError(f"plot_rate_estimates: {k!r} has shape {v.shape}, expected the spikes' {spikes.shape}")
    neurons = list(range(min(N, 8))) if neurons is None else list(neurons)
    t = T - 1 if t is None else int(t)
    if not 0 <= t < T:
        raise ValueError(f"t={t} is outside the trial's {T} bins")
    ax = ax or plt.gca()
    x = np.arange(T) * (dt or 1.0)
    for row, n in enumerate(neurons):
        scale = max([float(np.max(v[:, n])) for v in curves.values()] + [1e-9])
        s = np.nonzero(spikes[: t + 1, n])[0]
        ax.plot(x[s], np.full(len(s), row + 0.05), "|", color="k", ms=5)
        for i, (k, v) in enumerate(curves.items()):
            style = dict(color="0.6", lw=2.5) if k == "true rate" and true_rates is not None else dict(color=f"C{i}", lw=1.3)
            ax.plot(x[: t + 1], row + 0.85 * v[: t + 1, n] / scale, label=k if row == 0 else None, **style)
    ax.axvline(x[t], color="C3", lw=0.8, alpha=0.6)
    ax.set_xlim(x[0], x[-1])
    ax.set_ylim(-0.1, len(neurons))
    ax.set_yticks(np.arange(len(neurons)) + 0.4)
    ax.set_yticklabels([f"n{n}" for n in neurons])
    ax.set_xlabel("time (s)" if dt else "time bin")
    if curves:
        ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title or "spikes and rates (each neuron on its own scale)")
    return ax


def plot_spikes_latents_frame(t, spikes, true_rates, estimates=None, latents=None, neurons=None, dt=None):
    """ The notebook-00 view at bin t: raster with true and estimated rates (left) and the true latent
    state up to t (right, 3-D) when `latents` (T, D) is given. Returns the figure. """
    fig = plt.figure(figsize=(11, 4))
    ax1 = fig.add_subplot(1, 2 if latents is not None else 1, 1)
    plot_rate_estimates(spikes, t, true_rates, estimates, neurons=neurons, dt=dt, ax=ax1)
    if latents is not None:
        ax2 = fig.add_subplot(1, 2, 2, projection="3d" if np.shape(latents)[1] >= 3 else None)
        plot_trajectory(latents, t, ax=ax2, color="0.3", title="true latent state (Lorenz)")
    fig.tight_layout()
    return fig


# -----------------------------------------------------------------------------
# Circuit views (notebooks 04-06): plain functions of the time index t, for stepper() and for normal cells


def _upto(t, T):
    t = T - 1 if t is None else int(t)
    if not 0 <= t < T:
        raise ValueError(f"t={t} is outside the simulation's {T} recorded steps")
    return t


def plot_balance_frame(t, times, exc, inh, ext, rates, pop_names=("E", "I"), theory=None, title=None):
    """ Left: the excitatory (recurrent E + external), inhibitory and net input of one neuron up to step t.
    Right: population rates up to t, with dashed theory lines if given. times (T,); exc, inh, ext: (T,) or
    scalars; rates (T, P); theory: (P,) rates. """
    times = np.asarray(times)
    T = len(times)
    t = _upto(t, T)
    exc, inh = np.broadcast_to(np.asarray(exc, float), (T,)), np.broadcast_to(np.asarray(inh, float), (T,))
    ext = np.broadcast_to(np.asarray(ext, float), (T,))
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.2))
    s = slice(0, t + 1)
    ax[0].plot(times[s], exc[s] + ext[s], "C3", label="excitation (E + external)")
    ax[0].plot(times[s], inh[s], "C0", label="inhibition")
    ax[0].plot(times[s], (exc + inh + ext)[s], "k", label="net input")
    ax[0].axhline(0, color="grey", lw=0.5)
    lim = 1.1 * max(np.abs(exc + ext).max(), np.abs(inh).max(), 1e-9)
    ax[0].set_xlim(times[0], times[-1]); ax[0].set_ylim(-lim, lim)
    ax[0].set_xlabel("time (s)"); ax[0].set_title(title or "inputs to one E neuron"); ax[0].legend(fontsize=8, loc="lower left")
    rates = np.asarray(rates)
    for p, name in enumerate(pop_names):
        ax[1].plot(times[s], rates[s, p], f"C{3 if p == 0 else 0}", label=f"r_{name}")
        if theory is not None:
            ax[1].axhline(theory[p], color=f"C{3 if p == 0 else 0}", ls="--", lw=1)
    ax[1].set_xlim(times[0], times[-1]); ax[1].set_ylim(0, 1.2 * max(rates.max(), 1e-9))
    ax[1].set_xlabel("time (s)"); ax[1].set_title("population rates (dashed: mean field)"); ax[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_stp_synapse(spike_times, u, x, t=None, title=None, ax=None):
    """ A Tsodyks-Markram synapse under a spike train: u (after each spike), x (before it) and the released
    fraction u x (the relative PSC amplitude) at each spike up to spike index t. """
    spike_times, u, x = np.asarray(spike_times), np.asarray(u), np.asarray(x)
    t = _upto(t, len(spike_times))
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3))
    s = slice(0, t + 1)
    ax.plot(spike_times[s], u[s], "o-", ms=3, color="C1", label="u (facilitation)")
    ax.plot(spike_times[s], x[s], "o-", ms=3, color="C0", label="x (resources)")
    ax.vlines(spike_times[s], 0, (u * x)[s], color="k", lw=2, label="u x (PSC)")
    ax.set_xlim(spike_times[0] - 0.02, spike_times[-1] + 0.02); ax.set_ylim(0, 1.05)
    ax.set_xlabel("time (s)"); ax.set_title(title or "one synapse"); ax.legend(fontsize=8, loc="upper right")
    return ax


def plot_wm_frame(t, times, r, u, x, fixed_points=(), cue=None):
    """ Working memory through facilitation: rate r (left) and u, x (right) up to step t; fixed points dashed;
    cue = (start, stop) seconds shaded. times, r, u, x: (T,) or (T, S) for S settings. """
    times = np.asarray(times)
    t = _upto(t, len(times))
    s = slice(0, t + 1)
    fig, ax = plt.subplots(1, 2, figsize=(11, 3))
    ax[0].plot(times[s], np.asarray(r)[s])
    for fp in fixed_points:
        ax[0].axhline(fp, color="grey", ls="--", lw=0.8)
    ax[1].plot(times[s], np.asarray(u)[s], color="C1")
    ax[1].plot(times[s], np.asarray(x)[s], color="C0")
    ax[1].plot([], [], color="C1", label="u"); ax[1].plot([], [], color="C0", label="x"); ax[1].legend(fontsize=8)
    for a in ax:
        a.set_xlim(times[0], times[-1]); a.set_xlabel("time (s)")
        if cue is not None:
            a.axvspan(*cue, color="y", alpha=0.2)
    ax[0].set_ylim(-1, 1.15 * max(np.max(r), 1)); ax[1].set_ylim(0, 1.05)
    ax[0].set_title("rate (Hz); dashed: fixed points"); ax[1].set_title("STP variables")
    fig.tight_layout()
    return fig


def plot_ring_frame(t, times, rates, theory=None):
    """ Ring attractor: the rates over the ring at step t (left; `theory`, an (N,) profile, dashed) and the
    time x angle activity map up to t (right). rates (T, N). """
    rates = np.asarray(rates)
    times = np.asarray(times)
    T, N = rates.shape
    t = _upto(t, T)
    deg = np.arange(N) * 360.0 / N
    fig, ax = plt.subplots(1, 2, figsize=(11, 3))
    ax[0].plot(deg, rates[t], "C3")
    if theory is not None:
        ax[0].plot(deg, theory, "k--", lw=1, label="theory")
        ax[0].legend(fontsize=8)
    ax[0].set_ylim(0, 1.1 * max(rates.max(), 1e-9)); ax[0].set_xlabel("angle (deg)"); ax[0].set_title(f"t = {times[t]:.2f} s")
    shown = np.full_like(rates, np.nan)
    shown[: t + 1] = rates[: t + 1]
    ax[1].imshow(shown.T, aspect="auto", origin="lower", extent=(times[0], times[-1], 0, 360), cmap="magma",
                 vmin=0, vmax=max(rates.max(), 1e-9))
    ax[1].set_xlabel("time (s)"); ax[1].set_ylabel("angle (deg)"); ax[1].set_title("activity on the ring")
    fig.tight_layout()
    return fig


# -----------------------------------------------------------------------------
# SPARKS (notebook 03): the Hebbian attention rule, pair by pair and as a matrix


def plot_hebbian_pair(t, s_post, s_pre, xpre, xpost, A, dt=None, axes=None, title=None):
    """ The Hebbian rule for one pair (i = post, j = pre) up to bin t: the two spike trains, the pre trace
    xpre_ij (driven by j, read when i fires), the post trace xpost_ij (driven by i, read when j fires) and the
    attention coefficient A_ij. All arguments are (T,) arrays. Returns the axes. """
    s_post, s_pre, xpre, xpost, A = (np.asarray(v, float) for v in (s_post, s_pre, xpre, xpost, A))
    T = len(A)
    t = T - 1 if t is None else int(t)
    if not 0 <= t < T:
        raise ValueError(f"t={t} is outside the {T} bins")
    for name, v in (("s_post", s_post), ("s_pre", s_pre), ("xpre", xpre), ("xpost", xpost)):
        if v.shape != (T,):
            raise ValueError(f"plot_hebbian_pair: {name} has shape {v.shape}, expected ({T},) like A")
    if axes is None:
        fig, axes = plt.subplots(3, 1, figsize=(9, 5), sharex=True, gridspec_kw=dict(height_ratios=[1, 1.4, 1.4]))
    x = np.arange(T) * (dt or 1.0)
    ax = axes[0]
    for row, (s, lab, c) in enumerate(((s_pre, "pre  j", "C0"), (s_post, "post i", "C3"))):
        k = np.nonzero(s[: t + 1])[0]
        ax.vlines(x[k], row + 0.1, row + 0.9, color=c, lw=2)
    ax.set_yticks([0.5, 1.5]); ax.set_yticklabels(["pre  j", "post i"]); ax.set_ylim(0, 2)
    ax.set_title(title or "one pair: spikes, traces and the attention coefficient")
    ax = axes[1]
    ax.plot(x[: t + 1], xpre[: t + 1], color="C0", label="xpre$_{ij}$ (potentiates when i fires)")
    ax.plot(x[: t + 1], xpost[: t + 1], color="C3", label="xpost$_{ij}$ (depresses when j fires)")
    ax.set_ylim(0, max(1e-6, xpre.max(), xpost.max()) * 1.1); ax.legend(fontsize=8, loc="upper right")
    ax = axes[2]
    ax.plot(x[: t + 1], A[: t + 1], color="k", label="A$_{ij}$")
    ax.axhline(0, color="0.8", lw=0.8); ax.axhline(1, color="0.8", lw=0.8)
    ax.set_ylim(min(-0.05, A.min() - 0.05), max(1.05, A.max() + 0.05)); ax.legend(fontsize=8, loc="upper right")
    ax.set_xlabel("time (s)" if dt else "time bin")
    for a in axes:
        a.axvline(x[t], color="C2", lw=0.8, alpha=0.6)
        a.set_xlim(x[0], x[-1])
    return axes


def plot_attention_matrix(t, A, spikes=None, order=None, ax=None, vmin=-0.2, vmax=1.0, title=None):
    """ The attention matrix A_t (N post x N pre) at bin t, neurons optionally reordered (e.g. by preferred
    phase); the neurons that fire at t are marked on both axes. A: (T, N, N); spikes: (T, N). """
    A = np.asarray(A)
    T, N, _ = A.shape
    t = int(t)
    if not 0 <= t < T:
        raise ValueError(f"t={t} is outside the {T} bins")
    order = np.arange(N) if order is None else np.asarray(order)
    ax = ax or plt.gca()
    im = ax.imshow(A[t][np.ix_(order, order)], vmin=vmin, vmax=vmax, cmap="viridis", origin="lower")
    if spikes is not None:
        fire = np.nonzero(np.asarray(spikes)[t][order])[0]
        ax.plot(fire, np.full(len(fire), -1.5), "^", color="C3", ms=4, clip_on=False)
        ax.plot(np.full(len(fire), -1.5), fire, ">", color="C3", ms=4, clip_on=False)
    ax.set_xlabel("pre neuron j"); ax.set_ylabel("post neuron i")
    ax.set_title(title or f"attention A at bin {t}")
    plt.colorbar(im, ax=ax, fraction=0.046)
    return ax


def plot_hebbian_frame(t, s_post, s_pre, xpre, xpost, A_pair, A_all=None, spikes=None, order=None, dt=None):
    """ The notebook-03 view at bin t: one pair's spikes, traces and coefficient (left) and the whole
    attention matrix (right, when A_all (T, N, N) is given). Returns the figure. """
    fig = plt.figure(figsize=(13, 4.8) if A_all is not None else (9, 4.8))
    gs = fig.add_gridspec(3, 2 if A_all is not None else 1, width_ratios=[1.6, 1] if A_all is not None else None,
                          height_ratios=[1, 1.4, 1.4])
    axes = [fig.add_subplot(gs[0, 0])]
    axes += [fig.add_subplot(gs[k, 0], sharex=axes[0]) for k in (1, 2)]
    plot_hebbian_pair(t, s_post, s_pre, xpre, xpost, A_pair, dt=dt, axes=axes)
    if A_all is not None:
        plot_attention_matrix(t, A_all, spikes, order, ax=fig.add_subplot(gs[:, 1]))
    fig.tight_layout()
    return fig


# -----------------------------------------------------------------------------
# LFADS with inferred inputs (notebook 02): the inferred input and the generator state, step by step


def plot_inferred_input_frame(t, inferred_input, true_input=None, gen_states=None, rates=None, true_rates=None,
                              spikes=None, dt=None, co_stds=None):
    """ One trial at bin t: the inferred input u (mean, with +-1 posterior std if co_stds is given) and the
    true input pulses (top), the generator state projected on its first two principal components up to t
    (bottom left), and spikes with true and inferred rates (bottom right, if given).
    inferred_input (T, co); true_input (T, I); gen_states (T, G); rates, true_rates, spikes (T, N). Returns the figure. """
    u = np.asarray(inferred_input)
    if u.ndim != 2:
        raise ValueError(f"plot_inferred_input_frame: inferred_input must be one trial (T, co), got shape {u.shape}")
    T = u.shape[0]
    t = int(t)
    if not 0 <= t < T:
        raise ValueError(f"t={t} is outside the trial's {T} bins")
    x = np.arange(T) * (dt or 1.0)
    fig = plt.figure(figsize=(11, 6))
    ax = fig.add_subplot(2, 1, 1)
    for d in range(u.shape[1]):
        ax.plot(x[: t + 1], u[: t + 1, d], color=f"C{d}", lw=1.5, label=f"inferred input {d + 1}")
        if co_stds is not None:
            s = np.asarray(co_stds)[: t + 1, d]
            ax.fill_between(x[: t + 1], u[: t + 1, d] - s, u[: t + 1, d] + s, color=f"C{d}", alpha=0.2, lw=0)
    if true_input is not None:
        p = np.abs(np.asarray(true_input)).sum(-1)
        for k in np.nonzero(p)[0]:
            ax.axvline(x[k], color="k", ls="--", lw=1, label="true pulse" if k == np.nonzero(p)[0][0] else None)
    ax.axvline(x[t], color="C3", lw=0.8, alpha=0.6)
    ax.set_xlim(x[0], x[-1])
    lim = np.abs(u).max() * 1.15 + 1e-9
    ax.set_ylim(-lim, lim)
    ax.set_xlabel("time (s)" if dt else "time bin")
    ax.set_title("inferred input (posterior mean)")
    ax.legend(loc="upper left", fontsize=8)
    if gen_states is not None:
        g = np.asarray(gen_states)
        gc = g - g.mean(0)
        _, _, vt = np.linalg.svd(gc, full_matrices=False)
        pcs = gc @ vt[:2].T                                            # (T, 2)
        ax2 = fig.add_subplot(2, 2, 3)
        plot_trajectory(pcs, t, ax=ax2, color="C1", title="generator state (PC 1-2)")
        if true_input is not None:
            for k in np.nonzero(np.abs(np.asarray(true_input)).sum(-1))[0]:
                ax2.scatter(pcs[k, 0], pcs[k, 1], marker="x", color="k", s=60, zorder=5)
    if spikes is not None:
        ax3 = fig.add_subplot(2, 2, 4)
        plot_raster_rates(spikes, t, true_rates, rates, neurons=range(min(6, np.shape(spikes)[1])), dt=dt, ax=ax3,
                          title="spikes, true (grey) and inferred rates")
    fig.tight_layout()
    return fig


# -----------------------------------------------------------------------------
# circuits to latents (notebook 07): the ring's bump against the phase a model reads out, and its slow points


def _wrap_deg(a):
    return np.degrees(np.mod(np.asarray(a, dtype=np.float64), 2 * np.pi))


def plot_ring_decoding_frame(t, spikes, neuron_angles, true_phase, decoded_phase, dt=None, cue_bins=None,
                             labels=("true bump phase", "decoded phase")):
    """ One ring trial up to bin t: spikes of the recorded neurons sorted by preferred angle, with the true bump
    phase and a decoded phase drawn over them (left); the two phases as points on the ring at bin t (right).
    spikes (T, N); neuron_angles (N,) radians; true_phase, decoded_phase (T,) radians; cue_bins: bins where a cue
    is on (shaded). Returns the figure. """
    spikes = np.asarray(spikes)
    T = spikes.shape[0]
    t = _upto(t, T)
    order = np.argsort(neuron_angles)
    ang = _wrap_deg(np.asarray(neuron_angles)[order])
    x = np.arange(T) * (dt or 1.0)
    fig = plt.figure(figsize=(11, 3.6))
    ax = fig.add_subplot(1, 3, (1, 2))
    ti, ni = np.nonzero(spikes[: t + 1][:, order])
    ax.scatter(x[ti], ang[ni], s=4, color="k", marker="|", alpha=0.5)
    for ph, c, lab in ((true_phase, "C3", labels[0]), (decoded_phase, "C0", labels[1])):
        y = _wrap_deg(ph)[: t + 1].copy()
        y[1:][np.abs(np.diff(y)) > 180] = np.nan                         # no line across the 0/360 seam
        ax.plot(x[: t + 1], y, color=c, lw=2, label=lab)
    if cue_bins is not None and len(np.atleast_1d(cue_bins)):
        cb = np.atleast_1d(cue_bins)
        ax.axvspan(x[cb.min()], x[cb.max()] + (dt or 1.0), color="y", alpha=0.3, label="cue")
    ax.set_xlim(x[0], x[-1] + (dt or 1.0)); ax.set_ylim(0, 360)
    ax.set_xlabel("time (s)" if dt else "bin"); ax.set_ylabel("preferred angle (deg)")
    ax.legend(loc="upper right", fontsize=8); ax.set_title("spikes sorted by preferred angle")
    axp = fig.add_subplot(1, 3, 3, projection="polar")
    axp.plot(np.linspace(0, 2 * np.pi, 100), np.ones(100), color="grey", lw=1)
    for ph, c, lab in ((true_phase, "C3", labels[0]), (decoded_phase, "C0", labels[1])):
        axp.plot([ph[t]], [1.0], "o", color=c, ms=12, alpha=0.8, label=lab)
    axp.set_ylim(0, 1.2); axp.set_yticks([])
    err = abs((np.degrees(decoded_phase[t] - true_phase[t]) + 180) % 360 - 180)
    axp.set_title(f"bin {t}: error {err:.0f} deg", fontsize=10)
    fig.tight_layout()
    return fig


def plot_slow_point_frame(k, points_2d, phases, eigvals, rates, neuron_angles, trajectories_2d=None):
    """ Walk around a ring of slow points, at point k: all points in a 2-D projection coloured by the phase each is
    mapped to, point k circled, over the model's trajectories (left); the eigenvalues of the Jacobian at point k
    against the unit circle (middle); the rates the model reads out at point k against the neurons' preferred
    angles, with the mapped phase (right). points_2d (K, 2); phases (K,) radians; eigvals (K, H) complex;
    rates (K, N); neuron_angles (N,) radians; trajectories_2d (trials, T, 2). Returns the figure. """
    points_2d, eigvals, rates = np.asarray(points_2d), np.asarray(eigvals), np.asarray(rates)
    K = len(points_2d)
    k = _upto(k, K)
    fig, ax = plt.subplots(1, 3, figsize=(12, 3.6))
    if trajectories_2d is not None:
        for tr in np.asarray(trajectories_2d):
            ax[0].plot(tr[:, 0], tr[:, 1], color="0.8", lw=0.5, zorder=0)
    sc = ax[0].scatter(points_2d[:, 0], points_2d[:, 1], c=_wrap_deg(phases), cmap="hsv", vmin=0, vmax=360, s=18)
    ax[0].scatter(points_2d[k, 0], points_2d[k, 1], s=160, facecolors="none", edgecolors="k", lw=2)
    fig.colorbar(sc, ax=ax[0], label="mapped phase (deg)")
    ax[0].set_xlabel("PC 1"); ax[0].set_ylabel("PC 2"); ax[0].set_title(f"slow point {k} of {K}")
    ax[0].set_aspect("equal", "datalim")
    c = np.linspace(0, 2 * np.pi, 200)
    ax[1].plot(np.cos(c), np.sin(c), color="grey", lw=1)
    ax[1].scatter(eigvals[k].real, eigvals[k].imag, s=16, color="C0")
    top = eigvals[k][np.argmax(np.abs(eigvals[k]))]
    ax[1].scatter([top.real], [top.imag], s=60, color="C3", label=f"largest |lambda| = {abs(top):.3f}")
    ax[1].set_aspect("equal"); ax[1].set_xlim(-1.15, 1.15); ax[1].set_ylim(-1.15, 1.15)
    ax[1].legend(fontsize=8, loc="lower left"); ax[1].set_title("Jacobian eigenvalues")
    order = np.argsort(neuron_angles)
    ax[2].plot(_wrap_deg(np.asarray(neuron_angles)[order]), rates[k][order], "o-", ms=3, color="C1")
    ax[2].axvline(_wrap_deg(phases[k]), color="k", ls="--", lw=1, label="mapped phase")
    ax[2].set_ylim(0, 1.1 * rates.max()); ax[2].set_xlim(0, 360)
    ax[2].set_xlabel("preferred angle (deg)"); ax[2].set_ylabel("rate (Hz)"); ax[2].legend(fontsize=8)
    ax[2].set_title("read-out at the slow point")
    fig.tight_layout()
    return fig
