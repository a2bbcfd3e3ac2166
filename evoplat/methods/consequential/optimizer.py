"""Consequentialism weight updates (Paeedeh & Ghiasi-Shirazi): a wrapper around any torch optimizer.

Each Linear/Conv2d layer is treated as an adaptive filter. With inputs X (one row per sample, or per
output location of a convolution; a 1-column appended for the bias) and output errors D = dL/dA, the
plain minibatch gradient D^T X moves sample j's output by -lr * sum_b D_b (x_b . x_j): the cross terms
are the "adverse consequences" of fitting one sample on the others. The regularised affine-projection
(APA) update removes them:

    G_hat = D^T (X X^T + eps I)^-1 X  =  D^T X (X^T X + eps I)^-1      (whichever Gram matrix is smaller)

Specification: docs/consequential.md; the wrapper is pure torch.
"""
from __future__ import annotations

import weakref
from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("replace", "emend")


class _Capture:
    """Inputs and output gradients of one layer during one forward/backward (several calls concatenate)."""

    def __init__(self):
        self.inputs: list[torch.Tensor] = []
        self.grads: list[Optional[torch.Tensor]] = []

    def clear(self):
        self.inputs.clear()
        self.grads.clear()


class _ForwardHook:
    """The forward hook on each wrapped layer. It holds the optimizer weakly, and a deep copy or pickle of
    the model (ES replicas, Ray) gets a hook that records nothing instead of a half-copied optimizer."""

    def __init__(self, optimizer=None):
        self.ref = weakref.ref(optimizer) if optimizer is not None else None

    def __call__(self, module, inputs, output):
        opt = self.ref() if self.ref is not None else None
        if opt is not None:
            opt._capture(module, inputs, output)

    def __deepcopy__(self, memo):
        return _ForwardHook()

    def __reduce__(self):
        return (_ForwardHook, ())


def _conv_supported(m: nn.Conv2d) -> bool:
    # F.unfold needs integer padding; grouped convolutions and non-zero padding modes fall back.
    padding_ok = not isinstance(m.padding, str) or m.padding == "valid"
    return m.groups == 1 and m.padding_mode == "zeros" and padding_ok


