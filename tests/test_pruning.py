"""Tests of the pruning mechanics (sktransfer/pruning/magnitude.py) on tiny networks."""

import copy
import pickle

import pytest
import torch
from torch import nn

from sktransfer import pruning


def mlp():
    layers = [nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 10), nn.ReLU(), nn.Linear(10, 3)]
    return nn.Sequential(*layers)


def convnet():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 4)
    )


def counts(module, layers):
    return {name: r for name, (r, _) in pruning.weights_remaining(module, layers).items()}


def train_steps(module, optimizer, steps=5, in_shape=(8, 20), n_out=3):
    for _ in range(steps):
        optimizer.zero_grad()
        out = module(torch.randn(*in_shape))
        loss = nn.functional.cross_entropy(out, torch.randint(0, n_out, (in_shape[0],)))
        loss.backward()
        optimizer.step()


def test_prunable_layers_default_skips_frozen_and_non_weight_layers():
    net = convnet()
    assert pruning.prunable_layers(net) == ["0", "4"]
    net[0].weight.requires_grad_(False)
    assert pruning.prunable_layers(net) == ["4"]


def test_prunable_layers_errors_name_the_problem():
    with pytest.raises(ValueError, match="'7' to prune is not a submodule"):
        pruning.prunable_layers(mlp(), ["7"])
    with pytest.raises(ValueError, match="'1' is a ReLU"):
        pruning.prunable_layers(mlp(), ["1"])
    frozen = mlp().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable Linear or Conv"):
        pruning.prunable_layers(frozen)


@pytest.mark.parametrize("rounds", [1, 3, 6])
def test_per_layer_sparsity_is_exact_every_round(rounds):
    net = mlp()
    layers = pruning.prunable_layers(net)
    for _ in range(rounds):
        pruning.prune_by_magnitude(net, layers, 0.2, output_layer="4", output_rate=0.1)
    assert counts(net, layers) == {
        "0": pruning.expected_remaining(600, 0.2, rounds),
        "2": pruning.expected_remaining(300, 0.2, rounds),
        "4": pruning.expected_remaining(30, 0.1, rounds),
    }


def test_lenet_300_100_matches_the_papers_formula():
    net = nn.Sequential(nn.Linear(784, 300), nn.Linear(300, 100), nn.Linear(100, 10))
    layers = pruning.prunable_layers(net)
    for k in range(1, 16):
        pruning.prune_by_magnitude(net, layers, 0.2, output_layer="2", output_rate=0.1)
        remaining = sum(counts(net, layers).values())
        formula = (265200 * 0.8**k + 1000 * 0.9**k) / 266200
        # Whole weights: at most half a weight of rounding per layer and round.
        assert abs(remaining - 266200 * formula) < 1.5
        if k in (3, 7, 15):
            assert round(100 * remaining / 266200, 1) == {3: 51.3, 7: 21.1, 15: 3.6}[k]


def test_magnitude_pruning_removes_the_smallest_remaining_weights():
    net = nn.Sequential(nn.Linear(4, 5))
    with torch.no_grad():
        net[0].weight.copy_(torch.arange(1, 21, dtype=torch.float32).reshape(5, 4))
    pruning.prune_by_magnitude(net, ["0"], 0.25)
    assert net[0].weight_mask.flatten().tolist() == [0] * 5 + [1] * 15
    pruning.prune_by_magnitude(net, ["0"], 0.2)  # 20 % of the 15 remaining: 3 more
    assert net[0].weight_mask.flatten().tolist() == [0] * 8 + [1] * 12


