"""
Synthetic data with ground truth: spikes drawn from a dynamical system we know, returned together with that
system's truth (rates, latent states, inputs, circuit states), so that a model's inferences can be checked.

  Lorenz        a Lorenz attractor read out by Poisson neurons: make_lorenz, the same latents recorded in several
                sessions (make_lorenz_sessions), a continuous Gaussian variant (make_lorenz_gaussian), and any
                mean rate (make_lorenz_rate)
  chaotic RNN   a random rate network in its chaotic regime, optionally kicked by input pulses (make_chaotic_rnn,
                make_chaotic_rnn_rate)
  rotation      Bernoulli neurons tuned to the phase of a 2-D rotation, the latent that SPARKS decodes
  circuits      spikes from circuits.py's ring attractor and bistable E/I network, with the circuit's state
  the suite     SUITE / make_suite: Lorenz and chaotic-RNN data over the rates, sizes and lengths labs record
  the examples  EXAMPLES / make_eg_data: the files shipped in eg_data/, made again bit for bit

Every generator returns a dataset dict in the layout datafiles.py reads and writes (lfads-torch's keys; arrays
(trials, time, neurons), float32 counts per bin; truth in spikes/s, so truth / conversion_factor = counts per
bin) and takes a seed: the same seed gives the same arrays. Change no line that draws a random number without
regenerating eg_data/ (tests/test_synthetic.py checks the shipped files bit for bit).

References:
  Sussillo, Jozefowicz, Abbott & Pandarinath (2016) "LFADS - Latent Factor Analysis via Dynamical Systems":
    the Lorenz and chaotic-RNN recipes (Lorenz (1963) "Deterministic nonperiodic flow")
  Sompolinsky, Crisanti & Sommers (1988) "Chaos in random neural networks"
  Skatchkovsky, Glazman, Sadeh & Iacaruso (2024) "A biologically inspired attention model for neural signal
    analysis" (SPARKS): the rotation decoding task
  Ben-Yishai, Bar-Or & Sompolinsky (1995) "Theory of orientation tuning in visual cortex" (the ring attractor);
    Wilson & Cowan (1972) "Excitatory and inhibitory interactions in localized populations of model neurons"
    (the bistable E/I pair)
"""

import math
import os

import numpy as np
import torch

from .datafiles import EG_DATA, make_m1_reaching, save_h5, to_original_lfads
from .metrics import ring_phase, true_rates

# -----------------------------------------------------------------------------
# trials, conditions and splits: what every generator shares


def _split_by_condition(n_conditions, trials_per_condition, n_valid):
    """ trial -> condition index, and boolean masks for train / valid (last n_valid of each condition) """
    cond = np.repeat(np.arange(n_conditions), trials_per_condition)
    within = np.tile(np.arange(trials_per_condition), n_conditions)
    valid = within >= trials_per_condition - n_valid
    return cond, ~valid, valid


def _assemble(counts, truth_hz, latents, inputs, cond, train, valid, dt):
    data = {}
    for split, m in (("train", train), ("valid", valid)):
        data[f"{split}_encod_data"] = counts[m]
        data[f"{split}_recon_data"] = counts[m]
        data[f"{split}_truth"] = truth_hz[m]
        if latents is not None:
            data[f"{split}_latents"] = latents[m]
        if inputs is not None:
            data[f"{split}_inputs"] = inputs[m]
        data[f"{split}_cond_idx"] = cond[m].astype(np.int64)
    data["conversion_factor"] = np.float64(1.0 / dt)  # truth is in spikes/s; / (1/dt) = counts per bin
    data["dt"] = np.float64(dt)
    return data


def _split_trials(arrays, n_trials, n_valid):
    """ {name: (trials, ...) array} -> {train_name, valid_name}: the first n_trials - n_valid trials are 'train' """
    out = {}
    for split, sl in (("train", slice(0, n_trials - n_valid)), ("valid", slice(n_trials - n_valid, n_trials))):
        for k, v in arrays.items():
            out[f"{split}_{k}"] = v[sl]
    return out


def _check_trials(fn, n_trials, n_valid, n_bins, dt):
    if not 0 < n_valid < n_trials:
        raise ValueError(f"{fn}: need 0 < n_valid < n_trials, got n_valid={n_valid}, n_trials={n_trials}")
    if n_bins < 2:
        raise ValueError(f"{fn}: n_bins must be >= 2, got {n_bins}")
    if not 0 < dt:
        raise ValueError(f"{fn}: dt must be > 0 s, got {dt}")


# -----------------------------------------------------------------------------
# the Lorenz attractor read out by Poisson neurons (LFADS paper), in several sessions, continuous, at any rate