def layer_rows(module: nn.Module, x: torch.Tensor, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The filter view of one layer call: inputs X [n, d] (+1 column with a bias) and errors D [n, k].

    Linear: one row per sample (leading dims flattened). Conv2d: im2col, one row per (sample, output
    location), so each location is a "sample" whose consequence must not interfere with the others.
    """
    if isinstance(module, nn.Linear):
        xs = x.reshape(-1, x.shape[-1])
        ds = grad_out.reshape(-1, grad_out.shape[-1])
    else:
        padding = 0 if module.padding == "valid" else module.padding
        cols = F.unfold(x, module.kernel_size, dilation=module.dilation, padding=padding, stride=module.stride)
        xs = cols.transpose(1, 2).reshape(-1, cols.shape[1])               # [B*L, C_in*kh*kw]
        ds = grad_out.flatten(2).transpose(1, 2).reshape(-1, grad_out.shape[1])  # [B*L, C_out]
    if module.bias is not None:
        xs = torch.cat([xs, xs.new_ones(xs.shape[0], 1)], dim=1)
    return xs, ds


def _solve_spd(m: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """m^-1 rhs for a symmetric positive (semi)definite m, solved in float64 (m is small: n x n or d x d).

    Cholesky first; if m is numerically singular (strength 1 without damping) fall back to lstsq, which
    gives the minimum-norm solution the exact APA update asks for. That solve runs on the CPU: on CUDA
    lstsq only offers 'gels', which assumes full rank.
    """
    m64, r64 = m.double(), rhs.double()
    chol, info = torch.linalg.cholesky_ex(m64)
    if int(info) == 0:
        out = torch.cholesky_solve(r64, chol)
    else:
        out = torch.linalg.lstsq(m64.cpu(), r64.cpu(), driver="gelsd").solution.to(rhs.device)
    return out.to(rhs.dtype)


def apa_direction(xs: torch.Tensor, ds: torch.Tensor, strength: float, damping: float,
                  rescale: bool = True, grad: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The consequentialist gradient [k, d] of a layer from X [n, d] and D [n, k].

    With nu = trace(X X^T) / min(n, d) (the mean non-zero eigenvalue of the Gram matrix: the mean squared
    row norm when n <= d) and the normalised system matrix M = strength * G / nu +
    (1 - strength + damping) * I, the result is D^T M^-1 X, computed with the
    smaller of the n x n and d x d Gram matrices (equal by the push-through identity). This is the APA
    update with eps = nu (1 - strength) / strength, multiplied by nu / strength so that the Gram matrix's
    typical eigenvalue is 1 and the useful learning-rate range matches the plain gradient's:
    strength 0 gives exactly D^T X. ``rescale=False`` returns the raw APA update D^T (G + eps I)^-1 X.

    ``grad``, the layer's full gradient, if given: whatever it holds beyond D^T X (a penalty added to the
    loss) is carried over unchanged. The solves have only k right-hand sides.
    """
    n, d = xs.shape
    # nu: the mean non-zero eigenvalue of the Gram matrix (its trace over its rank bound). For n <= d this
    # is the mean squared row norm; for convolutions (n >> d) it is n/d times larger, and normalising by
    # the row norm instead would shrink the update by that factor.
    nu = torch.clamp((xs * xs).sum() / min(n, d), min=torch.finfo(xs.dtype).tiny)
    scale = 1.0 if rescale else strength / nu
    diag = 1.0 - strength + damping
    if n <= d:
        m = (strength / nu) * (xs @ xs.T) + diag * torch.eye(n, dtype=xs.dtype, device=xs.device)
        z = _solve_spd(m, ds) * scale                                   # [n, k]
        # grad + (Z - D)^T X == Z^T X + residual, with one matmul.
        return z.T @ xs if grad is None else grad + (z - ds).T @ xs
    m = (strength / nu) * (xs.T @ xs) + diag * torch.eye(d, dtype=xs.dtype, device=xs.device)
    plain = ds.T @ xs                                                   # [k, d]
    out = _solve_spd(m, plain.T).T * scale                              # D^T X M^-1 (M symmetric)
    return out if grad is None else out + (grad - plain)


def emend_step(xs: torch.Tensor, ds: torch.Tensor, step: torch.Tensor, strength: float,
               damping: float) -> torch.Tensor:
    """Reading (B): correct a proposed parameter change U [k, d] so the batch moves as intended.

    Predict the consequences P = X U^T [n, k]; the intended ones are Q = -c D, per-sample errors only,
    with c the least-squares fit of P on -D (so the base optimizer keeps choosing the step size, and
    c >= 0). The minimum-norm correction U' = U + (Q - P)^T (G + eps I)^-1 X removes the cross-sample
    part of P; strength 0 leaves U unchanged, strength 1 makes U' X^T = Q^T exactly.
    """
    p = xs @ step.T
    c = torch.clamp(-(p * ds).sum() / (ds * ds).sum().clamp_min(torch.finfo(ds.dtype).tiny), min=0.0)
    q = -c * ds
    return step + apa_direction(xs, q - p, strength, damping, rescale=False)


class ConsequentialOptimizer(torch.optim.Optimizer):
    r"""Wraps a torch optimizer and feeds it consequentialism (regularised APA) updates.

    For every ``nn.Linear`` and ``nn.Conv2d`` (groups=1, zero padding) of ``model`` the layer inputs
    and output gradients of the current minibatch are captured with hooks, and at :meth:`step` the
    layer's gradient is changed so that fitting one sample does not undo the others (see
    :func:`apa_direction`). All other parameters (batch norm, embeddings, grouped convolutions, layers
    not in ``model``) keep their plain gradient. The base optimizer then steps as usual, so
    momentum, Nesterov, RMSProp and Adam buffers and the base optimizer's weight decay work unchanged.

    .. math::
        \hat G = \Delta^\top \big(s\,XX^\top/\tau + (1-s+\delta) I\big)^{-1} X,
        \qquad \tau = \operatorname{tr}(XX^\top)/\min(n, d)

    Args:
        model (nn.Module): the network whose Linear/Conv2d layers are normalised; hooks are added to it.
        base_optimizer (torch.optim.Optimizer): any optimizer over (some of) ``model``'s parameters.
        strength (float, optional): s in [0, 1]. 0 is the base optimizer unchanged, 1 the exact APA
            update (ridge eps = tau (1-s)/s, tau the Gram matrix's mean non-zero eigenvalue). Default: 0.9.
        mode (str, optional): ``'replace'`` (reading A: the APA direction replaces the gradient before
            the base step) or ``'emend'`` (reading B, speculative: the base optimizer steps on the plain
            gradient, then its step is corrected so each sample's output moves only by its own error).
            Default: ``'replace'``.
        damping (float, optional): delta, a small ridge relative to tau that keeps the solve stable
            when X is rank deficient. Default: 1e-3.
        rescale (bool, optional): multiply the direction by tau/s so learning rates stay comparable
            with the plain gradient (``False``: raw APA, where lr 1 and s 1 move every sample's output by
            exactly its own error). Default: ``True``.

    Example:
        >>> base = torch.optim.Adam(model.parameters(), lr=1e-3)
        >>> opt = ConsequentialOptimizer(model, base, strength=0.9)
        >>> opt.zero_grad()
        >>> loss_fn(model(x), y).backward()
        >>> opt.step()

    ``param_groups`` and ``state`` are the base optimizer's own objects, so learning-rate schedulers
    may be given either optimizer. :meth:`state_dict` holds the base optimizer's state plus the
    wrapper's settings. Call :meth:`remove_hooks` to detach from the model.
    """

    def __init__(self, model: nn.Module, base_optimizer: torch.optim.Optimizer, strength: float = 0.9,
                 mode: str = "replace", damping: float = 1e-3, rescale: bool = True,
                 layers: Optional[Iterable[nn.Module]] = None):
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got '{mode}'")
        if damping < 0:
            raise ValueError(f"damping must be >= 0, got {damping}")
        self.base = base_optimizer
        self.strength, self.mode, self.damping, self.rescale = float(strength), mode, float(damping), rescale
        # Optimizer.__init__ sets up hook bookkeeping; then share the base's groups and state so that
        # schedulers and checkpoints see one set of hyperparameters.
        super().__init__([p for g in base_optimizer.param_groups for p in g["params"]], {})
        self.param_groups = base_optimizer.param_groups
        self.state = base_optimizer.state
        optimized = {id(p) for g in self.param_groups for p in g["params"]}
        candidates = layers if layers is not None else model.modules()
        self.layers: dict[nn.Module, _Capture] = {}
        self._handles = []
        for m in candidates:
            ok = isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and _conv_supported(m))
            if ok and id(m.weight) in optimized and (m.bias is None or id(m.bias) in optimized):
                self.layers[m] = _Capture()
                self._handles.append(m.register_forward_hook(_ForwardHook(self)))

    # -- hooks ---------------------------------------------------------------------------------
    def _capture(self, module, inputs, output):
        cap = self.layers.get(module)
        if cap is None or not (torch.is_grad_enabled() and module.training and output.requires_grad):
            return
        slot = len(cap.inputs)
        cap.inputs.append(inputs[0].detach())
        cap.grads.append(None)

        def keep_grad(grad, cap=cap, slot=slot):
            if slot < len(cap.grads):      # ignore a backward that runs after step() cleared the capture
                cap.grads[slot] = grad.detach() if cap.grads[slot] is None else cap.grads[slot] + grad.detach()
        output.register_hook(keep_grad)

    def remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _layer_data(self, module: nn.Module):
        """(X, D) over every call of `module` since the last step that received a gradient, or None."""
        cap = self.layers[module]
        pairs = [layer_rows(module, x, g) for x, g in zip(cap.inputs, cap.grads) if g is not None]
        if not pairs:
            return None
        if len(pairs) == 1:
            return pairs[0]
        return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])

    @staticmethod
    def _flat(module: nn.Module, weight_part: torch.Tensor, bias_part: Optional[torch.Tensor]) -> torch.Tensor:
        w = weight_part.reshape(weight_part.shape[0], -1)
        return w if bias_part is None else torch.cat([w, bias_part.reshape(-1, 1)], dim=1)

    @staticmethod
    def _unflat(module: nn.Module, flat: torch.Tensor):
        d = module.weight[0].numel()
        w = flat[:, :d].reshape(module.weight.shape)
        return w, (flat[:, d] if module.bias is not None else None)

    # -- the optimizer interface ---------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        """Perform one optimization step (``closure`` as in torch.optim: re-evaluates the loss)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.strength == 0.0:
            loss_base = self.base.step()
            self._clear()
            return loss if loss is not None else loss_base
        if self.mode == "replace":
            self._replace_gradients()
            self.base.step()
        else:
            before = {m: (m.weight.detach().clone(), None if m.bias is None else m.bias.detach().clone())
                      for m in self.layers if m.weight.grad is not None}
            self.base.step()
            self._emend(before)
        self._clear()
        return loss

    def _replace_gradients(self):
        for m in self.layers:
            if m.weight.grad is None:
                continue
            data = self._layer_data(m)
            if data is None:
                continue
            xs, ds = data
            grad = self._flat(m, m.weight.grad, None if m.bias is None else m.bias.grad)
            new = apa_direction(xs, ds, self.strength, self.damping, self.rescale, grad=grad)
            w, b = self._unflat(m, new)
            m.weight.grad.copy_(w)
            if b is not None and m.bias.grad is not None:
                m.bias.grad.copy_(b)

    def _emend(self, before):
        for m, (w0, b0) in before.items():
            data = self._layer_data(m)
            if data is None:
                continue
            xs, ds = data
            proposed = self._flat(m, m.weight - w0, None if b0 is None else m.bias - b0)
            w, b = self._unflat(m, emend_step(xs, ds, proposed, self.strength, self.damping))
            m.weight.copy_(w0 + w)
            if b is not None:
                m.bias.copy_(b0 + b)

    def _clear(self):
        for cap in self.layers.values():
            cap.clear()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"base": self.base.state_dict(),
                "consequential": {"strength": self.strength, "mode": self.mode, "damping": self.damping,
                                  "rescale": self.rescale}}

    def load_state_dict(self, state_dict: dict) -> None:
        self.base.load_state_dict(state_dict["base"])
        self.param_groups = self.base.param_groups
        self.state = self.base.state
        opts = state_dict.get("consequential", {})
        self.strength = float(opts.get("strength", self.strength))
        self.mode = opts.get("mode", self.mode)
        self.damping = float(opts.get("damping", self.damping))
        self.rescale = bool(opts.get("rescale", self.rescale))

    def __repr__(self) -> str:
        return (f"ConsequentialOptimizer(strength={self.strength}, mode='{self.mode}', damping={self.damping}, "
                f"rescale={self.rescale}, layers={len(self.layers)}, base={self.base.__class__.__name__})")
