"""Issue 16 item 5: the sigmoid-inside ("probabilities") check is reliable for any K, K = 1 included."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from labelflip._validation import LabelflipError
from labelflip.models import MultiLabelModel, check_model
from labelflip.models.checks import MIN_PROBE_OUTPUTS


def test_untrained_single_label_heads_are_never_refused() -> None:
    """False-positive rate over 200 seeds of untrained ``Linear(768, 1)`` heads: 0 (today's main: about 1 in 7;
    64 random inputs without the extreme ones would still refuse 17 of 200)."""
    x = torch.rand(4, 768, generator=torch.Generator().manual_seed(1))
    refused = []
    for seed in range(200):
        gen = torch.Generator().manual_seed(seed)
        head = nn.Linear(768, 1)
        bound = 768**-0.5  # nn.Linear's default init, drawn from our own generator
        with torch.no_grad():
            head.weight.uniform_(-bound, bound, generator=gen)
            head.bias.uniform_(-bound, bound, generator=gen)
        try:
            check_model(MultiLabelModel(head), x)
        except LabelflipError:
            refused.append(seed)
    assert refused == [], f"{len(refused)} of 200 untrained K=1 heads refused as probabilities: {refused[:10]}"


@pytest.mark.parametrize("k", [1, 2, 24])
def test_a_sigmoid_inside_is_still_refused_for_any_k(k: int) -> None:
    gen = torch.Generator().manual_seed(k)
    head = nn.Linear(768, k)
    with torch.no_grad():
        head.weight.normal_(0, 0.05, generator=gen)
    x = torch.rand(4, 768, generator=gen)
    with pytest.raises(LabelflipError, match="look like") as info:
        check_model(MultiLabelModel(nn.Sequential(head, nn.Sigmoid())), x)
    n_values = int(str(info.value).split(" outputs of random")[0].rsplit(" ", 1)[1])
    assert n_values >= MIN_PROBE_OUTPUTS


def test_single_input_single_label_uses_enough_outputs() -> None:
    """One input and K = 1 still looks at 64+ random outputs plus the two extreme inputs."""
    net = nn.Sequential(nn.Linear(5, 1), nn.Sigmoid())
    with pytest.raises(LabelflipError, match=r"on (6[4-9]|[7-9]\d) outputs"):
        check_model(MultiLabelModel(net), torch.rand(1, 5, generator=torch.Generator().manual_seed(0)))


def test_probabilities_check_leaves_the_global_rng_alone() -> None:
    net = nn.Linear(5, 1)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # fixed weights: a random init could give outputs inside [0, 1] (refused as probabilities)
        net.weight.copy_(torch.tensor([[3.0, -2.0, 4.0, -3.0, 2.0]]))
        net.bias.fill_(-1.0)
    model = MultiLabelModel(net)
    x = torch.rand(2, 5, generator=gen)
    state = torch.get_rng_state()
    check_model(model, x)
    assert torch.equal(state, torch.get_rng_state())