def lorenz_trajectories(x0, n_steps, dt=0.006, sigma=10.0, rho=28.0, beta=8.0 / 3.0, burn_in=500):
    """ Euler-integrate the Lorenz system from each row of x0 (C, 3); returns (C, n_steps, 3). """
    x = np.array(x0, dtype=np.float64)
    out = np.empty((x.shape[0], n_steps, 3))
    for t in range(burn_in + n_steps):
        dx = sigma * (x[:, 1] - x[:, 0])
        dy = x[:, 0] * (rho - x[:, 2]) - x[:, 1]
        dz = x[:, 0] * x[:, 1] - beta * x[:, 2]
        x = x + dt * np.stack([dx, dy, dz], axis=1)
        if t >= burn_in:
            out[:, t - burn_in] = x
    return out


def lorenz_latents(rng, n_conditions, n_bins, integration_dt=0.006):
    """ z-scored Lorenz states (C, T, 3), one trajectory per condition from x0 ~ N([0, 0, 25], I) (drawn from rng) """
    x0 = rng.normal(size=(n_conditions, 3)) + np.array([0.0, 0.0, 25.0])
    z = lorenz_trajectories(x0, n_bins, dt=integration_dt)
    return (z - z.mean(axis=(0, 1))) / z.std(axis=(0, 1))


def make_lorenz(n_conditions=65, trials_per_condition=20, n_valid_per_condition=4, n_neurons=30,
                n_bins=100, dt=0.01, base_rate=5.0, integration_dt=0.006, seed=0):
    """ Lorenz-driven Poisson neurons (LFADS paper). Each condition starts from x0 ~ N([0,0,25], I),
    runs 500 burn-in Euler steps, then n_bins steps; the state is z-scored per dimension and
    log rate = W z + log(base_rate * dt) with W ~ U(-1, 1). Trials of a condition share the rates. """
    rng = np.random.default_rng(seed)
    z = lorenz_latents(rng, n_conditions, n_bins, integration_dt)    # (C, T, 3)
    W = rng.uniform(-1.0, 1.0, size=(3, n_neurons))
    b = math.log(base_rate * dt)
    rates = np.exp(z @ W + b)                                         # (C, T, N) counts per bin
    cond, train, valid = _split_by_condition(n_conditions, trials_per_condition, n_valid_per_condition)
    rates_tr = rates[cond]                                            # (trials, T, N)
    counts = rng.poisson(rates_tr).astype(np.float32)
    data = _assemble(counts, (rates_tr / dt).astype(np.float32), z[cond].astype(np.float32), None,
                     cond, train, valid, dt)
    data["readout_weights"] = W.astype(np.float32)
    return data


def make_lorenz_sessions(neurons=(30, 40), n_conditions=65, trials_per_condition=20, n_valid_per_condition=4,
                         n_bins=100, dt=0.01, base_rate=5.0, integration_dt=0.006, seed=0):
    """ The same Lorenz latents recorded in several sessions, each by its own set of neurons (one session per
    entry of `neurons`): every session sees the same conditions (same x0, hence the same latent trajectories),
    through its own read-out W_s ~ U(-1, 1) and with its own Poisson spikes. Returns a list of dataset dicts
    (the layout of make_lorenz, with the true latents and `readout_weights`). """
    rng = np.random.default_rng(seed)
    z = lorenz_latents(rng, n_conditions, n_bins, integration_dt)    # (C, T, 3), shared by every session
    b = math.log(base_rate * dt)
    cond, train, valid = _split_by_condition(n_conditions, trials_per_condition, n_valid_per_condition)
    sessions = []
    for n in neurons:
        W = rng.uniform(-1.0, 1.0, size=(3, n))
        rates = np.exp(z @ W + b)[cond]                                 # (trials, T, N_s) counts per bin
        counts = rng.poisson(rates).astype(np.float32)
        d = _assemble(counts, (rates / dt).astype(np.float32), z[cond].astype(np.float32), None,
                      cond, train, valid, dt)
        d["readout_weights"] = W.astype(np.float32)
        sessions.append(d)
    return sessions


def make_lorenz_gaussian(n_channels=30, noise_std=0.5, n_conditions=65, trials_per_condition=20,
                         n_valid_per_condition=4, n_bins=100, dt=0.01, integration_dt=0.006, seed=0):
    """ A continuous (Gaussian) variant of the Lorenz data, like binned fluorescence or LFP features:
    y = W z + noise_std * N(0, 1) with W ~ U(-1, 1) per channel; the data are signed and fractional.
    `{split}_truth` holds the noise-free mean W z (conversion_factor 1). Load it back with
    load_h5(path, counts=False, nonnegative=False). """
    rng = np.random.default_rng(seed)
    z = lorenz_latents(rng, n_conditions, n_bins, integration_dt)
    W = rng.uniform(-1.0, 1.0, size=(3, n_channels))
    cond, train, valid = _split_by_condition(n_conditions, trials_per_condition, n_valid_per_condition)
    mean = (z @ W)[cond]                                              # (trials, T, N)
    y = (mean + noise_std * rng.normal(size=mean.shape)).astype(np.float32)
    d = _assemble(y, mean.astype(np.float32), z[cond].astype(np.float32), None, cond, train, valid, dt)
    d["conversion_factor"] = np.float64(1.0)
    d["readout_weights"] = W.astype(np.float32)
    return d


