"""Built-in model zoo: architectures, ASL loss, seeded training, safetensors checkpoints, the cached registry."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import labelflip.zoo as zoo
from labelflip._validation import LabelflipError
from labelflip.data import SyntheticConfig, make_synthetic
from labelflip.losses.training import AsymmetricLoss, asymmetric_loss
from labelflip.models.architectures import ASLConvNet, QueryLabelNet, build_architecture
from labelflip.models.checkpoints import fingerprint, load_checkpoint, read_metadata, save_checkpoint
from labelflip.zoo.training import TrainConfig, evaluate_model, train_model

TINY_DATA = SyntheticConfig(seed=1, n_train=64, n_val=0, n_test=32, num_labels=6)
TINY_TRAIN = TrainConfig(epochs=1, batch_size=32)


@pytest.fixture(scope="module")
def tiny():
    return make_synthetic(TINY_DATA)


@pytest.fixture
def tiny_zoo(monkeypatch: pytest.MonkeyPatch):
    """Shrink the registered models' training so load_builtin runs in a second."""
    specs = {
        name: zoo.ModelSpec(spec.name, spec.arch, spec.arch_kwargs, TINY_TRAIN, spec.description)
        for name, spec in zoo._REGISTRY.items()
    }
    monkeypatch.setattr(zoo, "_REGISTRY", specs)
    return specs


@pytest.mark.parametrize("cls", [ASLConvNet, QueryLabelNet])
def test_architectures_output_logits(cls) -> None:
    torch.manual_seed(0)
    model = cls(7)
    x = torch.rand(5, 3, 32, 32)
    out = model(x)
    assert out.shape == (5, 7) and out.dtype == torch.float32
    out.sum().backward()  # differentiable end to end


def test_query_label_net_eval_is_deterministic_and_train_mode_is_not() -> None:
    torch.manual_seed(0)
    model = QueryLabelNet(5, dropout=0.1)
    x = torch.rand(4, 3, 32, 32)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))  # dropout is really there


def test_build_architecture_unknown_name() -> None:
    with pytest.raises(LabelflipError, match="Did you mean 'asl_convnet'"):
        build_architecture("asl_conv", 3)
    with pytest.raises(LabelflipError, match="'num_heads'"):
        QueryLabelNet(3, width=16, num_heads=5)


def test_asl_loss_matches_formula_and_is_stable() -> None:
    z = torch.tensor([[2.0, -1.0, 0.5]])
    y = torch.tensor([[1.0, 0.0, 0.0]])
    p = torch.sigmoid(z)
    pm = (p - 0.05).clamp(min=0)
    want = -(torch.log(p[0, 0]) + pm[0, 1] ** 4 * torch.log(1 - pm[0, 1]) + pm[0, 2] ** 4 * torch.log(1 - pm[0, 2]))
    assert asymmetric_loss(z, y).item() == pytest.approx(want.item(), rel=1e-5)
    # simplified ASL (clip=0, gammas 0) is plain BCE
    bce = torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="sum")
    assert AsymmetricLoss(gamma_neg=0, clip=0)(z, y).item() == pytest.approx(bce.item(), rel=1e-6)
    # easy negatives (p <= clip) are nullified
    assert asymmetric_loss(torch.tensor([[-5.0]]), torch.tensor([[0.0]])).item() == 0.0
    huge = torch.tensor([[1e4, -1e4]], requires_grad=True)
    for clip in (0.0, 0.05):
        loss = asymmetric_loss(huge, torch.tensor([[0.0, 1.0]]), clip=clip)
        (grad,) = torch.autograd.grad(loss, huge)
        assert math.isfinite(loss.item()) and torch.isfinite(grad).all()
    with pytest.raises(LabelflipError, match="'reduction'"):
        asymmetric_loss(z, y, reduction="avg")


def test_train_is_seeded_and_leaves_global_rng_alone(tiny) -> None:
    state = torch.get_rng_state()
    a = train_model("query_label_net", tiny, TINY_TRAIN)
    assert torch.equal(state, torch.get_rng_state())
    b = train_model("query_label_net", tiny, TINY_TRAIN)
    assert not a.training
    x = tiny.test.x[:8]
    assert torch.equal(a(x), b(x))
    c = train_model("query_label_net", tiny, TrainConfig(epochs=1, batch_size=32, seed=1))
    assert not torch.equal(a(x), c(x))


def test_evaluate_model_restores_mode_and_reports_metrics(tiny) -> None:
    torch.manual_seed(0)
    model = ASLConvNet(6)
    model.train()
    m = evaluate_model(model, tiny.test)
    assert model.training
    assert set(m) == {"map", "micro_f1", "macro_f1"}
    assert all(0.0 <= v <= 1.0 for v in m.values())


def test_checkpoint_round_trip_is_exact(tiny, tmp_path: Path) -> None:
    kwargs = {"width": 8, "dim_feedforward": 32}
    model = train_model("query_label_net", tiny, TINY_TRAIN, arch_kwargs=kwargs)
    path = save_checkpoint(
        tmp_path / "m.safetensors",
        model,
        arch="query_label_net",
        num_labels=6,
        arch_kwargs=kwargs,
        metadata={"fingerprint": "abc", "metrics": {"test_map": 0.5}},
    )
    state = torch.get_rng_state()
    loaded, meta = load_checkpoint(path)
    assert torch.equal(state, torch.get_rng_state())
    assert meta["fingerprint"] == "abc" and meta["metrics"] == {"test_map": 0.5}
    assert meta["arch_kwargs"] == kwargs and not loaded.training
    x = tiny.test.x
    assert torch.equal(model(x), loaded(x))


