"""
Fixed points and slow points of a step map h -> step(h), in one file. It imports only torch and the standard
library: copy it next to any recurrent model (lfads.py's lfads_generator_step makes the step of a trained LFADS).

analysis: fixed points and slow points of a trained generator (Sussillo & Barak 2013, "Opening the black box:
low-dimensional dynamics in high-dimensional recurrent neural networks"; Golub & Sussillo 2018, FixedPointFinder)

A step map h -> step(h) (the generator's update with a constant input) has a fixed point where step(h) = h. Near
one, h_{t+1} - h* ~ J (h_t - h*) with J the Jacobian of step at h*: the eigenvalues of J say which directions
decay (|lambda| < 1), grow (|lambda| > 1) or stay (|lambda| ~ 1). To find them, minimise the "speed"

    q(h) = 1/2 ||step(h) - h||^2          (q = 0 exactly at a fixed point)

from many starts on the model's own trajectories. Points where q has a local minimum above zero, or is merely
tiny, are *slow points*: the flow nearly stops there (the ghost of a fixed point that almost exists, or a point
of a continuous attractor that a finite network only approximates). They are reported apart from fixed points.

The minimiser is Levenberg-Marquardt, per start and batched: with the residual F = step(h) - h and its Jacobian
J_F = J - I, a step solves (J_F^T J_F + mu I) d = -J_F^T F, with mu shrunk after a step that lowers q and grown
after one that does not. q is a sum of squares, so this Gauss-Newton method converges quadratically to a fixed
point (q reaches 1e-20 in a few dozen steps, where the Adam of FixedPointFinder needs thousands and ends at a
tolerance), and each start has its own mu (a line search of L-BFGS on the summed q would couple the starts).
The Jacobians it needs anyway give the eigenvalues at the end.

"""

import math
import numbers

import torch

# -----------------------------------------------------------------------------

def jacobians(step, h):
    """ d step(h)_b / d h_b for every row b: (B, H, H). step must act on each row of h (B, H) independently. """
    try:  # reverse mode, vectorised over the H output directions
        jac = torch.func.jacrev(lambda x: step(x).sum(0))(h)             # (H, B, H)
        return jac.permute(1, 0, 2)
    except Exception:  # a step that torch.func cannot transform: one backward pass per output dimension
        x = h.detach().requires_grad_(True)
        with torch.enable_grad():
            y = step(x)
            rows = [torch.autograd.grad(y[:, i].sum(), x, retain_graph=True)[0] for i in range(y.shape[1])]
        return torch.stack(rows, 1)                                       # (B, H, H)