def make_lorenz_rate(n_neurons=30, n_trials=1300, n_bins=100, mean_rate_hz=5.0, valid_fraction=0.2,
                     trials_per_condition=10, gain=1.0, dt=0.01, integration_dt=0.006, seed=0):
    """ make_lorenz's Lorenz-driven Poisson neurons at a chosen mean rate: log rate = W z + b with
    W ~ gain * U(-1, 1) (3 x N; gain sets how deeply the rates are modulated) and one offset b set so that the true rates average mean_rate_hz over neurons, trials
    and bins. n_trials are n_trials / trials_per_condition conditions (Lorenz initial states) of
    trials_per_condition trials each; the last round(valid_fraction * trials_per_condition) trials of every
    condition are validation trials. Keys as make_lorenz (truth in Hz, conversion_factor 1/dt, latents). """
    if n_trials % trials_per_condition:
        raise ValueError(f"make_lorenz_rate: n_trials={n_trials} is not a multiple of trials_per_condition={trials_per_condition}")
    n_valid = int(round(valid_fraction * trials_per_condition))
    if not 0 < n_valid < trials_per_condition:
        raise ValueError(f"make_lorenz_rate: valid_fraction={valid_fraction} leaves no train or no valid trials")
    if not mean_rate_hz > 0:
        raise ValueError(f"make_lorenz_rate: mean_rate_hz must be > 0, got {mean_rate_hz}")
    rng = np.random.default_rng(seed)
    C = n_trials // trials_per_condition
    z = lorenz_latents(rng, C, n_bins, integration_dt)               # (C, T, 3)
    W = gain * rng.uniform(-1.0, 1.0, size=(3, n_neurons))
    shape = np.exp(z @ W)                                            # (C, T, N), up to the offset
    rates = shape * (mean_rate_hz * dt / shape.mean())               # counts per bin, mean = mean_rate_hz * dt
    cond, train, valid = _split_by_condition(C, trials_per_condition, n_valid)
    rates_tr = rates[cond]
    counts = rng.poisson(rates_tr).astype(np.float32)
    data = _assemble(counts, (rates_tr / dt).astype(np.float32), z[cond].astype(np.float32), None,
                     cond, train, valid, dt)
    data["readout_weights"] = W.astype(np.float32)
    return data


# -----------------------------------------------------------------------------
# a chaotic rate network (Sompolinsky et al. 1988), with input pulses (original LFADS data) or at any rate


