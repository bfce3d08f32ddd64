import torch
from torch import nn

from policylab.nn import EnsembleCritic, EnsembleLinear, polyak_update


def _separate_critic(critic: EnsembleCritic, member: int) -> nn.Sequential:
    """An ordinary nn.Sequential MLP holding one member's weights."""
    layers = []
    for i, layer in enumerate(critic.layers):
        linear = nn.Linear(layer.in_features, layer.out_features)
        with torch.no_grad():
            linear.weight.copy_(layer.weight[member].T)
            linear.bias.copy_(layer.bias[member, 0])
        layers.append(linear)
        if i < len(critic.layers) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def test_ensemble_critic_matches_separate_mlps():
    torch.manual_seed(0)
    critic = EnsembleCritic(5, 2, (16, 16), num_critics=3)
    obs, act = torch.randn(7, 5), torch.randn(7, 2)
    q = critic(obs, act)
    assert q.shape == (3, 7)
    for member in range(3):
        expected = _separate_critic(critic, member)(torch.cat([obs, act], -1)).squeeze(-1)
        torch.testing.assert_close(q[member], expected)
    torch.testing.assert_close(critic(obs, act, members=1)[0], q[0])
    torch.testing.assert_close(critic(obs, act, members=2), q[:2])


def test_ensemble_critic_gradients_match_separate_mlps():
    """Backward through the batched layers (the shared-input first layer and the one-column
    output head take their own code paths) gives each member's nn.Linear gradients, and the
    action gradient is the sum over members."""
    torch.manual_seed(1)
    critic = EnsembleCritic(5, 2, (16, 16), num_critics=2)
    obs, act = torch.randn(7, 5), torch.randn(7, 2, requires_grad=True)
    weights = torch.randn(2, 7)
    (critic(obs, act) * weights).sum().backward()
    act_grad = torch.zeros(7, 2)
    for member in range(2):
        separate = _separate_critic(critic, member)
        member_act = act.detach().clone().requires_grad_(True)
        (separate(torch.cat([obs, member_act], -1)).squeeze(-1) * weights[member]).sum().backward()
        act_grad += member_act.grad
        linears = [m for m in separate if isinstance(m, nn.Linear)]
        for layer, linear in zip(critic.layers, linears):
            torch.testing.assert_close(layer.weight.grad[member], linear.weight.grad.T)
            torch.testing.assert_close(layer.bias.grad[member, 0], linear.bias.grad)
    torch.testing.assert_close(act.grad, act_grad)


def test_ensemble_linear_init_matches_nn_linear_scale():
    torch.manual_seed(0)
    layer = EnsembleLinear(2, 256, 256)
    bound = 1 / 16
    assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
    assert not torch.allclose(layer.weight[0], layer.weight[1])


def test_polyak_update():
    source, target = nn.Linear(3, 2), nn.Linear(3, 2)
    expected = [
        (1 - 0.1) * t.detach().clone() + 0.1 * s.detach() for t, s in zip(target.parameters(), source.parameters())
    ]
    polyak_update(target, source, 0.1)
    for p, e in zip(target.parameters(), expected):
        torch.testing.assert_close(p.detach(), e)
