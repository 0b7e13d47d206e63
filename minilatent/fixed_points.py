"""
Fixed points and slow points of a step map h -> F(h), in one file. It imports only torch and the standard library:
copy it next to any recurrent model (lfads.py's lfads_generator_step makes F from a trained LFADS generator).

References:
  Sussillo & Barak (2013) "Opening the black box: low-dimensional dynamics in high-dimensional recurrent neural
    networks", Neural Computation: the speed q and slow points
  Golub & Sussillo (2018) "FixedPointFinder: A Tensorflow toolbox for identifying and characterizing fixed points in
    recurrent neural networks", JOSS: many starts from the network's own states, noise on the starts, tolerances
  Levenberg (1944), Marquardt (1963): damped Gauss-Newton for a sum of squares
  Dennis & Schnabel (1983) "Numerical Methods for Unconstrained Optimization and Nonlinear Equations": the Newton step
    as an estimate of the distance to a root

A step map F (a trained RNN's update with its input held constant) has a fixed point h* where F(h*) = h*. Near one,

    h_{t+1} - h* ~ J (h_t - h*),      J = dF/dh at h*

and the eigenvalues of J say which directions decay (|lambda| < 1), grow (|lambda| > 1) or stay (|lambda| ~ 1).
To find the points, minimise the speed of Sussillo & Barak from many starts:

    r(h) = F(h) - h                   the residual
    q(h) = 1/2 ||r(h)||^2             zero exactly at a fixed point

The minimiser is Levenberg-Marquardt, per start and batched: with the Jacobian of the residual J - I, a step solves
((J - I)^T (J - I) + mu I) d = -(J - I)^T r, with mu shrunk after a step that lowers q and grown after one that does
not. q is a sum of squares, so this Gauss-Newton method converges quadratically to a fixed point (q reaches 1e-20 in
a few dozen steps, where the Adam of FixedPointFinder needs thousands and ends at a tolerance), and each start has its
own mu (a line search of L-BFGS on the summed q would couple the starts). The Jacobians it needs anyway give the
eigenvalues at the end.

Fixed or slow? A small q alone does not make a fixed point. Where the map is locally flat, r and J - I shrink
together: in the saturated corner of a GRU (update gate shut) both fall exponentially, q drops below any tolerance,
and yet no root is near. For h -> s h + (1 - s) tanh(h / 2), s = sigmoid(-3 h), whose only root is h = 0, the
minimiser ends at h = -6.5 with q = 2e-16 and lambda = 1.00000005. At the ghost of a saddle-node bifurcation
(x -> x + 0.1 (1e-3 + x^2)) q has a minimum just above zero, 5e-9 at x = 0. What separates these from a root is
how far the local linear model puts the root, the length of the Newton step:

    d(h) = || (J - I)^+ r(h) ||       components of r at round-off are dropped first

Near a simple root d ~ ||h - h*||, which the minimiser shrinks quadratically to round-off; on a flat stretch d stays
of the order of the length over which the map changes (0.35 in the example above); at a ghost, where J - I is
singular but r is not, it is infinite. Dropping the round-off first keeps the points of a continuous attractor
(J - I singular along it, r at round-off) fixed: d = 0 there. So a point is fixed when q < tol and
d < dist_tol * (1 + ||h||); every other end point with q < slow_tol is a slow point. (FixedPointFinder's other
guard, dropping points far from the starts' cloud, would also drop true fixed points that lie far away; the Newton
distance is local and needs no such scale.)
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


def newton_distance(r, jac, noise):
    """ The Newton estimate of the distance to a root, d = ||(J - I)^+ r|| per row: r (B, H) residuals F(h) - h,
    jac (B, H, H) Jacobians J of F, noise (B,) the round-off level of r. In the left singular vectors of J - I each
    component of r is first shrunk by noise (a residual at round-off has no direction), then divided by its singular
    value: d = 0 for a residual at round-off however singular J - I is; d = inf for a residual that J - I cannot
    explain (a component where J - I is exactly singular). Returns (B,). """
    eye = torch.eye(r.shape[1], dtype=r.dtype, device=r.device)
    U, S, _ = torch.linalg.svd(jac - eye)                                 # (B, H, H), (B, H)
    c = (U.transpose(1, 2) @ r.unsqueeze(-1)).squeeze(-1)                # (B, H): r in the left singular vectors
    c = (c.abs() - noise[:, None]).clamp_min(0)                           # the part above round-off
    return torch.where(c > 0, c / S, torch.zeros_like(c)).norm(dim=1)   # c / 0 = inf


def find_fixed_points(step, h0, tol=1e-8, max_iters=200, unique_tol=1e-3, slow_tol=1e-5, noise=0.0, seed=0,
                      stop_q=None, max_step=0.5, mu=1e-3, dist_tol=1e-3):
    """ Fixed points (and slow points) of h -> step(h), minimising q(h) = 1/2 ||step(h) - h||^2 from each start.

    step: a function (B, H) -> (B, H) acting on each row independently (e.g. lfads_generator_step(model)); it runs
          in the dtype of h0. float64 gives exact fixed points; a float32 step reaches q ~ 1e-13 and cannot see a
          residual below its round-off (~1e-7 |h|), so there a flat stretch can pass for a root.
    h0: (B, H) starts, e.g. states of the model's own trajectories; noise: std of Gaussian noise added to them
        (seeded by seed) so that starts leave the trajectories and find unstable points too.
    tol, dist_tol: an end point is a fixed point when q < tol and the Newton estimate of its distance to a root
        (see the module docstring) is below dist_tol * (1 + ||h||); dist_tol=math.inf: q alone decides.
    slow_tol: any other end point with q < slow_tol is a slow point (one with q < tol is a point where the map is
        flat, not a root).
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
    Returns a dict of torch tensors: points (K, H), q (K,) and dist (K,) (the Newton distance) of the fixed points,
    eigvals (K, H) complex (the eigenvalues of the Jacobian of step there, largest |lambda| first), stable (K,) bool
    (every |lambda| < 1), jacobians (K, H, H); the same for the slow points under slow_points, slow_q, slow_dist,
    slow_eigvals, slow_stable, slow_jacobians; and every start's end point, q and Newton distance (final, final_q,
    final_dist: (B, H), (B,), (B,); inf where q is not finite) and iters (int). """
    if not callable(step):
        raise TypeError(f"find_fixed_points: step must be a function (B, H) -> (B, H), got {type(step).__name__}")
    if not isinstance(h0, torch.Tensor) or h0.dim() != 2 or not h0.is_floating_point() or h0.shape[0] < 1:
        got = type(h0).__name__ + (f" {tuple(h0.shape)} {h0.dtype}" if isinstance(h0, torch.Tensor) else "")
        raise ValueError(f"find_fixed_points: h0 must be a floating-point tensor of starts (B, H), got {got}")
    if not torch.isfinite(h0).all():
        raise ValueError("find_fixed_points: h0 contains NaN or infinite values")
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    for name, v in (("tol", tol), ("slow_tol", slow_tol), ("mu", mu), ("max_step", max_step)):
        if not (number(v) and math.isfinite(v) and v > 0):
            raise ValueError(f"find_fixed_points: {name} must be a number > 0, got {v!r}")
    if slow_tol <= tol:
        raise ValueError(f"find_fixed_points: slow_tol={slow_tol} must be larger than tol={tol}")
    if not (number(dist_tol) and dist_tol > 0):
        raise ValueError(f"find_fixed_points: dist_tol must be a number > 0 (inf: no distance check), got {dist_tol!r}")
    if not (isinstance(max_iters, numbers.Integral) and not isinstance(max_iters, bool) and max_iters >= 1):
        raise ValueError(f"find_fixed_points: max_iters must be an integer >= 1, got {max_iters!r}")
    if not (number(unique_tol) and unique_tol >= 0):
        raise ValueError(f"find_fixed_points: unique_tol must be a number >= 0, got {unique_tol!r}")
    if not (number(noise) and noise >= 0):
        raise ValueError(f"find_fixed_points: noise must be a number >= 0, got {noise!r}")
    if stop_q is not None and not (number(stop_q) and stop_q > 0):
        raise ValueError(f"find_fixed_points: stop_q must be None or a number > 0, got {stop_q!r}")
    h = h0.detach().clone()
    if noise > 0:
        g = torch.Generator(device=h.device).manual_seed(int(seed))
        h = h + noise * torch.randn(h.shape, generator=g, device=h.device, dtype=h.dtype)
    with torch.no_grad():
        out = step(h)
    if not isinstance(out, torch.Tensor) or out.shape != h.shape:
        raise ValueError(f"find_fixed_points: step must return a tensor of the shape of its input {tuple(h.shape)}, "
                         f"got {tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")

    def residual(x):  # r = step(x) - x, (B, H)
        with torch.no_grad():
            return step(x) - x

    B, H = h.shape
    eye = torch.eye(H, dtype=h.dtype, device=h.device)
    q = 0.5 * residual(h).pow(2).sum(-1)                                 # (B,)
    damp = torch.full((B,), float(mu), dtype=h.dtype, device=h.device)
    eps = torch.finfo(h.dtype).eps
    floor = H * (eps * max(1.0, float(h.abs().max()))) ** 2              # q at round-off
    stop_q = floor if stop_q is None else max(float(stop_q), floor)
    active = q >= stop_q
    it = 0
    for it in range(1, max_iters + 1):
        if not active.any():
            break
        idx = active.nonzero().squeeze(1)
        x = h[idx]
        F_ = residual(x)                                                 # (b, H)
        Jf = jacobians(step, x).detach() - eye                           # (b, H, H)
        JtJ = Jf.transpose(1, 2) @ Jf
        grad = (Jf.transpose(1, 2) @ F_.unsqueeze(-1)).squeeze(-1)       # (b, H) = gradient of q
        A = JtJ + damp[idx, None, None] * eye
        d = -torch.linalg.solve(A, grad.unsqueeze(-1)).squeeze(-1)       # (b, H)
        limit = max_step * (1 + x.norm(dim=1, keepdim=True))             # trust region, relative to |h|
        d = d * (limit / torch.maximum(d.norm(dim=1, keepdim=True), limit))
        x_new = x + d
        q_new = 0.5 * residual(x_new).pow(2).sum(-1)
        better = torch.isfinite(q_new) & (q_new < q[idx])
        h[idx[better]] = x_new[better]
        # no step lowers q any more: the damping has grown past any use, or q stopped falling (a local minimum)
        stalled = (~better & (damp[idx] > 1e12)) | (better & (q[idx] - q_new <= 1e-14 * q[idx]))
        q[idx[better]] = q_new[better]
        damp[idx] = torch.where(better, (damp[idx] / 3).clamp_min(1e-12), damp[idx] * 4)
        active[idx] = (q[idx] >= stop_q) & ~stalled

    # fixed or slow: the Newton distance of every end point, with the round-off of r at least what the minimiser
    # took for round-off (q < floor) and at least a few ulps of the state per coordinate
    dist = torch.full((B,), math.inf, dtype=h.dtype, device=h.device)
    ok = torch.isfinite(q)
    if ok.any():
        x = h[ok]
        rnoise = (8 * math.sqrt(H) * eps * x.abs().amax(1).clamp_min(1.0)).clamp_min(math.sqrt(2 * floor))
        dist[ok] = newton_distance(residual(x), jacobians(step, x).detach(), rnoise)
    fixed = (q < tol) & (dist < dist_tol * (1 + h.norm(dim=1)))
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
    res = {"final": h, "final_q": q, "final_dist": dist, "iters": it}
    for prefix, keep in (("", keep_fixed), ("slow_", keep_slow)):
        ix = torch.tensor(keep, dtype=torch.long, device=h.device)
        pts = h[ix]
        jac = jacobians(step, pts).detach() if len(keep) else torch.zeros(0, H, H, dtype=h.dtype, device=h.device)
        ev = torch.linalg.eigvals(jac) if len(keep) else torch.zeros(0, H, dtype=torch.complex128, device=h.device)
        ev = torch.gather(ev, 1, torch.argsort(ev.abs(), dim=1, descending=True))
        key = "points" if not prefix else "slow_points"
        res.update({key: pts, f"{prefix}q": q[ix], f"{prefix}dist": dist[ix], f"{prefix}eigvals": ev,
                    f"{prefix}stable": (ev.abs() < 1).all(1), f"{prefix}jacobians": jac})
    return res
