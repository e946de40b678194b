"""MultiLabelModel: logits, normalisation inside the wrapper, thresholds, output adapters, modes, checks."""

from __future__ import annotations

import types
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labelflip._validation import LabelflipError, LabelflipWarning
from labelflip.attacks.mifgsm import MIFGSM
from labelflip.models import MultiLabelModel, as_model, check_model, ensure_checked
from tests.helpers import K, TinyCNN, make_inputs

# ---------------------------------------------------------------------------------------------- helpers


class Linear48(nn.Module):
    """Flatten (N, 3, 4, 4) -> Linear(48, K) with fixed weights; ``kind`` selects the output format."""

    def __init__(self, kind: str = "tensor", k: int = K) -> None:
        super().__init__()
        self.kind = kind
        self.lin = nn.Linear(48, k)
        gen = torch.Generator().manual_seed(3)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(self.lin.weight.shape, generator=gen))
            self.lin.bias.copy_(torch.linspace(-1.0, 1.0, k))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1))

    def forward(self, x: torch.Tensor) -> object:
        z = self.logits(x)
        if self.kind == "tensor":
            return z
        if self.kind == "dict":
            return {"aux": torch.zeros_like(z), "out": z}
        if self.kind == "dict_logits":
            return {"aux": torch.zeros_like(z), "logits": z}
        if self.kind == "tuple":
            return (torch.zeros_like(z), z)
        if self.kind == "object":
            return types.SimpleNamespace(aux=torch.zeros_like(z), logits=z)
        if self.kind == "sigmoid":
            return torch.sigmoid(z)
        raise AssertionError(self.kind)


