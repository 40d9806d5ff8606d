"""The CNN's channels-last CPU convolutions against the plain nn.Conv2d (NCHW) path."""

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import bayesprune as bp
from bayesprune.core.models import CNN, Conv2d, channels_last

STATE_KEYS = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight", "fc1.bias",
              "fc2.weight", "fc2.bias"]


def _reference(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose Conv2d layers use torch's own kernel."""
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if isinstance(m, Conv2d):
            m.fast_cpu = False
    return ref


def _zero_some(model: nn.Module, seed: int = 0) -> None:
    """Pruned-looking weights: half of each conv weight zero, plus one whole filter (positive bias)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(torch.rand(m.weight.shape, generator=g) < 0.5)
                m.weight[0].zero_()  # a dead filter: its output is the bias everywhere (ties in max-pool)
                m.bias[0] = 0.3


def _grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    x = x.clone().requires_grad_()
    model.zero_grad(set_to_none=True)
    logits = model(x)
    F.cross_entropy(logits, y).backward()
    return logits.detach(), x.grad, {k: p.grad.clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 8, 8)])
@pytest.mark.parametrize("batch", [1, 7, 64])
@pytest.mark.parametrize("zeros", [False, True])
def test_cnn_fast_path_matches_nn_conv2d(shape, batch, zeros):
    torch.manual_seed(batch)
    model = CNN(shape, 10, channels=(8, 16), hidden=32)
    if zeros:
        _zero_some(model)
    ref = _reference(model)
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
    logits, gx, grads = _grads(model, x, y)
    logits_ref, gx_ref, grads_ref = _grads(ref, x, y)
    torch.testing.assert_close(logits, logits_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-4, atol=1e-6)
    assert grads.keys() == grads_ref.keys()
    for k in grads:
        torch.testing.assert_close(grads[k], grads_ref[k], rtol=1e-4, atol=1e-6, msg=k)
    if zeros:  # a dead filter gets the same gradient pattern (max-pool ties resolve alike)
        assert torch.equal(grads["conv2.weight"][0] == 0, grads_ref["conv2.weight"][0] == 0)


@pytest.mark.parametrize("cin,cout,k,pad,hw", [(1, 4, 3, 1, 8), (3, 5, 3, 1, 7), (2, 3, 3, 0, 6), (2, 3, 5, 2, 9),
                                               (2, 3, 1, 0, 5), (2, 4, (3, 1), (1, 0), 6)])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_module_matches_f_conv2d_float64(cin, cout, k, pad, hw, bias):
    torch.manual_seed(0)
    conv = Conv2d(cin, cout, k, padding=pad, bias=bias).double()
    x = torch.randn(3, cin, hw, hw + 1, dtype=torch.float64, requires_grad=True)
    out = conv(x)
    ref = F.conv2d(x, conv.weight, conv.bias, padding=conv.padding)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ref)
    params = (x, conv.weight) + ((conv.bias,) if bias else ())
    for a, b in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_channels_last_helper_gives_nhwc_strides_for_one_channel_too():
    for c in (1, 3):
        x = torch.randn(2, c, 5, 4)
        y = channels_last(x)
        assert torch.equal(y, x) and y.stride() == (5 * 4 * c, 1, 4 * c, c)
        assert channels_last(y).data_ptr() == y.data_ptr()  # already NHWC: no copy


def test_fast_path_accepts_any_input_layout_and_returns_channels_last():
    torch.manual_seed(0)
    conv = Conv2d(4, 6, 3, padding=1)
    x = torch.randn(5, 4, 9, 9)
    ref = F.conv2d(x, conv.weight, conv.bias, padding=1)
    for inp in (x, x.contiguous(memory_format=torch.channels_last), torch.randn(5, 4, 9, 18)[..., ::2].copy_(x)):
        out = conv(inp)
        assert out.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    one = Conv2d(1, 6, 3, padding=1)
    assert one(torch.randn(5, 1, 9, 9)).is_contiguous(memory_format=torch.channels_last)


def test_other_conv_configurations_match_nn_conv2d():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 9)
    for kwargs in ({"stride": 2, "padding": 1}, {"dilation": 2, "padding": 2}, {"groups": 3, "padding": 1},
                   {"padding": "same"}, {"padding": 1, "padding_mode": "reflect"}):
        conv = Conv2d(3, 6, 3, **kwargs)
        ref = nn.Conv2d(3, 6, 3, **kwargs)
        ref.load_state_dict(conv.state_dict())
        torch.testing.assert_close(conv(x), ref(x), rtol=1e-5, atol=1e-6)
    conv = Conv2d(3, 6, 3, padding=1)
    conv.fast_cpu = False  # the old path: NCHW in, NCHW out
    assert conv(x).is_contiguous()


def test_state_dict_keys_and_pruning_see_the_conv_weights():
    cfg = bp.RunConfig(dataset="synthetic", model="cnn", cnn_hidden=16)
    torch.manual_seed(0)
    model = bp.build_model(cfg, (1, 8, 8), 10)
    assert list(model.state_dict()) == STATE_KEYS
    assert isinstance(model.conv1, nn.Conv2d) and isinstance(model.conv2, nn.Conv2d)
    assert list(bp.prunable_parameters(model)) == ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"]
    # a state_dict saved from a plain nn.Conv2d model loads and gives the same outputs
    plain = _reference(model)
    fresh = bp.build_model(cfg, (1, 8, 8), 10)
    fresh.load_state_dict(plain.state_dict())
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(fresh(x), plain(x), rtol=1e-5, atol=1e-6)
    mask = bp.prune_magnitude(model, 0.75)
    assert set(mask) == {"conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"}
    assert float((model.conv2.weight == 0).float().mean()) == pytest.approx(0.75, abs=0.01)


def test_torch_prune_interop_applies_its_mask_every_forward():
    from torch.nn.utils import prune

    torch.manual_seed(0)
    model = CNN((1, 8, 8), 10, channels=(4, 8), hidden=16)
    for m in (model.conv1, model.conv2):
        prune.l1_unstructured(m, "weight", amount=0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    for _ in range(2):  # two steps: the hook recomputes weight = weight_orig * weight_mask each forward
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    out = model(x)
    model.conv1.fast_cpu = model.conv2.fast_cpu = False
    torch.testing.assert_close(out, model(x), rtol=1e-5, atol=1e-6)
    assert float((model.conv2.weight == 0).float().mean()) >= 0.5


def test_training_is_deterministic_and_masks_stay_zero():
    cfg = bp.RunConfig(dataset="synthetic", model="cnn", cnn_hidden=16, method="magnitude", regrow=False,
                       epochs=2, sparsity=0.8, bf_samples=64)
    a = bp.train(cfg, progress=False)
    b = bp.train(cfg, progress=False)
    cols = ["seconds", "bf_seconds"]
    assert a.history.drop(columns=cols).equals(b.history.drop(columns=cols))
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    assert a.final_sparsity == pytest.approx(0.8, abs=0.01)


def test_reference_path_still_trains_to_the_same_history_up_to_rounding():
    cfg = bp.RunConfig(dataset="synthetic", model="cnn", cnn_hidden=16, method="none", epochs=1)
    fast = bp.train(cfg, progress=False).history
    Conv2d.fast_cpu = False
    try:
        slow = bp.train(cfg, progress=False).history
    finally:
        Conv2d.fast_cpu = True
    for c in ("train_loss", "test_loss", "test_acc"):
        assert fast[c].iloc[0] == pytest.approx(slow[c].iloc[0], rel=1e-3, abs=1e-3), c


def _relu_then_pool(self, x: torch.Tensor) -> torch.Tensor:
    """The textbook order, ReLU before max-pool, as the CNN was written before."""
    x = self.pool(torch.relu(self.conv1(x)))
    x = self.pool(torch.relu(self.conv2(x)))
    return self.fc2(torch.relu(self.fc1(x.flatten(1))))


@pytest.mark.parametrize("zeros", [False, True])
def test_pool_then_relu_is_bit_identical_to_relu_then_pool(zeros, monkeypatch):
    """The CNN pools before its ReLU (less work); outputs and every gradient are exactly the same."""
    torch.manual_seed(3)
    model = CNN((1, 28, 28), 10, channels=(8, 16), hidden=32)
    if zeros:  # dead filters and negative biases: many all-negative pooling windows and ties
        _zero_some(model)
        with torch.no_grad():
            model.conv1.bias[1] = -0.5
    ref = copy.deepcopy(model)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    logits, gx, grads = _grads(model, x, y)
    monkeypatch.setattr(CNN, "forward", _relu_then_pool)
    logits_ref, gx_ref, grads_ref = _grads(ref, x, y)
    assert torch.equal(logits, logits_ref) and torch.equal(gx, gx_ref)
    for k in grads:
        assert torch.equal(grads[k], grads_ref[k]), k


def test_cnn_training_history_unchanged_by_the_pooling_order(monkeypatch):
    """Three epochs of a pruned CNN run: the same history with either order, to the last bit."""
    cfg = bp.RunConfig(dataset="digits", model="cnn", epochs=3, method="magnitude", sparsity=0.5, cnn_hidden=16)
    cols = ["train_loss", "test_loss", "test_acc", "sparsity"]
    new = bp.train(cfg, progress=False).history[cols]
    monkeypatch.setattr(CNN, "forward", _relu_then_pool)
    old = bp.train(cfg, progress=False).history[cols]
    assert new.equals(old)