def find_fixed_points(step, h0, tol=1e-8, max_iters=200, unique_tol=1e-3, slow_tol=1e-5, noise=0.0, seed=0,
                      stop_q=None, max_step=0.5, mu=1e-3):
    """ Fixed points (and slow points) of h -> step(h), minimising q(h) = 1/2 ||step(h) - h||^2 from each start.

    step: a function (B, H) -> (B, H) acting on each row independently (e.g. lfads_generator_step(model)); it runs
          in the dtype of h0 (float64 gives exact fixed points; a float32 step reaches q ~ 1e-13).
    h0: (B, H) starts, e.g. states of the model's own trajectories; noise: std of Gaussian noise added to them
        (seeded by seed) so that starts leave the trajectories and find unstable points too.
    tol: q below tol is a fixed point. slow_tol: tol <= q < slow_tol at the end is a slow point.
    stop_q: None: every start runs until q stops falling (to round-off at a fixed point, so the starts that found
        one point agree to ~1e-7 and merge into it); then tol and slow_tol classify it. A number: a start stops as
        soon as q < stop_q, as FixedPointFinder stops at its tolerance. On a nearly continuous attractor (a ring
        trained into a network) q is tiny all along it but zero only at a few isolated points: polishing slides
        every start to those, an early stop (stop_q between the ring's q and the q off it) leaves the starts
        spread along the ring, as slow points.
    max_iters: Levenberg-Marquardt iterations at most; mu: its initial damping; max_step: the longest step of one
        iteration relative to the state's size, max_step * (1 + ||h||) (a trust region): near a nearly neutral
        direction the Gauss-Newton step is huge and would throw a start far from where it began (into the saturated
        corners of a GRU, whose closed gates freeze every state: fixed points no trajectory visits).
    unique_tol: points closer than this (Euclidean) are one point (the one with the smallest q is kept).
    Returns a dict of torch tensors: points (K, H) and q (K,) of the fixed points, eigvals (K, H) complex (the
    eigenvalues of the Jacobian of step there, largest |lambda| first), stable (K,) bool (every |lambda| < 1),
    jacobians (K, H, H); the same for the slow points under slow_points, slow_q, slow_eigvals, slow_stable,
    slowjacobians; and every start's end point and q (final, final_q: (B, H), (B,)) and iters (int). """
    if not callable(step):
        raise TypeError(f"find_fixed_points: step must be a function (B, H) -> (B, H), got {type(step).__name__}")
    if not isinstance(h0, torch.Tensor) or h0.dim() != 2 or not h0.is_floating_point() or h0.shape[0] < 1:
        raise ValueError(f"find_fixed_points: h0 must be a floating-point tensor of starts (B, H), got "
                         f"{type(h0).__name__}{'' if not isinstance(h0, torch.Tensor) else ' ' + str(tuple(h0.shape)) + ' ' + str(h0.dtype)}")
    if not torch.isfinite(h0).all():
        raise ValueError("find_fixed_points: h0 contains NaN or infinite values")
    for name, v in (("tol", tol), ("slow_tol", slow_tol), ("mu", mu), ("max_step", max_step)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"find_fixed_points: {name} must be a number > 0, got {v!r}")
    if slow_tol <= tol:
        raise ValueError(f"find_fixed_points: slow_tol={slow_tol} must be larger than tol={tol}")
    if isinstance(max_iters, bool) or not isinstance(max_iters, numbers.Integral) or max_iters < 1:
        raise ValueError(f"find_fixed_points: max_iters must be an integer >= 1, got {max_iters!r}")
    if not (isinstance(unique_tol, (int, float)) and unique_tol >= 0):
        raise ValueError(f"find_fixed_points: unique_tol must be a number >= 0, got {unique_tol!r}")
    if not (isinstance(noise, (int, float)) and noise >= 0):
        raise ValueError(f"find_fixed_points: noise must be a number >= 0, got {noise!r}")
    h = h0.detach().clone()
    if noise > 0:
        g = torch.Generator(device=h.device).manual_seed(int(seed))
        h = h + noise * torch.randn(h.shape, generator=g, device=h.device, dtype=h.dtype)
    with torch.no_grad():
        out = step(h)
    if not isinstance(out, torch.Tensor) or out.shape != h.shape:
        raise ValueError(f"find_fixed_points: step must return a tensor of the shape of its input {tuple(h.shape)}, "
                         f"got {tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")

    def speed(x):  # q per row, (B,)
        with torch.no_grad():
            return 0.5 * (step(x) - x).pow(2).sum(-1)

    B, H = h.shape
    eye = torch.eye(H, dtype=h.dtype, device=h.device)
    q = speed(h)
    damp = torch.full((B,), float(mu), dtype=h.dtype, device=h.device)
    floor = H * (torch.finfo(h.dtype).eps * max(1.0, float(h.abs().max()))) ** 2   # q at round-off
    if stop_q is not None and not (isinstance(stop_q, (int, float)) and stop_q > 0):
        raise ValueError(f"find_fixed_points: stop_q must be None or a number > 0, got {stop_q!r}")
    stop_q = floor if stop_q is None else max(float(stop_q), floor)
    active = q >= stop_q
    it = 0
    for it in range(1, max_iters + 1):
        if not active.any():
            break
        idx = active.nonzero().squeeze(1)
        x = h[idx]
        with torch.no_grad():
            F_ = step(x) - x                                             # (b, H) residual
        Jf = jacobians(step, x).detach() - eye                          # (b, H, H)
        JtJ = Jf.transpose(1, 2) @ Jf
        grad = (Jf.transpose(1, 2) @ F_.unsqueeze(-1)).squeeze(-1)       # (b, H) = gradient of q
        A = JtJ + damp[idx, None, None] * eye
        d = -torch.linalg.solve(A, grad.unsqueeze(-1)).squeeze(-1)       # (b, H)
        limit = max_step * (1 + x.norm(dim=1, keepdim=True))             # trust region, relative to |h|
        d = d * (limit / torch.maximum(d.norm(dim=1, keepdim=True), limit))
        x_new = x + d
        q_new = speed(x_new)
        better = torch.isfinite(q_new) & (q_new < q[idx])
        h[idx[better]] = x_new[better]
        # no step lowers q any more: the damping has grown past any use, or q stopped falling (a local minimum)
        stalled = (~better & (damp[idx] > 1e12)) | (better & (q[idx] - q_new <= 1e-14 * q[idx]))
        q[idx[better]] = q_new[better]
        damp[idx] = torch.where(better, (damp[idx] / 3).clamp_min(1e-12), damp[idx] * 4)
        active[idx] = (q[idx] >= stop_q) & ~stalled

    fixed = q < tol
    slow = (~fixed) & (q < slow_tol)

    def unique(mask, keep_away=()):  # greedy: lowest q first, drop points within unique_tol of a kept one
        order = mask.nonzero().squeeze(1)
        order = order[torch.argsort(q[order])].tolist()
        kept = []
        ref = h[list(keep_away)] if len(keep_away) else h[:0]              # (k, H) points kept so far
        for i in order:
            if len(ref) == 0 or (ref - h[i]).norm(dim=1).min() > unique_tol:
                kept.append(i)
                ref = torch.cat([ref, h[i:i + 1]])
        return kept

    keep_fixed = unique(fixed)
    keep_slow = unique(slow, keep_fixed)
    res = {"final": h, "final_q": q, "iters": it}
    for prefix, keep in (("", keep_fixed), ("slow_", keep_slow)):
        ix = torch.tensor(keep, dtype=torch.long, device=h.device)
        pts = h[ix]
        jac = jacobians(step, pts).detach() if len(keep) else torch.zeros(0, H, H, dtype=h.dtype, device=h.device)
        ev = torch.linalg.eigvals(jac) if len(keep) else torch.zeros(0, H, dtype=torch.complex128, device=h.device)
        ev = torch.gather(ev, 1, torch.argsort(ev.abs(), dim=1, descending=True))
        key = "points" if not prefix else "slow_points"
        res.update({key: pts, f"{prefix}q": q[ix], f"{prefix}eigvals": ev,
                    f"{prefix}stable": (ev.abs() < 1).all(1), f"{prefix}jacobians": jac})
    return res