def make_chaotic_rnn(n_conditions=400, trials_per_condition=10, n_valid_per_condition=2, n_neurons=50,
                     n_bins=100, g=None, with_inputs=False, input_magnitude=20.0, tau=0.025, dt=0.01,
                     max_rate=30.0, seed=0):
    """ A chaotic rate network (original LFADS synthetic data): x <- (1 - dt/tau) x + (dt/tau) (g W tanh(x) + b u),
    W ~ N(0, 1/N), r = tanh(x) min-max normalised to [0, 1] per trial and neuron, spikes ~ Poisson(r max_rate dt).
    Conditions differ in their initial state x0 ~ N(0, 1). With inputs, each trial receives one pulse of
    size input_magnitude at a random bin in [T/4, 3T/4) through a random input vector b ~ N(0, 1), as in the
    original LFADS generator (a kick of (dt/tau) * 20 = 8 standard units per neuron: a visible perturbation). """
    rng = np.random.default_rng(seed)
    g = (2.5 if with_inputs else 1.5) if g is None else g
    N, T = n_neurons, n_bins
    W = rng.normal(size=(N, N)) / math.sqrt(N)
    b_in = rng.normal(size=N)
    x0 = rng.normal(size=(n_conditions, N))
    cond, train, valid = _split_by_condition(n_conditions, trials_per_condition, n_valid_per_condition)
    n_trials = len(cond)
    u = np.zeros((n_trials, T))
    if with_inputs:
        t_pulse = rng.integers(T // 4, 3 * T // 4, size=n_trials)
        u[np.arange(n_trials), t_pulse] = input_magnitude
    a = dt / tau
    x = x0[cond].copy()                                               # (trials, N)
    xs = np.empty((n_trials, T, N))
    for t in range(T):
        x = (1 - a) * x + a * (g * np.tanh(x) @ W.T + np.outer(u[:, t], b_in))
        xs[:, t] = x
    r = np.tanh(xs)
    lo, hi = r.min(axis=1, keepdims=True), r.max(axis=1, keepdims=True)
    r = (r - lo) / np.maximum(hi - lo, 1e-12)                         # [0, 1] per trial and neuron
    rates_hz = r * max_rate
    counts = rng.poisson(rates_hz * dt).astype(np.float32)
    inputs = u[..., None].astype(np.float32) if with_inputs else None
    return _assemble(counts, rates_hz.astype(np.float32), None, inputs, cond, train, valid, dt)


def make_chaotic_rnn_rate(n_neurons=50, n_trials=1000, n_bins=100, mean_rate_hz=5.0, valid_fraction=0.2,
                          trials_per_condition=10, g=1.5, tau=0.025, dt=0.01, seed=0):
    """ make_chaotic_rnn's autonomous chaotic network (no inputs) at a chosen mean rate: the [0, 1] rate
    profiles are scaled so that the true rates average mean_rate_hz. Conditions and splits as
    make_lorenz_rate. The network's state is its own latent (N-dimensional): no `latents` key. """
    if n_trials % trials_per_condition:
        raise ValueError(f"make_chaotic_rnn_rate: n_trials={n_trials} is not a multiple of trials_per_condition={trials_per_condition}")
    n_valid = int(round(valid_fraction * trials_per_condition))
    if not 0 < n_valid < trials_per_condition:
        raise ValueError(f"make_chaotic_rnn_rate: valid_fraction={valid_fraction} leaves no train or no valid trials")
    d = make_chaotic_rnn(n_conditions=n_trials // trials_per_condition, trials_per_condition=trials_per_condition,
                         n_valid_per_condition=n_valid, n_neurons=n_neurons, n_bins=n_bins, g=g, tau=tau, dt=dt,
                         max_rate=1.0, seed=seed)
    # make_chaotic_rnn drew Poisson counts at max_rate 1 Hz; draw them again at the chosen rate
    rng = np.random.default_rng([seed, 11])
    scale = mean_rate_hz / np.mean(np.concatenate([d["train_truth"].ravel(), d["valid_truth"].ravel()]))
    for split in ("train", "valid"):
        truth = (d[f"{split}_truth"] * scale).astype(np.float32)      # Hz
        d[f"{split}_truth"] = truth
        counts = rng.poisson(truth.astype(np.float64) * dt).astype(np.float32)
        d[f"{split}_encod_data"] = counts
        d[f"{split}_recon_data"] = counts
    return d


# -----------------------------------------------------------------------------
# neurons tuned to the phase of a 2-D rotation, the latent SPARKS decodes (notebook 03)


def make_rotation(n_trials=100, n_valid=20, n_neurons=100, n_bins=150, dt=0.01, freq_range=(0.5, 1.5),
                  p_base=0.05, p_max=0.6, kappa=2.3, seed=0, tuning_seed=None):
    """ Bernoulli neurons tuned to the phase of a 2-D rotation, the decoding task used to benchmark SPARKS
    (Skatchkovsky et al. 2024). Each trial rotates at f ~ U(freq_range) Hz from a random phase:
    theta_t = phi0 + 2 pi f t dt; the latent is (cos, sin) theta. Neuron n fires in a bin with probability
    p = p_base + p_max exp(kappa (cos(theta - pref_n) - 1)) (a von Mises bump around its preferred phase;
    gain ~ U(0.5, 1) scales p_max). The first n_trials - n_valid trials are 'train', the rest 'valid'.
    tuning_seed (default: seed) draws the neurons, so two sessions with different tuning_seed record different
    neurons of the same kind of rotation. The default tuning (~18 Hz mean rate) is calibrated to sparks-ai
    0.2.1's synthetic rotation setting (100 neurons, 150 bins of 10 ms), whose true-rate ceiling we measured at
    0.469 bits/spike: the true probabilities here score 0.47 bits/spike (bits_per_spike, the NLB Poisson
    definition; 0.60 with a Bernoulli likelihood).
    Keys: {split}_encod_data / _recon_data (binary spikes), _latents (cos, sin), _phase, _freq, _truth
    (firing probability / dt, in Hz; counts per bin = truth / conversion_factor), tuning_pref, tuning_gain. """
    if not 0 < n_valid < n_trials:
        raise ValueError(f"make_rotation: need 0 < n_valid < n_trials, got n_valid={n_valid}, n_trials={n_trials}")
    rng_t = np.random.default_rng(seed if tuning_seed is None else tuning_seed)
    pref = rng_t.uniform(0, 2 * np.pi, n_neurons)
    gain = rng_t.uniform(0.5, 1.0, n_neurons)
    rng = np.random.default_rng([seed, 7])
    freq = rng.uniform(*freq_range, n_trials)
    phi0 = rng.uniform(0, 2 * np.pi, n_trials)
    theta = phi0[:, None] + 2 * np.pi * freq[:, None] * np.arange(n_bins)[None, :] * dt      # (trials, T)
    p = rotation_probabilities(theta, pref, gain, p_base, p_max, kappa)                      # (trials, T, N)
    spikes = (rng.random(p.shape) < p).astype(np.float32)
    latents = np.stack([np.cos(theta), np.sin(theta)], -1).astype(np.float32)
    data = {}
    for split, sl in (("train", slice(0, n_trials - n_valid)), ("valid", slice(n_trials - n_valid, n_trials))):
        data[f"{split}_encod_data"] = spikes[sl]
        data[f"{split}_recon_data"] = spikes[sl]
        data[f"{split}_latents"] = latents[sl]
        data[f"{split}_phase"] = np.mod(theta[sl], 2 * np.pi).astype(np.float32)
        data[f"{split}_freq"] = freq[sl].astype(np.float32)
        data[f"{split}_truth"] = (p[sl] / dt).astype(np.float32)
    data.update(tuning_pref=pref.astype(np.float32), tuning_gain=gain.astype(np.float32),
                tuning=np.array([p_base, p_max, kappa], np.float64),
                conversion_factor=np.float64(1.0 / dt), dt=np.float64(dt))
    return data


def rotation_probabilities(theta, pref, gain, p_base=0.05, p_max=0.6, kappa=2.3):
    """ firing probability per bin of neurons (pref, gain) at phases theta (..., T) -> (..., T, N) """
    d = np.asarray(theta, np.float64)[..., None] - np.asarray(pref, np.float64)
    return p_base + p_max * np.asarray(gain, np.float64) * np.exp(kappa * (np.cos(d) - 1.0))


def rotation_truth(data, split):
    """ the true firing probabilities (trials, T, N) of a rotation dataset, from its phases and tuning (works
    for the shipped files too, which leave the _truth arrays out to stay small) """
    if f"{split}_truth" in data:
        return true_rates(data, split)
    p_base, p_max, kappa = (float(v) for v in np.asarray(data["tuning"]))
    return rotation_probabilities(data[f"{split}_phase"], data["tuning_pref"], data["tuning_gain"],
                                  p_base, p_max, kappa).astype(np.float32)


def make_rotation_sessions(n_sessions=2, n_neurons=(60, 40), n_trials=100, n_valid=20, seed=0, **kw):
    """ Several recordings of the same kind of rotation with different neurons (and different trials):
    a list of make_rotation datasets, session k drawn with seed (seed, k) and its own tuning. """
    if len(n_neurons) != n_sessions:
        raise ValueError(f"make_rotation_sessions: n_neurons has {len(n_neurons)} entries for {n_sessions} sessions")
    return [make_rotation(n_trials=n_trials, n_valid=n_valid, n_neurons=n, seed=seed * 1000 + 101 * (k + 1),
                          tuning_seed=seed * 1000 + 202 * (k + 1), **kw) for k, n in enumerate(n_neurons)]


# -----------------------------------------------------------------------------
# circuits with a known truth (notebook 07): spikes from the ring attractor and from a bistable E/I network


def make_ring_trials(n_trials=500, n_valid=100, n_recorded=60, n_ring=120, n_bins=50, dt=0.02, J0=-2.0, J1=4.0,
                     I=1.0, tau=0.02, noise=0.2, cue_prob=0.5, cue_window=(0.3, 0.7), cue_duration=0.1,
                     cue_amplitude=1.5, init_scale=(1.0, 1.0), base_rate=2.0, rate_scale=20.0, sim_dt=1e-3, seed=0):
    """ Spikes from the ring attractor of notebook 06 (circuits.ring_config: threshold-linear, cosine couplings
    J0 + J1 cos, a bump for J1 > 2), with the circuit's state as truth. Each trial starts from the theory's bump
    (circuits.ring_bump) at a random phase, scaled by a factor uniform in init_scale (away from 1: the trial starts
    off the attractor and relaxes onto it); input noise (std `noise`, circuits' convention) makes it drift; on a
    fraction cue_prob of the trials a cue cue_amplitude * cos(theta - angle) at a random angle, for cue_duration s
    at a random time in cue_window, moves the bump there. A random subset of n_recorded of the n_ring neurons is
    recorded: rate (Hz) = base_rate + rate_scale * r at the end of each bin of dt s, and Poisson counts per bin.
    All trials run as one batched simulation (sim_dt steps), in a few seconds.
    Keys: {split}_encod_data / _recon_data (counts), _truth (Hz; / conversion_factor = counts per bin),
    _latents (cos, sin of the bump phase, (trials, T, 2)), _phase (trials, T) radians, _cue_time (s, nan without
    a cue), _cue_angle (nan without), _inputs (trials, T, 1): 1 in the bins where the cue is on;
    neuron_angles (n_recorded,) preferred angle of each recorded neuron, neuron_index, dt, conversion_factor,
    ring_params [J0, J1, I, tau, noise]. """
    from .circuits import Circuit, ring_config, ring_bump
    _check_trials("make_ring_trials", n_trials, n_valid, n_bins, dt)
    if not 0 < n_recorded <= n_ring:
        raise ValueError(f"make_ring_trials: need 0 < n_recorded <= n_ring, got n_recorded={n_recorded}, n_ring={n_ring}")
    if J1 <= 2:
        raise ValueError(f"make_ring_trials: J1 must be > 2 for a bump to exist, got J1={J1}")
    steps_per_bin = int(round(dt / sim_dt))
    if steps_per_bin < 1 or abs(steps_per_bin * sim_dt - dt) > 1e-9:
        raise ValueError(f"make_ring_trials: dt={dt} must be a whole number of sim_dt={sim_dt} steps")
    rng = np.random.default_rng(seed)
    ring = Circuit(ring_config(J0=J0, J1=J1, I=I, n=n_ring, tau=tau, dt=sim_dt), native=False)
    th = ring.angles(0).numpy()                                               # (n_ring,)
    tc, A = ring_bump(J0, J1, I)
    phi0 = rng.uniform(0, 2 * np.pi, n_trials)
    scale = rng.uniform(*init_scale, n_trials)[:, None]
    r0 = scale * A * np.clip(np.cos(th[None] - phi0[:, None]) - math.cos(tc), 0, None)   # (trials, n_ring): the bump
    has_cue = rng.random(n_trials) < cue_prob
    cue_angle = np.where(has_cue, rng.uniform(0, 2 * np.pi, n_trials), np.nan)
    cue_time = np.where(has_cue, rng.uniform(*cue_window, n_trials), np.nan)
    cue_time = np.round(cue_time / sim_dt) * sim_dt                           # on the simulation's grid
    start = np.where(has_cue, np.round(np.nan_to_num(cue_time) / sim_dt), -1).astype(np.int64)
    stop = np.where(has_cue, start + int(round(cue_duration / sim_dt)), -1)   # no cue: an empty interval
    V = torch.tensor(cue_amplitude * np.cos(th[None] - np.nan_to_num(cue_angle)[:, None]), dtype=torch.float32)
    start_t, stop_t = torch.as_tensor(start), torch.as_tensor(stop)

    def cue(i):  # (trials, n_ring): the cue on the trials where it is on at step i
        return V * ((start_t <= i) & (i < stop_t)).float()[:, None]

    out = ring.simulate(n_bins * dt, r0=torch.tensor(r0, dtype=torch.float32), M0=torch.ones(n_trials),
                        stimulus=cue, noise=noise, seed=int(rng.integers(2 ** 31)), record_every=steps_per_bin)
    r = out["rates"].numpy()                                                  # (trials, T, n_ring)
    phase = ring_phase(r, th)                                                 # (trials, T)
    idx = np.sort(rng.choice(n_ring, n_recorded, replace=False))
    hz = base_rate + rate_scale * r[..., idx]                                 # (trials, T, n_recorded)
    counts = rng.poisson(hz * dt).astype(np.float32)
    t_end = (np.arange(n_bins) + 1) * dt                                      # end of each bin (s)
    t_beg = t_end - dt
    on = (np.nan_to_num(cue_time, nan=np.inf)[:, None] < t_end) & \
         (np.nan_to_num(cue_time, nan=np.inf)[:, None] + cue_duration > t_beg)   # (trials, T) bins the cue overlaps
    arrays = dict(encod_data=counts, recon_data=counts, truth=hz.astype(np.float32),
                  latents=np.stack([np.cos(phase), np.sin(phase)], -1).astype(np.float32),
                  phase=phase.astype(np.float32), cue_time=cue_time.astype(np.float32),
                  cue_angle=cue_angle.astype(np.float32), inputs=on[..., None].astype(np.float32))
    data = _split_trials(arrays, n_trials, n_valid)
    data.update(neuron_angles=th[idx].astype(np.float32), neuron_index=idx.astype(np.int64),
                ring_params=np.array([J0, J1, I, tau, noise], np.float64),
                conversion_factor=np.float64(1.0 / dt), dt=np.float64(dt))
    return data


def make_bistable_trials(n_trials=500, n_valid=100, n_recorded=40, frac_exc=0.75, n_bins=50, dt=0.02,
                         J=((12.0, -4.0), (10.0, -2.0)), I=(-5.0, -6.0), tau=(0.05, 0.025), pulse_prob=0.5,
                         pulse_window=(0.3, 0.7), pulse_duration=0.05, pulse_amplitude=6.0, max_rate=30.0,
                         base_range=(2.0, 5.0), gain_range=(0.5, 1.5), sim_dt=1e-3, seed=0):
    """ Spikes from the bistable E/I network of notebook 06 (two all-to-all sigmoid populations,
    tau_A dr_A/dt = -r_A + sigmoid(sum_B J_AB r_B + I_A); low and high stable states and a saddle between them,
    circuits.ei_fixed_points). Each trial starts from a random state (r_E, r_I uniform in [0, 1]) and relaxes to
    one of the two states; on a fraction pulse_prob of the trials a pulse of pulse_amplitude on the E input, for
    pulse_duration s at a random time in pulse_window, pushes it to the high state. n_recorded neurons, the
    first round(frac_exc * n_recorded) excitatory: neuron n fires at base_n + gain_n * max_rate * r_pop(n) Hz
    (base_n, gain_n uniform in base_range, gain_range), Poisson counts in bins of dt s.
    Keys: {split}_encod_data / _recon_data, _truth (Hz), _latents (r_E, r_I) (trials, T, 2), _state (trials, T):
    1 where r_E is above the saddle's r_E, _pulse_time (s, nan without a pulse), _inputs (trials, T, 1): 1 in the
    bins the pulse overlaps; neuron_pop (0 = E, 1 = I), neuron_base, neuron_gain, max_rate, J, I, tau,
    fixed_points (K, 3): the circuit's fixed points [r_E, r_I, stable] from ei_fixed_points, dt, conversion_factor. """
    from .circuits import Circuit, CircuitConfig, ei_fixed_points
    _check_trials("make_bistable_trials", n_trials, n_valid, n_bins, dt)
    n_exc = int(round(frac_exc * n_recorded))
    if n_recorded < 2 or not 0 < n_exc < n_recorded:
        raise ValueError(f"make_bistable_trials: need excitatory and inhibitory neurons, got n_recorded={n_recorded}, "
                         f"frac_exc={frac_exc}")
    steps_per_bin = int(round(dt / sim_dt))
    if steps_per_bin < 1 or abs(steps_per_bin * sim_dt - dt) > 1e-9:
        raise ValueError(f"make_bistable_trials: dt={dt} must be a whole number of sim_dt={sim_dt} steps")
    fps = ei_fixed_points(J, I, "sigmoid", tau)
    if sum(s for *_, s in fps) != 2:
        raise ValueError(f"make_bistable_trials: J={J}, I={I} do not give two stable states (fixed points {fps})")
    rng = np.random.default_rng(seed)
    n_pop = 10                                                                # all-to-all: every neuron of a population is alike
    cfg = CircuitConfig(names=("E", "I"), sizes=(n_pop, n_pop), tau=tuple(tau), tau_syn=(0.0, 0.0),
                        transfer="sigmoid", threshold=(0.0, 0.0), J=J, J0=tuple(I), M0=1.0, conn="all",
                        K=(n_pop, n_pop), balanced=False, dt=sim_dt)
    net = Circuit(cfg, native=False)
    r0 = rng.uniform(0, 1, (n_trials, 2))
    has = rng.random(n_trials) < pulse_prob
    pulse_time = np.where(has, np.round(rng.uniform(*pulse_window, n_trials) / sim_dt) * sim_dt, np.nan)
    start_t = torch.as_tensor(np.where(has, np.round(np.nan_to_num(pulse_time) / sim_dt), -1).astype(np.int64))
    stop_t = torch.where(start_t >= 0, start_t + int(round(pulse_duration / sim_dt)), -1)   # no pulse: empty
    kick = torch.cat([torch.full((n_pop,), float(pulse_amplitude)), torch.zeros(n_pop)])   # (N,) onto E only

    def stim(i):
        return kick[None] * ((start_t <= i) & (i < stop_t)).float()[:, None]

    out = net.simulate(n_bins * dt, r0=torch.tensor(np.repeat(r0, n_pop, axis=1), dtype=torch.float32),
                       M0=torch.ones(n_trials), stimulus=stim, record_every=steps_per_bin)
    pop = out["pop_rates"].numpy().astype(np.float64)                         # (trials, T, 2)
    neuron_pop = (np.arange(n_recorded) >= n_exc).astype(np.int64)
    base = rng.uniform(*base_range, n_recorded)
    gain = rng.uniform(*gain_range, n_recorded)
    hz = base + gain * max_rate * pop[..., neuron_pop]                        # (trials, T, n_recorded)
    counts = rng.poisson(hz * dt).astype(np.float32)
    saddle = [f for f in fps if not f[2]][0]
    t_end = (np.arange(n_bins) + 1) * dt
    pt = np.nan_to_num(pulse_time, nan=np.inf)[:, None]
    on = (pt < t_end) & (pt + pulse_duration > t_end - dt)
    arrays = dict(encod_data=counts, recon_data=counts, truth=hz.astype(np.float32), latents=pop.astype(np.float32),
                  state=(pop[..., 0] > saddle[0]).astype(np.int8), pulse_time=pulse_time.astype(np.float32),
                  inputs=on[..., None].astype(np.float32))
    data = _split_trials(arrays, n_trials, n_valid)
    data.update(neuron_pop=neuron_pop, neuron_base=base.astype(np.float32), neuron_gain=gain.astype(np.float32),
                max_rate=np.float64(max_rate), J=np.asarray(J, np.float64), I=np.asarray(I, np.float64),
                tau=np.asarray(tau, np.float64), fixed_points=np.array([[a, b, s] for a, b, s in fps], np.float64),
                conversion_factor=np.float64(1.0 / dt), dt=np.float64(dt))
    return data


def bistable_readout(data, r_pop):
    """ the recorded neurons' rates (Hz) for population rates r_pop (..., 2) = (r_E, r_I) of a make_bistable_trials
    dataset: base_n + gain_n * max_rate * r_pop(n) -> (..., n_recorded) """
    r = np.asarray(r_pop, np.float64)
    return data["neuron_base"] + data["neuron_gain"] * float(data["max_rate"]) * r[..., np.asarray(data["neuron_pop"])]


# -----------------------------------------------------------------------------
# a suite of datasets that spans what labs record (issue 11): Lorenz and chaotic-RNN dynamics at mean rates of
# 1-20 Hz, 20-200 neurons, 200-2000 trials, 50-200 bins. benchmarks/lfads_datasets.py trains the command line's
# defaults on every one of them. Each dataset has its true rates (Hz) and, for Lorenz, its true latents.

# name -> (generator, keyword arguments). 'lorenz_sparse' is built like the public dataset of issue 11: 60 neurons
# at ~1.8 Hz, 640 / 160 trials of 100 bins, saved in the original LFADS layout with truth in Hz and no
# conversion_factor; gain 1.09 makes its true rates score ~0.95 bits/spike, as the public file's do (0.958).
SUITE = {
    "lorenz_sparse": (make_lorenz_rate, dict(n_neurons=60, n_trials=800, n_bins=100, mean_rate_hz=1.8, gain=1.09,
                                             trials_per_condition=10, seed=101)),
    "lorenz_small": (make_lorenz_rate, dict(n_neurons=20, n_trials=200, n_bins=50, mean_rate_hz=10.0,
                                            trials_per_condition=10, seed=102)),
    "lorenz_dense": (make_lorenz_rate, dict(n_neurons=200, n_trials=400, n_bins=100, mean_rate_hz=20.0,
                                            trials_per_condition=10, seed=103)),
    "lorenz_long": (make_lorenz_rate, dict(n_neurons=40, n_trials=600, n_bins=200, mean_rate_hz=1.0,
                                           trials_per_condition=10, seed=104)),
    "rnn_sparse": (make_chaotic_rnn_rate, dict(n_neurons=50, n_trials=1000, n_bins=100, mean_rate_hz=2.0,
                                               trials_per_condition=10, seed=105)),
    "rnn_many": (make_chaotic_rnn_rate, dict(n_neurons=100, n_trials=2000, n_bins=50, mean_rate_hz=8.0,
                                             trials_per_condition=10, seed=106)),
}


def make_suite(name):
    """ one dataset of the suite (see SUITE) by name; 'lorenz_sparse' in the original LFADS layout """
    if name not in SUITE:
        raise KeyError(f"unknown suite dataset {name!r}; choose from {sorted(SUITE)}")
    fn, kw = SUITE[name]
    d = fn(**kw)
    return to_original_lfads(d) if name == "lorenz_sparse" else d


# -----------------------------------------------------------------------------
# the shipped examples in eg_data/ and how to make them again (`python -m minilatent make-eg-data`)


def _small(d):
    """ a rotation dataset without the _truth arrays (rotation_truth rebuilds them): files stay ~0.3 MB """
    return {k: v for k, v in d.items() if not k.endswith("_truth")}


EXAMPLES = {
    "lorenz": lambda: make_lorenz(seed=0),
    "chaotic_rnn_inputs": lambda: make_chaotic_rnn(n_conditions=24, trials_per_condition=10,
                                                   with_inputs=True, seed=1),
    "rotation": lambda: _small(make_rotation(seed=0)),
    "rotation_session0": lambda: _small(make_rotation_sessions(seed=0)[0]),
    "rotation_session1": lambda: _small(make_rotation_sessions(seed=0)[1]),
    # derived from a real recording (not synthetic, no truth): needs the raw file, see datafiles.raw_data_dir
    "m1_reaching": make_m1_reaching,
}
FROM_RECORDINGS = ("m1_reaching",)       # made from a raw file that is not shipped; skipped when it is absent


def make_eg_data(folder=EG_DATA, names=None, raw=None, log=print):
    """ (Re)generate the example datasets bit for bit; returns the paths written. The examples derived from
    recordings read their raw file from `raw` (default: datafiles.raw_data_dir()); without it they are skipped
    with one line to `log`. A dict's 'attrs' entry becomes the file's HDF5 attributes. """
    out = []
    for name in names or EXAMPLES:
        p = os.path.join(folder, f"{name}.h5")
        try:
            d = EXAMPLES[name](raw) if name in FROM_RECORDINGS else EXAMPLES[name]()
        except FileNotFoundError as e:
            if name not in FROM_RECORDINGS:
                raise
            log(f"skipped {name}.h5: {e}")
            continue
        attrs = d.pop("attrs", None)
        save_h5(p, d, attrs=attrs)
        out.append(p)
    return out