class Recorder(nn.Module):
    """Records the input it sees and returns logits from it."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: torch.Tensor | None = None
        self.lin = nn.Linear(3, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.detach().clone()
        return self.lin(x.mean(dim=(2, 3)))


class ConstLogits(nn.Module):
    """Returns the same logits row for every input (differentiably, through a zero multiple of x)."""

    def __init__(self, z: list[float]) -> None:
        super().__init__()
        self.register_buffer("z", torch.tensor(z, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.z.expand(x.shape[0], -1) + 0.0 * x.flatten(1)[:, :1]


def small_inputs(n: int = 4, seed: int = 5) -> torch.Tensor:
    return make_inputs(n, seed, shape=(3, 4, 4))


def _flags(module: nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in module.named_modules()}


# ---------------------------------------------------------------------------------------------- forward


def test_logits_shape_and_num_labels_inferred(model: MultiLabelModel, x: torch.Tensor) -> None:
    assert model.num_labels is None
    out = model(x)
    assert out.shape == (x.shape[0], K)
    assert out.dtype == torch.float32
    check_model(model, x)
    assert model.num_labels == K


def test_probabilities_are_sigmoid_of_logits(model: MultiLabelModel, x: torch.Tensor) -> None:
    model.eval()
    p = model.probabilities(x)
    assert torch.equal(p, torch.sigmoid(model(x)))
    assert bool(((p >= 0) & (p <= 1)).all())


def test_normalisation_happens_inside_the_wrapper() -> None:
    net = Recorder()
    mean, std = [0.1, 0.5, 0.9], [0.5, 0.25, 2.0]
    wrapped = MultiLabelModel(net, mean=mean, std=std)
    x = make_inputs(2, seed=7)
    out = wrapped(x)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    expected = (x - m) / s
    assert net.seen is not None
    torch.testing.assert_close(net.seen, expected)
    # the output is the network applied to the normalised input, not to the raw one
    torch.testing.assert_close(out, net.lin(expected.mean(dim=(2, 3))))
    # and without mean/std the network sees x unchanged
    MultiLabelModel(net)(x)
    assert torch.equal(net.seen, x)


def test_normalised_wrapper_keeps_budgets_in_pixel_units() -> None:
    """With std << 1 a pixel-unit budget must still bound the pixel-unit perturbation."""
    wrapped = MultiLabelModel(TinyCNN(), mean=[0.5, 0.5, 0.5], std=[0.1, 0.1, 0.1])
    x = make_inputs(3, seed=2)
    res = MIFGSM(wrapped, return_adv=True)(x, [0.01])
    assert res.x_adv is not None
    assert float((res.x_adv[0] - x).abs().max()) <= 0.01 + 1e-6
    assert float(res.linf.max()) > 0.005  # it did move


# ---------------------------------------------------------------------------------------------- thresholds


def test_threshold_is_strict_at_exact_equality() -> None:
    wrapped = MultiLabelModel(ConstLogits([0.0, 0.0, 0.0]), output_kind="logits")
    x = small_inputs(2)
    assert float(wrapped.probabilities(x)[0, 0]) == 0.5  # sigmoid(0) is exactly 0.5
    assert not bool(wrapped.predict(x).any())
    probs = torch.tensor([[0.5, 0.5000001, 0.4999999]])
    assert wrapped.predict_from_probabilities(probs).tolist() == [[False, True, False]]


def test_per_label_thresholds_strict() -> None:
    z = [1.0, 1.0, -1.0, 2.0]
    p = torch.sigmoid(torch.tensor(z))
    # label 0: threshold below P -> positive; label 1: threshold == P exactly -> negative;
    # label 2: threshold below P (0.27) -> positive; label 3: threshold above P -> negative.
    th = [0.5, float(p[1]), 0.2, 0.95]
    wrapped = MultiLabelModel(ConstLogits(z), threshold=th, output_kind="logits")
    assert wrapped.threshold.shape == (4,)
    x = small_inputs(3)
    pred = wrapped.predict(x)
    assert pred.dtype == torch.bool
    assert pred.tolist() == [[True, False, True, False]] * 3


def test_set_threshold_replaces_threshold() -> None:
    wrapped = MultiLabelModel(ConstLogits([0.5, -0.5]), output_kind="logits")
    x = small_inputs(1)
    assert wrapped.predict(x).tolist() == [[True, False]]
    wrapped.set_threshold([0.7, 0.3])
    assert wrapped.predict(x).tolist() == [[False, True]]


# ---------------------------------------------------------------------------------------------- adapters


@pytest.mark.parametrize(
    ("kind", "output"),
    [
        ("tensor", None),
        ("dict", "out"),
        ("tuple", 1),
        ("dict", lambda o: o["out"]),
        ("tuple", lambda o: o[1]),
        ("dict_logits", None),
        ("object", None),
    ],
    ids=["tensor", "dict-key", "tuple-index", "callable-dict", "callable-tuple", "auto-dict-logits", "auto-attr"],
)
def test_output_adapters_select_the_logits(kind: str, output: object) -> None:
    net = Linear48(kind)
    wrapped = MultiLabelModel(net, output=output)  # type: ignore[arg-type]
    x = small_inputs()
    expected = net.logits(x)
    out = wrapped(x)
    assert isinstance(out, torch.Tensor)
    torch.testing.assert_close(out, expected)
    check_model(wrapped, x)  # an adapted model passes the sanity checks (2-D logits, gradient flows)
    assert wrapped.num_labels == K


def test_dict_without_logits_and_no_adapter_is_refused_naming_output() -> None:
    with pytest.raises(LabelflipError, match=r"'output'.*keys \['aux', 'out'\]"):
        MultiLabelModel(Linear48("dict"))(small_inputs())


def test_output_kind_probabilities_converts_to_logits() -> None:
    net = Linear48("sigmoid")
    wrapped = MultiLabelModel(net, output_kind="probabilities")
    x = small_inputs()
    with torch.no_grad():
        z = net.logits(x)
    assert float(z.abs().max()) < 8  # the conversion is accurate in this range
    torch.testing.assert_close(wrapped(x), z, atol=2e-3, rtol=1e-3)
    check_model(wrapped, x)  # not refused: the user said these are probabilities
    assert torch.equal(wrapped.predict(x), z > 0)


def test_output_kind_probabilities_clamps_saturated_outputs() -> None:
    class Saturated(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tensor([[0.0, 1.0, 0.5]]).expand(x.shape[0], -1) + 0.0 * x.flatten(1)[:, :1]

    out = MultiLabelModel(Saturated(), output_kind="probabilities")(small_inputs(2))
    assert bool(torch.isfinite(out).all())
    assert float(out[0, 0]) < -10 and float(out[0, 1]) > 10
    assert abs(float(out[0, 2])) < 1e-6


# ---------------------------------------------------------------------------------------------- modes


def test_eval_mode_sets_eval_and_restores_mixed_flags(tiny_cnn: TinyCNN) -> None:
    wrapped = MultiLabelModel(tiny_cnn)
    wrapped.eval()  # the wrapper itself in eval while its network is mixed:
    tiny_cnn.train()  # BN in eval, dropout in train, head in eval
    tiny_cnn.features[1].eval()
    tiny_cnn.head.eval()
    before = _flags(wrapped)
    assert len(set(before.values())) == 2  # really mixed
    with wrapped.eval_mode() as m:
        assert m is wrapped
        assert not any(_flags(wrapped).values())
    assert _flags(wrapped) == before


def test_eval_mode_restores_flags_after_an_exception(tiny_cnn: TinyCNN) -> None:
    wrapped = MultiLabelModel(tiny_cnn)
    wrapped.train()
    tiny_cnn.drop.eval()
    before = _flags(wrapped)
    inside: list[bool] = []

    def fail_inside() -> None:
        with wrapped.eval_mode():
            inside.append(tiny_cnn.training)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_inside()
    assert inside == [False]
    assert _flags(wrapped) == before
    assert tiny_cnn.training and not tiny_cnn.drop.training


def test_predict_uses_eval_mode_and_restores_training(tiny_cnn: TinyCNN, x: torch.Tensor) -> None:
    wrapped = MultiLabelModel(tiny_cnn)
    wrapped.train()
    before = _flags(wrapped)
    pred1 = wrapped.predict(x)
    pred2 = wrapped.predict(x)
    assert _flags(wrapped) == before
    tiny_cnn.eval()
    with torch.no_grad():
        expected = torch.sigmoid(tiny_cnn(x)) > 0.5
    assert torch.equal(pred1, expected)
    assert torch.equal(pred2, expected)  # dropout off: deterministic


def test_attack_runs_in_eval_mode_and_restores_training(tiny_cnn: TinyCNN, x: torch.Tensor) -> None:
    wrapped = MultiLabelModel(tiny_cnn)
    wrapped.train()
    before = _flags(wrapped)
    res = MIFGSM(wrapped)(x, [0.0, 0.01])
    assert _flags(wrapped) == before
    assert int(res.flips[0].sum()) == 0  # clean vs zero-budget prediction identical: no dropout noise
    tiny_cnn.eval()
    with torch.no_grad():
        torch.testing.assert_close(res.clean_probs, torch.sigmoid(tiny_cnn(x)))


# ---------------------------------------------------------------------------------------------- check()


def test_check_refuses_sigmoid_outputs_naming_output_kind() -> None:
    with pytest.raises(LabelflipError, match="output_kind"):
        check_model(MultiLabelModel(Linear48("sigmoid")), small_inputs())


def test_check_accepts_sigmoid_outputs_when_declared_logits() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_model(MultiLabelModel(Linear48("sigmoid"), output_kind="logits"), small_inputs())


def test_check_is_silent_for_a_clean_model_left_in_training_mode(tiny_cnn: TinyCNN, x: torch.Tensor) -> None:
    tiny_cnn.train()  # nn.Dropout is on in train mode; check() must use eval mode
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_model(MultiLabelModel(tiny_cnn), x)
    assert tiny_cnn.training


class StochasticInEval(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = Linear48()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(F.dropout(x, 0.5, training=True))


class Detached(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = Linear48()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.detach())


class Rounded(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = Linear48()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(torch.round(x * 8) / 8)


def test_check_warns_for_stochastic_model_in_eval() -> None:
    with pytest.warns(LabelflipWarning, match="stochastic"):
        check_model(MultiLabelModel(StochasticInEval()), small_inputs())


@pytest.mark.parametrize("net_cls", [Detached, Rounded], ids=["detach", "round"])
def test_check_warns_for_zero_input_gradient(net_cls: type[nn.Module]) -> None:
    with pytest.warns(LabelflipWarning, match="gradient"):
        check_model(MultiLabelModel(net_cls()), small_inputs())


class NoGradForward(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = Linear48()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.lin(x)


def test_check_handles_output_without_grad() -> None:
    wrapped = MultiLabelModel(NoGradForward())
    error: LabelflipError | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            check_model(wrapped, small_inputs())
        except LabelflipError as exc:  # refusing with a clear message is an acceptable fix too
            error = exc
    if error is not None:
        assert "grad" in str(error)
    else:
        assert any(issubclass(w.category, LabelflipWarning) and "gradient" in str(w.message) for w in caught)


def test_check_runs_once_per_wrapper() -> None:
    wrapped = MultiLabelModel(StochasticInEval())
    xs = small_inputs()
    with pytest.warns(LabelflipWarning):
        ensure_checked(wrapped, xs, owner="test")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ensure_checked(wrapped, xs, owner="test")  # no second warning


# ---------------------------------------------------------------------------------------------- misc


def test_as_model_passes_a_wrapper_through(tiny_cnn: TinyCNN) -> None:
    wrapped = MultiLabelModel(tiny_cnn)
    assert as_model(wrapped) is wrapped
    other = as_model(tiny_cnn, threshold=0.3)
    assert isinstance(other, MultiLabelModel)
    assert other.module is tiny_cnn
    assert float(other.threshold) == pytest.approx(0.3)
    with pytest.raises(LabelflipError, match="already wrapped"):
        as_model(wrapped, threshold=0.3)


def test_a_loaded_model_from_the_registry_is_taken_as_its_network(tiny_cnn: TinyCNN) -> None:
    """``MIFGSM(create_model("asl-cnn"), ...)`` works: the LoadedModel (network + provenance) is unwrapped."""
    from labelflip.models.registry import LoadedModel

    loaded = LoadedModel(module=tiny_cnn, name="tiny", fingerprint="f")
    assert as_model(loaded).module is tiny_cnn
    assert MIFGSM(loaded).model.module is tiny_cnn


def test_device_property() -> None:
    assert MultiLabelModel(TinyCNN()).device == torch.device("cpu")
    assert MultiLabelModel(TinyCNN().to("meta")).device.type == "meta"

    class BufferOnly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("scale", torch.ones(1, device="meta"))

    assert MultiLabelModel(BufferOnly()).device.type == "meta"
    assert MultiLabelModel(nn.Identity()).device == torch.device("cpu")