def test_global_scope_uses_one_threshold_and_spares_the_output_layer():
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
    net.append(nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        net[0].weight.fill_(0.1)  # small: all go first
        net[1].weight.fill_(5.0)
        net[2].weight.fill_(0.01)
    pruning.prune_by_magnitude(
        net, ["0", "1", "2"], 0.5, output_layer="2", output_rate=0.0, scope="global"
    )
    assert counts(net, ["0", "1", "2"]) == {"0": 0, "1": 4, "2": 4}


def test_rewind_resets_survivors_to_initial_values_and_zeroes_the_pruned():
    net = mlp()
    layers = pruning.prunable_layers(net)
    init = pruning.snapshot(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.1)
    train_steps(net, optimizer)
    pruning.prune_by_magnitude(net, layers, 0.5)
    pruning.rewind(net, init)
    for name in layers:
        layer = net.get_submodule(name)
        keep = layer.weight_mask.bool()
        assert torch.equal(layer.weight_orig[keep], init[f"{name}.weight"][keep])
        assert torch.equal(layer.weight[keep], init[f"{name}.weight"][keep])
        assert not layer.weight_orig[~keep].any()
        assert torch.equal(layer.bias, init[f"{name}.bias"])


def test_rewind_restores_buffers_and_refuses_a_foreign_snapshot():
    net = convnet()
    init = pruning.snapshot(net)
    net.train()
    net(torch.randn(4, 3, 6, 6))
    assert not torch.equal(net[1].running_mean, init["1.running_mean"])
    pruning.rewind(net, init)
    assert torch.equal(net[1].running_mean, init["1.running_mean"])
    with pytest.raises(ValueError, match="Cannot rewind '0.weight'"):
        pruning.rewind(net, pruning.snapshot(mlp()))


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda p: torch.optim.Adam(p, lr=0.05),
        lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
    ],
    ids=["adam", "adamw", "sgd-momentum-decay"],
)
def test_pruned_weights_stay_exactly_zero_while_training(make_optimizer):
    net = mlp()
    layers = pruning.prunable_layers(net)
    init = pruning.snapshot(net)
    train_steps(net, make_optimizer(net.parameters()))
    pruning.prune_by_magnitude(net, layers, 0.6)
    pruning.rewind(net, init)
    train_steps(net, make_optimizer(net.parameters()), steps=10)
    for name in layers:
        layer = net.get_submodule(name)
        pruned = ~layer.weight_mask.bool()
        assert pruned.any()
        assert not layer.weight[pruned].any()
        assert not layer.weight_orig[pruned].any()  # no update reached them either
        assert not torch.equal(
            layer.weight_orig[~pruned], init[f"{name}.weight"][~pruned]
        )  # while the survivors did train


def test_reinitialize_draws_new_values_with_the_same_mask():
    net = mlp()
    layers = pruning.prunable_layers(net)
    init = pruning.snapshot(net)
    pruning.prune_by_magnitude(net, layers, 0.5)
    masks = {n: net.get_submodule(n).weight_mask.clone() for n in layers}
    pruning.reinitialize(net, layers, random_state=1)
    for name in layers:
        layer = net.get_submodule(name)
        assert torch.equal(layer.weight_mask, masks[name])
        assert not layer.weight[~masks[name].bool()].any()
        assert not torch.equal(layer.weight_orig, init[f"{name}.weight"] * masks[name])
    again = copy.deepcopy(net)
    pruning.reinitialize(net, layers, random_state=1)
    pruning.reinitialize(again, layers, random_state=1)
    assert torch.equal(net[0].weight, again[0].weight)  # seeded


def test_make_permanent_folds_masks_into_plain_weights():
    net = mlp()
    layers = pruning.prunable_layers(net)
    pruning.prune_by_magnitude(net, layers, 0.5)
    x = torch.randn(3, 20)
    expected = net(x)
    pruning.make_permanent(net)
    assert not pruning.is_pruned(net)
    assert "0.weight" in net.state_dict() and "0.weight_mask" not in net.state_dict()
    assert isinstance(net[0].weight, nn.Parameter)
    assert torch.equal(net(x), expected)
    assert counts(net, layers)["0"] == 300


def test_pruned_network_survives_pickle_and_deepcopy_after_training():
    net = mlp()
    layers = pruning.prunable_layers(net)
    pruning.prune_by_magnitude(net, layers, 0.5)
    train_steps(net, torch.optim.Adam(net.parameters()))
    pruning.refresh_masked_weights(net)
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert pruning.is_pruned(clone)
        assert torch.equal(clone[0].weight_mask, net[0].weight_mask)
        x = torch.randn(2, 20)
        assert torch.equal(clone(x), net(x))


def test_snapshot_uses_unpruned_names():
    net = mlp()
    pruning.prune_by_magnitude(net, ["0"], 0.5)
    state = pruning.snapshot(net)
    assert "0.weight" in state and "0.weight_orig" not in state and "0.weight_mask" not in state


def test_bad_scope_is_rejected():
    with pytest.raises(ValueError, match="scope must be 'layer' or 'global'; got 'all'"):
        pruning.prune_by_magnitude(mlp(), ["0"], 0.2, scope="all")
