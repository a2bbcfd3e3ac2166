"""The consequentialism (APA) wrapper: exactness on one layer, limits, the conv path, every base optimizer."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from evoplat.platform.backprop import make_torch_optimizer
from evoplat.methods.consequential.optimizer import ConsequentialOptimizer, apa_direction

BASES = ("sgd", "momentum", "nag", "rmsprop", "adam")


@pytest.fixture(autouse=True)
def _double():
    # Exactness checks need float64; restore the default afterwards.
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def mse_step(layer, x, target, **wrapper_kw):
    """One step of SGD(lr=1) wrapped by the APA update on loss 0.5 * sum ||a - t||^2 (so D = a - t)."""
    opt = ConsequentialOptimizer(layer, torch.optim.SGD(layer.parameters(), lr=1.0), **wrapper_kw)
    before = layer(x).detach()
    opt.zero_grad()
    (0.5 * ((layer(x) - target) ** 2).sum()).backward()
    opt.step()
    return before, layer(x).detach()


@pytest.mark.parametrize("bias", [True, False])
def test_exact_apa_moves_every_sample_by_its_own_error(bias):
    torch.manual_seed(0)
    layer = nn.Linear(20, 4, bias=bias)
    x, t = torch.randn(8, 20), torch.randn(8, 4)                # B=8 < d: every sample can be fitted
    plain = copy.deepcopy(layer)
    before, after = mse_step(layer, x, t, strength=1.0, damping=0.0, rescale=False)
    error = before - t
    assert torch.allclose(after - before, -error, atol=1e-10)   # each output moved by exactly its error
    # the plain gradient step does not: cross terms disturb every sample
    plain_before, plain_after = mse_step(plain, x, t, strength=0.0)
    assert not torch.allclose(plain_after - plain_before, -(plain_before - t), atol=1e-3)


def test_large_eps_approaches_scaled_sgd():
    torch.manual_seed(1)
    x, d = torch.randn(16, 10), torch.randn(16, 3)
    xs = torch.cat([x, torch.ones(16, 1)], 1)
    plain = d.T @ xs
    tau = (xs * xs).sum() / min(xs.shape)      # mean non-zero eigenvalue of the Gram matrix
    def rel(a, b):
        return ((a - b).norm() / b.norm()).item()
    errors = []
    for s in (1e-3, 1e-6):
        eps = tau * (1 - s) / s
        raw = apa_direction(xs, d, s, damping=0.0, rescale=False)          # = D^T (G + eps I)^-1 X
        rescaled = apa_direction(xs, d, s, damping=0.0)                    # lr-comparable form
        errors.append((rel(raw * eps, plain), rel(rescaled, plain)))      # ~ plain / eps and ~ plain
    assert max(errors[0]) < 0.05 and max(errors[1]) < 1e-4              # error shrinks like 1/eps
    assert torch.equal(apa_direction(xs, d, 0.0, damping=0.0), plain)  # strength 0 is exactly the gradient


@pytest.mark.parametrize("n", [6, 40])      # both Gram forms: n x n (n <= d) and d x d (n > d)
def test_both_gram_forms_equal_the_explicit_formula(n):
    torch.manual_seed(2)
    xs, d = torch.randn(n, 12), torch.randn(n, 5)
    s, delta = 0.7, 1e-2
    tau = (xs * xs).sum() / min(n, 12)
    eps = tau * (1 - s + delta) / s
    explicit = d.T @ torch.linalg.inv(xs @ xs.T + eps * torch.eye(n)) @ xs * (tau / s)
    assert torch.allclose(apa_direction(xs, d, s, delta), explicit, atol=1e-10)
    grad = d.T @ xs + 0.3                   # a residual beyond D^T X is carried over unchanged
    assert torch.allclose(apa_direction(xs, d, s, delta, grad=grad), explicit + 0.3, atol=1e-10)


def im2col(x, kh, kw, stride, padding, dilation):
    """Explicit patch extraction with loops: rows (b, i, j), columns (c, u, v)."""
    b, c, h, w = x.shape
    xp = F.pad(x, (padding, padding, padding, padding))
    ho = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    wo = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    rows = []
    for n in range(b):
        for i in range(ho):
            for j in range(wo):
                patch = xp[n, :, i * stride: i * stride + dilation * (kh - 1) + 1: dilation,
                           j * stride: j * stride + dilation * (kw - 1) + 1: dilation]
                rows.append(patch.reshape(-1))
    return torch.stack(rows)


@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 0, 2)])
def test_conv_path_matches_explicit_im2col(stride, padding, dilation):
    torch.manual_seed(3)
    conv = nn.Conv2d(3, 4, 3, stride=stride, padding=padding, dilation=dilation)
    x = torch.randn(2, 3, 9, 9)
    out = conv(x)
    g = torch.randn_like(out)               # an arbitrary output gradient
    s, delta, lr = 0.8, 1e-3, 0.5
    cols = im2col(x, 3, 3, stride, padding, dilation)
    xs = torch.cat([cols, torch.ones(len(cols), 1)], 1)
    ds = g.permute(0, 2, 3, 1).reshape(-1, 4)
    tau = (xs * xs).sum() / min(xs.shape)
    m = s * xs.T @ xs / tau + (1 - s + delta) * torch.eye(xs.shape[1])
    expected = ds.T @ xs @ torch.linalg.inv(m)                      # [C_out, C_in*9 + 1]

    w0, b0 = conv.weight.detach().clone(), conv.bias.detach().clone()
    opt = ConsequentialOptimizer(conv, torch.optim.SGD(conv.parameters(), lr=lr), strength=s, damping=delta)
    opt.zero_grad()
    (conv(x) * g).sum().backward()
    opt.step()
    assert torch.allclose((w0 - conv.weight.detach()) / lr, expected[:, :-1].reshape(w0.shape), atol=1e-9)
    assert torch.allclose((b0 - conv.bias.detach()) / lr, expected[:, -1], atol=1e-9)


def small_net(inplace=False):
    torch.manual_seed(4)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=inplace),
                         nn.Flatten(), nn.Linear(4 * 6 * 6, 8), nn.ReLU(inplace=inplace), nn.Linear(8, 3))


def train_steps(model, opt, steps=6, seed=5):
    g = torch.Generator().manual_seed(seed)
    losses = []
    x, y = torch.randn(32, 1, 6, 6, generator=g), torch.randint(0, 3, (32,), generator=g)
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("mode", ["replace", "emend"])
@pytest.mark.parametrize("base", BASES)
def test_wraps_every_base_optimizer_and_resumes_exactly(base, mode):
    lr = {"sgd": 0.1, "momentum": 0.05, "nag": 0.05, "rmsprop": 1e-2, "adam": 1e-2}[base]
    model = small_net()
    opt = ConsequentialOptimizer(model, make_torch_optimizer(base, model.parameters(), lr), mode=mode)
    assert len(opt.layers) == 3             # 1 conv + 2 linear; batch norm keeps its plain gradient
    losses = train_steps(model, opt, steps=8)
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    # state_dict round trip: a copy continues exactly like the original
    clone = copy.deepcopy(model)
    opt2 = ConsequentialOptimizer(clone, make_torch_optimizer(base, clone.parameters(), lr), mode=mode)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert train_steps(model, opt, 3, seed=9) == train_steps(clone, opt2, 3, seed=9)
    for p, q in zip(model.parameters(), clone.parameters()):
        assert torch.equal(p, q)


def test_strength_zero_is_the_base_optimizer_and_other_layers_keep_plain_gradients():
    a, b = small_net(), small_net()
    plain = torch.optim.Adam(a.parameters(), lr=1e-2)
    wrapped = ConsequentialOptimizer(b, torch.optim.Adam(b.parameters(), lr=1e-2), strength=0.0)
    assert train_steps(a, plain) == train_steps(b, wrapped)
    c = small_net()
    wrapped = ConsequentialOptimizer(c, torch.optim.SGD(c.parameters(), lr=0.1), strength=0.9)
    x = torch.randn(32, 1, 6, 6)
    loss = F.cross_entropy(c(x), torch.zeros(32, dtype=torch.long))
    wrapped.zero_grad()
    loss.backward()
    bn_grad = c[1].weight.grad.clone()
    wrapped.step()
    assert torch.allclose(c[1].weight.detach(), small_net()[1].weight - 0.1 * bn_grad)


def test_inplace_relu_after_a_layer_gives_the_same_update():
    a, b = small_net(inplace=False), small_net(inplace=True)
    oa = ConsequentialOptimizer(a, torch.optim.SGD(a.parameters(), lr=0.1))
    ob = ConsequentialOptimizer(b, torch.optim.SGD(b.parameters(), lr=0.1))
    assert train_steps(a, oa, 3) == train_steps(b, ob, 3)


def test_exact_emend_moves_outputs_along_the_errors_only():
    torch.manual_seed(6)
    layer = nn.Linear(20, 4)
    x, t = torch.randn(8, 20), torch.randn(8, 4)
    opt = ConsequentialOptimizer(layer, torch.optim.Adam(layer.parameters(), lr=0.05), mode="emend",
                                 strength=1.0, damping=0.0)
    before = layer(x).detach()
    opt.zero_grad()
    (0.5 * ((layer(x) - t) ** 2).sum()).backward()
    opt.step()
    moved, error = layer(x).detach() - before, before - t
    c = -(moved * error).sum() / (error * error).sum()
    assert c > 0 and torch.allclose(moved, -c * error, atol=1e-9)   # no cross-sample interference


def test_rejects_bad_settings():
    model = small_net()
    base = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError):
        ConsequentialOptimizer(model, base, strength=1.5)
    with pytest.raises(ValueError):
        ConsequentialOptimizer(model, base, mode="predict")
