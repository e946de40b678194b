"""Issue 16 item 1 (low-precision models keep the budget exactly) and issue 14 item 6 (the ``eps`` API guard)."""

from __future__ import annotations

import warnings

import pytest
import torch

from labelflip._validation import LabelflipError, LabelflipWarning
from labelflip.attacks import MIFGSM
from labelflip.models import MultiLabelModel
from labelflip.testing import TinyNet, factory_for, make_inputs, make_model

LOW = [torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", LOW, ids=["float16", "bfloat16"])
@pytest.mark.parametrize("eps", [0.004, 0.008])
def test_low_precision_model_keeps_linf_budget_against_the_callers_input(dtype: torch.dtype, eps: float) -> None:
    """Issue 16: a float16 model reported L-inf 0.00415 at eps 0.004 (0.00426 against the float32 input)."""
    model = make_model(dtype=dtype)
    x = make_inputs(6)
    res = MIFGSM(model, return_adv=True)(x, eps)
    assert res.x_adv is not None and res.x_adv.dtype == torch.float32
    achieved = (res.x_adv[0] - x).abs().amax()
    assert float(achieved) <= eps, float(achieved)  # exactly: the clamp is in the caller's dtype
    assert float(res.linf.max()) <= eps
    assert res.adv_probs.dtype == torch.float32 and torch.isfinite(res.adv_probs).all()


@pytest.mark.parametrize("dtype", LOW, ids=["float16", "bfloat16"])
def test_low_precision_l2_and_subset_attacks_keep_their_budget(dtype: torch.dtype) -> None:
    model = make_model(dtype=dtype)
    x = make_inputs(4)
    res = MIFGSM(model, norm="l2", return_adv=True)(x, 0.3)
    assert res.x_adv is not None
    assert float((res.x_adv[0] - x).flatten(1).norm(dim=1).max()) <= 0.3 * (1 + 1e-6)
    res = factory_for("class:0.5", "linf", return_adv=True)(model)(x, [0.0, 0.01])
    assert res.x_adv is not None and torch.equal(res.x_adv[0], x)
    assert float((res.x_adv[1] - x).abs().max()) <= 0.01


def test_wrapper_casts_inside_forward_only() -> None:
    net = TinyNet().half()
    model = MultiLabelModel(net, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    seen: list[torch.dtype] = []
    net.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0].dtype))
    x = make_inputs(2)
    logits = model(x)
    assert seen == [torch.float16] and logits.dtype == torch.float32
    assert model.work_dtype(torch.float32) == torch.float32 and model.work_dtype(torch.float64) == torch.float64
    assert MultiLabelModel(TinyNet().double()).work_dtype(torch.float32) == torch.float64


def test_float32_path_casts_nothing() -> None:
    model = make_model().eval()
    x = make_inputs(2)
    assert model(x).dtype == torch.float32
    assert torch.equal(model(x), model.module(x))  # no extra op on the default path


def test_probability_outputs_of_a_float16_model_do_not_saturate_to_inf() -> None:
    class Probs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = TinyNet()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(4 * self.net(x))

    model = MultiLabelModel(Probs().half(), output_kind="probabilities")
    res = MIFGSM(model)(make_inputs(3), 0.01)
    assert torch.isfinite(res.adv_probs).all()


# ------------------------------------------------------------------------------------------- issue 14 item 6


def test_label_matrix_in_place_of_eps_is_refused_with_the_fix() -> None:
    model = make_model()
    x = make_inputs(5)
    y = (torch.rand(5, 8, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    with pytest.raises(LabelflipError, match="'eps'") as info:
        MIFGSM(model)(x, y)
    msg = str(info.value)
    assert "second argument" in msg and "target=" in msg
    with pytest.raises(LabelflipError, match="target="):
        MIFGSM(model)(x, y.numpy())
    with pytest.raises(LabelflipError, match="target="):
        MIFGSM(model)(x, y.tolist())


def test_one_d_budgets_still_accepted() -> None:
    model = make_model()
    x = make_inputs(2)
    for eps in (0.01, [0.0, 0.01], torch.tensor([0.0, 0.01]), [torch.tensor(0.01)], torch.tensor(0.01)):
        assert MIFGSM(model)(x, eps).flips.shape[1] == 2


def test_large_linf_budget_warns_once_per_call() -> None:
    model = make_model()
    x = make_inputs(2)
    with pytest.warns(LabelflipWarning, match="8/255") as record:
        MIFGSM(model)(x, [0.35, 0.5, 1.0])
    assert len([w for w in record if issubclass(w.category, LabelflipWarning)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", LabelflipWarning)
        MIFGSM(model)(x, [0.0, 0.3])  # 0.3 itself is fine
        MIFGSM(model, norm="l2")(x, 0.5)  # L2 radii are larger by nature
