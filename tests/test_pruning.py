import pytest
import torch
from torch import nn

import bayesprune as bp
from bayesprune.core.criteria import magnitude_mask, random_mask
from bayesprune.core.data import TensorDataset
from bayesprune.core.pruning import num_to_prune


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10), nn.ReLU(), nn.Linear(10, 3))


def test_prunable_are_linear_and_conv_weights_not_biases():
    names = list(bp.prunable_parameters(_net()))
    assert names == ["0.weight", "3.weight", "5.weight"]


@pytest.mark.parametrize("r", [0.0, 0.25, 0.5, 0.9, 0.99])
def test_magnitude_exact_counts_per_layer(r):
    net = _net()
    bp.prune_magnitude(net, r)
    for name, w in bp.prunable_parameters(net).items():
        assert int((w == 0).sum()) == num_to_prune(w.numel(), r), name


def test_magnitude_picks_the_smallest():
    w = torch.tensor([[0.5, -0.1, 3.0], [-2.0, 0.05, -0.7]])
    mask = magnitude_mask(w, 0.5)
    assert mask.tolist() == [[False, False, True], [True, False, True]]
    # every pruned |w| <= every kept |w|
    net = _net()
    before = {k: v.detach().clone() for k, v in bp.prunable_parameters(net).items()}
    mask = bp.prune_magnitude(net, 0.7)
    for k, m in mask.items():
        assert before[k].abs()[~m].max() <= before[k].abs()[m].min()


def test_magnitude_counts_existing_zeros_first():
    w = torch.tensor([0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    mask = magnitude_mask(w, 0.5)
    assert (~mask).sum() == 5
    assert not mask[:3].any() and not mask[3] and not mask[4] and mask[5:].all()


@pytest.mark.parametrize("r", [0.25, 0.5, 0.9])
def test_random_exact_counts_with_existing_zeros(r):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(40, 25)
    w.view(-1)[torch.randperm(1000, generator=g)[:100]] = 0.0  # 100 zeros already there
    mask = random_mask(w, r, g)
    k = num_to_prune(1000, r)
    assert int((~mask).sum()) == k  # k' = k - n_z new ones, plus the n_z existing
    assert not mask[w == 0].any()  # existing zeros stay pruned
    pruned_now = (~mask) & (w != 0)
    assert int(pruned_now.sum()) == k - 100


def test_random_does_nothing_when_enough_zeros():
    w = torch.tensor([0.0, 0.0, 0.0, 1.0])
    assert random_mask(w, 0.5).tolist() == [False, False, False, True]


def test_random_is_reproducible_with_a_generator_and_varies_without_same_seed():
    w = torch.randn(50, 50)
    m1 = random_mask(w, 0.5, torch.Generator().manual_seed(3))
    m2 = random_mask(w, 0.5, torch.Generator().manual_seed(3))
    m3 = random_mask(w, 0.5, torch.Generator().manual_seed(4))
    assert torch.equal(m1, m2)
    assert not torch.equal(m1, m3)


def test_prune_random_model_and_measured_sparsity():
    net = _net()
    mask = bp.prune_random(net, 0.75, generator=torch.Generator().manual_seed(0))
    assert isinstance(mask, bp.Mask)
    total = sum(bp.count_weights(net).values())
    expected = sum(num_to_prune(n, 0.75) for n in bp.count_weights(net).values())
    assert bp.sparsity(net) == pytest.approx(expected / total)
    assert mask.sparsity == pytest.approx(bp.sparsity(net))
    assert set(bp.layer_sparsity(net)) == set(mask)
    for name, s in bp.layer_sparsity(net).items():
        assert s == pytest.approx(0.75, abs=0.02), name


def test_global_magnitude_ranks_across_layers():
    net = _net()
    with torch.no_grad():
        bp.prunable_parameters(net)["5.weight"].mul_(100.0)  # last layer is huge: survives
    mask = bp.compute_mask(net, "magnitude", 0.5, scope="global")
    assert mask["5.weight"].all()
    assert mask.sparsity == pytest.approx(0.5, abs=1e-3)



def test_global_scope_works_for_every_criterion_and_counts_all_targets():
    net = _net()
    n = sum(w.numel() for w in bp.prunable_parameters(net).values())
    torch.manual_seed(1)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 3, (32,))
    data = TensorDataset("tiny", x, y, x[:4], y[:4], 3)  # for criteria that read the data (obs: its curvature)
    for criterion in bp.CRITERIA:
        mask = bp.compute_mask(net, criterion, 0.5, scope="global", generator=torch.Generator().manual_seed(0),
                               data=data, prior_precision=1.0)
        assert set(mask) == set(bp.prunable_parameters(net))
        if criterion != "neuron":  # one score per weight: exactly round(n r) of all weights go
            assert mask.num_pruned == round(n * 0.5), criterion
    g1, g2 = (torch.Generator().manual_seed(s) for s in (1, 2))
    m1 = bp.compute_mask(net, "random", 0.5, scope="global", generator=g1)
    m2 = bp.compute_mask(net, "random", 0.5, scope="global", generator=g2)
    assert any(not torch.equal(m1[k], m2[k]) for k in m1)  # the draw depends on the generator


def test_bad_strategy_and_sparsity_are_named():
    with pytest.raises(ValueError, match="criterion='taylor'.*magnitude, random, neuron"):
        bp.compute_mask(_net(), "taylor", 0.5)
    with pytest.raises(ValueError, match="sparsity=1.5"):
        bp.prune_magnitude(_net(), 1.5)


def test_pruned_state_dict_loads_into_plain_model():
    net = _net()
    bp.prune_magnitude(net, 0.9)
    plain = _net()
    plain.load_state_dict(net.state_dict())
    assert bp.sparsity(plain) == pytest.approx(bp.sparsity(net))


def test_to_torch_prune_hands_masks_over_and_keeps_outputs():
    from torch.nn.utils import prune

    net = _net()
    mask = bp.prune_magnitude(net, 0.6)
    x = torch.randn(5, 1, 8, 8)
    ref = net(x)
    bp.to_torch_prune(net, mask)
    conv = net[0]
    assert hasattr(conv, "weight_mask") and hasattr(conv, "weight_orig")
    assert torch.equal(conv.weight_mask.bool(), mask["0.weight"])
    assert any(isinstance(h, prune.BasePruningMethod) for h in conv._forward_pre_hooks.values())
    torch.testing.assert_close(net(x), ref)
    # the hook keeps pruned weights at zero even if weight_orig moves
    with torch.no_grad():
        conv.weight_orig.add_(1.0)
    net(x)
    assert (conv.weight[~mask["0.weight"]] == 0).all()
    bp.remove_torch_prune(net)
    assert not hasattr(net[0], "weight_mask")
    assert isinstance(net[0].weight, nn.Parameter)


def test_mask_and_and_apply():
    net = _net()
    a = bp.compute_mask(net, "magnitude", 0.5)
    b = bp.compute_mask(net, "random", 0.5, generator=torch.Generator().manual_seed(1))
    both = a & b
    assert both.num_pruned >= max(a.num_pruned, b.num_pruned)
    both.apply(net)
    assert bp.Mask.from_weights(net).num_pruned == both.num_pruned
    with pytest.raises(KeyError, match="not a prunable weight"):
        bp.apply_mask(net, {"nope.weight": torch.ones(1)})