def test_load_refuses_foreign_or_corrupt_files(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(LabelflipError, match="'path'"):
        load_checkpoint(foreign)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(LabelflipError, match="Fix: delete the file"):
        read_metadata(junk)


def test_fingerprint_changes_with_any_config() -> None:
    base = fingerprint(TINY_DATA, TINY_TRAIN, "asl_convnet", {"width": 8})
    assert len(base) == 16 and int(base, 16) >= 0
    assert base == fingerprint(TINY_DATA, TINY_TRAIN, "asl_convnet", {"width": 8})
    others = {
        fingerprint(
            SyntheticConfig(seed=2, n_train=64, n_val=0, n_test=32, num_labels=6),
            TINY_TRAIN,
            "asl_convnet",
            {"width": 8},
        ),
        fingerprint(TINY_DATA, TrainConfig(epochs=2, batch_size=32), "asl_convnet", {"width": 8}),
        fingerprint(TINY_DATA, TINY_TRAIN, "query_label_net", {"width": 8}),
        fingerprint(TINY_DATA, TINY_TRAIN, "asl_convnet", {"width": 9}),
    }
    assert base not in others and len(others) == 4


def test_load_builtin_trains_once_then_hits_cache(tiny, tiny_zoo, tmp_path: Path) -> None:
    calls: list[dict] = []
    first = zoo.load_builtin("asl-cnn", cache_dir=tmp_path, data=tiny, progress=calls.append)
    assert len(calls) == 1 and calls[0]["epoch"] == 1
    assert first.path is not None and first.path.name == f"asl-cnn-{first.fingerprint}.safetensors"
    assert set(first.metrics) == {"test_map", "test_micro_f1", "test_macro_f1", "train_seconds"}
    assert not first.module.training and first.data_config == TINY_DATA
    mtime = first.path.stat().st_mtime_ns

    second = zoo.load_builtin("asl-cnn", cache_dir=tmp_path, data=tiny, progress=calls.append)
    assert len(calls) == 1, "a cache hit must not retrain"
    assert first.path.stat().st_mtime_ns == mtime
    assert second.fingerprint == first.fingerprint and second.metrics == first.metrics
    x = tiny.test.x
    assert torch.equal(first.module(x), second.module(x))

    zoo.load_builtin("asl-cnn", cache_dir=tmp_path, data=tiny, progress=calls.append, retrain=True)
    assert len(calls) == 2

    other = make_synthetic(SyntheticConfig(seed=2, n_train=64, n_val=0, n_test=32, num_labels=6))
    third = zoo.load_builtin("asl-cnn", cache_dir=tmp_path, data=other, progress=calls.append)
    assert len(calls) == 3 and third.fingerprint != first.fingerprint


def test_load_builtin_uses_env_cache_dir_and_recovers_from_corrupt_entry(
    tiny, tiny_zoo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABELFLIP_CACHE", str(tmp_path / "env"))
    assert zoo.default_cache_dir() == tmp_path / "env"
    model = zoo.load_builtin("q2l-cnn", data=tiny)
    assert model.path is not None and model.path.parent == tmp_path / "env"
    model.path.write_bytes(b"garbage")
    calls: list[dict] = []
    again = zoo.load_builtin("q2l-cnn", data=tiny, progress=calls.append)
    assert len(calls) == 1 and read_metadata(again.path)["fingerprint"] == again.fingerprint
    assert json.loads(json.dumps(read_metadata(again.path)["data_config"])) == TINY_DATA.to_dict()


def test_registry_listing_and_unknown_names() -> None:
    assert zoo.list_models() == ["asl-cnn", "q2l-cnn"]
    assert zoo.list_models("q2l*") == ["q2l-cnn"]
    with pytest.raises(LabelflipError, match="Did you mean 'asl-cnn'"):
        zoo.load_builtin("asl_cnn")
    with pytest.raises(LabelflipError, match="'arch_name'"):
        train_model("resnet", make_synthetic(SyntheticConfig(n_train=4, n_val=0, n_test=0)))


def test_train_config_validation() -> None:
    with pytest.raises(LabelflipError, match="'epochs'"):
        TrainConfig(epochs=0)
    with pytest.raises(LabelflipError, match=r"'schedule'.*Did you mean 'cosine'"):
        TrainConfig(schedule="cosin")
    assert TrainConfig(**TINY_TRAIN.to_dict()) == TINY_TRAIN


@pytest.mark.parametrize("arch", ["asl_convnet", "query_label_net"])
def test_trained_weights_do_not_depend_on_the_machines_thread_count(tiny, arch: str) -> None:
    """Training runs on TRAIN_THREADS threads whatever torch's setting (restored afterwards): a built-in model is the
    same bits on a 1-core and a many-core machine. Without the pin, 1 and 2 threads give other weights here."""
    before = torch.get_num_threads()
    weights = {}
    for n in (1, 2):
        torch.set_num_threads(n)
        try:
            net = train_model(arch, tiny, TrainConfig(epochs=2, batch_size=32))
            assert torch.get_num_threads() == n
        finally:
            torch.set_num_threads(before)
        weights[n] = [p.detach().clone() for p in net.state_dict().values()]
    assert all(torch.equal(a, b) for a, b in zip(weights[1], weights[2], strict=True))
