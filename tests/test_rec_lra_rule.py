"""rec-LRA learning rule: update equations against a direct numpy computation, the no-autograd guard,
the E-rule switch, the ball re-projection and the optimizer hand-off. Pure torch, no Ray."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from evoplat.methods.rec_lra.rule import RecLRAMLP, RuleSettings, rec_lra_step, reproject
from evoplat.methods.rec_lra.conv import RecLRAResNet


def tiny_mlp(error_skip=2, activation="tanh", forward_skip=0, hidden=(5, 4, 4)):
    torch.manual_seed(0)
    return RecLRAMLP(6, list(hidden), 3, activation, error_skip=error_skip, forward_skip=forward_skip,
                     init="gaussian", w_init_std=0.5, e_init="gaussian", e_init_std=1.0).double()


def numpy_rec_lra(net: RecLRAMLP, x: np.ndarray, y: np.ndarray, rule: RuleSettings):
    """Direct transcription of docs/rec_lra.md, Specification, in paper orientation (column vectors, summed
    over the batch): returns {name: update} for every W, b and E."""
    act = {"tanh": np.tanh, "relu": lambda h: np.maximum(h, 0)}[net.act_name]
    Ws = [l.weight.detach().numpy() for l in net.layers]
    bs = [l.bias.detach().numpy() for l in net.layers]
    Es = [E.detach().numpy() for E in net.feedback]
    L, B, m, n = len(Ws), x.shape[0], net.error_skip, net.forward_skip
    z, h = [x.T], [None]                                 # z[l]: [d_l, B]
    for l in range(1, L + 1):
        hl = Ws[l - 1] @ z[l - 1] + bs[l - 1][:, None]
        if n and l < L and l >= n and l % n == 0 and z[l - n].shape[0] == hl.shape[0]:
            hl = hl + z[l - n]
        h.append(hl)
        z.append(act(hl) if l < L else hl)
    p = np.exp(z[L] - z[L].max(0)); p /= p.sum(0)
    Y = np.eye(Ws[-1].shape[0])[y].T

    def units(diff, alpha):
        return diff if rule.error_units == "l2" else alpha * diff + (1 - alpha) * np.sign(diff)

    e = {L: units(p - Y, rule.alpha_skip)}
    upd = {}
    for l in range(L - 1, 0, -1):
        s_layer = L if (m and l % m == 0) else l + 1
        d = Es[l - 1] @ e[s_layer]
        target = act(h[l] - rule.beta * d)
        skip_end = s_layer == L and l != L - 1
        e[l] = units(z[l] - target, rule.alpha_skip if skip_end else rule.alpha_adjacent)
        if rule.e_rule == "kolen_pollack":
            upd[f"E{l}"] = rule.gamma * z[l] @ e[s_layer].T / B
        else:
            upd[f"E{l}"] = -rule.gamma * d @ e[s_layer].T / B
    for l in range(1, L + 1):
        upd[f"W{l}"] = e[l] @ z[l - 1].T / B
        upd[f"b{l}"] = e[l].mean(1)
    return upd


def torch_updates(net: RecLRAMLP) -> dict:
    out = {}
    for l, lin in enumerate(net.layers, start=1):
        out[f"W{l}"], out[f"b{l}"] = lin.weight.grad.numpy(), lin.bias.grad.numpy()
    for l, E in enumerate(net.feedback, start=1):
        out[f"E{l}"] = E.grad.numpy()
    return out


@pytest.mark.parametrize("e_rule", ["kolen_pollack", "eq6"])
@pytest.mark.parametrize("error_units", ["l2", "l1l2"])
@pytest.mark.parametrize("error_skip,forward_skip,activation", [(2, 0, "tanh"), (0, 0, "tanh"), (2, 2, "relu")])
def test_mlp_updates_match_numpy(e_rule, error_units, error_skip, forward_skip, activation):
    net = tiny_mlp(error_skip, activation, forward_skip)
    rule = RuleSettings(beta=0.3, gamma=0.7, e_rule=e_rule, error_units=error_units, ball_radius=0.0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (7,), generator=g)
    net.compute_updates(x, y, rule)
    ref = numpy_rec_lra(net, x.numpy(), y.numpy(), rule)
    got = torch_updates(net)
    assert set(ref) == set(got)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-10, atol=1e-12, err_msg=k)


def test_error_skip_wiring():
    net = tiny_mlp(error_skip=2, hidden=(5, 4, 4, 4))    # L = 5: layers 2 and 4 take e^L
    assert [net.source(l) for l in range(1, 5)] == [2, 5, 4, 5]
    assert tuple(net.feedback[1].shape) == (4, 3) and tuple(net.feedback[0].shape) == (5, 4)


def test_e_rules_differ_and_kolen_pollack_tracks_transposed_w_update():
    net = tiny_mlp(error_skip=0)
    x, y = torch.randn(8, 6, dtype=torch.float64), torch.arange(8) % 3
    grads = {}
    for rule in ("kolen_pollack", "eq6"):
        net.compute_updates(x, y, RuleSettings(e_rule=rule, gamma=1.0, ball_radius=0.0))
        grads[rule] = [E.grad.clone() for E in net.feedback]
        if rule == "kolen_pollack":   # adjacent source: dE^l == gamma (dW^{l+1})^T
            for l, E in enumerate(net.feedback, start=1):
                torch.testing.assert_close(E.grad, net.layers[l].weight.grad.t())
    assert not torch.allclose(grads["kolen_pollack"][0], grads["eq6"][0])


def test_reprojection_ball():
    d = torch.tensor([3.0, 4.0])
    torch.testing.assert_close(reproject(d, 1.0), torch.tensor([0.6, 0.8]))
    torch.testing.assert_close(reproject(d, 10.0), d)            # inside the ball: unchanged
    torch.testing.assert_close(reproject(d, 0.0), d)             # 0 = off
    net = tiny_mlp()
    net.compute_updates(torch.randn(16, 6, dtype=torch.float64) * 5, torch.arange(16) % 3,
                        RuleSettings(ball_radius=0.01))
    for p in [*net.forward_params(), *net.feedback_params()]:
        assert float(p.grad.norm()) <= 0.01 + 1e-12


def test_sgd_applies_minus_lr_times_update():
    net = tiny_mlp()
    before = [p.detach().clone() for p in net.forward_params()]
    opt = torch.optim.SGD(net.forward_params() + net.feedback_params(), lr=0.1)
    x, y = torch.randn(5, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1])
    rec_lra_step(net, opt, x, y, RuleSettings(ball_radius=0.0))
    for p, b in zip(net.forward_params(), before):
        torch.testing.assert_close(p.detach(), b - 0.1 * p.grad)


@pytest.mark.parametrize("opt_cls", [torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW])
def test_any_torch_optimizer_learns_separable_data(opt_cls):
    net = tiny_mlp(hidden=(16, 16)).float()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    opt = opt_cls(net.forward_params() + net.feedback_params(), lr=0.05 if opt_cls is torch.optim.SGD else 0.01)
    first = rec_lra_step(net, opt, x, y, RuleSettings())["loss"]
    for _ in range(150):
        last = rec_lra_step(net, opt, x, y, RuleSettings())["loss"]
    assert last < 0.7 * first


class GraphRecorded(AssertionError):
    pass


def _forbid_autograd():
    """Any op that records an autograd graph saves tensors for backward: make that an error."""
    def pack(t):
        raise GraphRecorded("an autograd graph was recorded during a rec-LRA step")
    return torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)


def _guarded_step(net, x, y):
    hooks = [p.register_hook(lambda g: (_ for _ in ()).throw(GraphRecorded("backward reached a weight")))
             for p in net.forward_params()]
    opt = torch.optim.Adam(net.forward_params() + net.feedback_params(), lr=1e-3)
    with torch.enable_grad(), _forbid_autograd():
        stats = rec_lra_step(net, opt, x, y, RuleSettings(input_noise=0.1), torch.Generator().manual_seed(0))
    for h in hooks:
        h.remove()
    return stats


def test_no_autograd_in_mlp_step():
    net = tiny_mlp().float()
    assert all(p.requires_grad for p in net.forward_params())   # the guard has something to catch
    _guarded_step(net, torch.randn(8, 6), torch.arange(8) % 3)
    assert all(p.grad is not None and p.grad.grad_fn is None for p in net.forward_params())


def test_no_autograd_in_resnet_step():
    net = RecLRAResNet((3, 8, 8), 4, width=0.25, blocks_per_stage=1)
    _guarded_step(net, torch.randn(4, 3, 8, 8), torch.arange(4))


def test_guard_catches_backprop():
    """Negative control: the guard does fire when the network is differentiated."""
    net = tiny_mlp().float()
    with pytest.raises(GraphRecorded), torch.enable_grad(), _forbid_autograd():
        torch.nn.functional.cross_entropy(net(torch.randn(4, 6)), torch.arange(4) % 3).backward()
