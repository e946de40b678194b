"""The paper's architectures: state_dict keys/shapes pinned by a fixture and cross-checked against the published
layouts, exact sub-blocks (space-to-depth, anti-aliasing, in-place ABN, sine embedding, group-wise head), and a
forward pass plus an MI-FGSM attack at 64x64 on CPU.

Regenerate the fixture after a deliberate layout change: ``python -m tests.models.test_architectures``.
Full-size Query2Label forward/attack (slow on CPU): ``LABELFLIP_FULL_MODELS=1 pytest tests/models``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labelflip.attacks import MIFGSM
from labelflip.models import MultiLabelModel, create_model
from labelflip.models.architectures import build_architecture
from labelflip.models.architectures.query2label import GroupWiseLinear, Query2Label, sine_position_embedding
from labelflip.models.architectures.resnet import IMAGENET_MEAN, IMAGENET_STD
from labelflip.models.architectures.tresnet import ActivatedBatchNorm, AntiAliasDownsample, SpaceToDepth
from labelflip.models.loading import load_into, load_state
from labelflip.models.pretrained import preprocessing

FIXTURE = Path(__file__).parent / "fixtures" / "architecture_keys.txt"
REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "checkpoint-keys"
#: (architecture, K, kwargs) pinned by the fixture.
PINNED = [("resnet101", 80, {}), ("query2label_r101", 80, {}), ("tresnet_l", 80, {}), ("tresnet_xl", 20, {})]
#: published layouts (reference TSV) -> (architecture, K).
PUBLISHED = {
    "q2l_r101_448_coco80.tsv": ("query2label_r101", 80),
    "tresnet_l_coco80.tsv": ("tresnet_l", 80),
    "tresnet_xl_voc20.tsv": ("tresnet_xl", 20),
}


def _meta_keys(arch: str, k: int, **kwargs: object) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        net = build_architecture(arch, k, **kwargs)
    return {name: tuple(t.shape) for name, t in net.state_dict().items()}


def _read_fixture() -> dict[str, dict[str, tuple[int, ...]]]:
    sections: dict[str, dict[str, tuple[int, ...]]] = {}
    current: dict[str, tuple[int, ...]] = {}
    for line in FIXTURE.read_text().splitlines():
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        elif line.strip():
            name, shape = line.split(" ")
            current[name] = tuple(int(s) for s in shape.split(",") if s)
    return sections


@pytest.mark.parametrize(("arch", "k", "kwargs"), PINNED, ids=[p[0] for p in PINNED])
def test_keys_match_pinned_fixture(arch: str, k: int, kwargs: dict) -> None:
    pinned = _read_fixture()[f"{arch} K={k}"]
    assert list(_meta_keys(arch, k, **kwargs).items()) == list(pinned.items())


@pytest.mark.parametrize("tsv", sorted(PUBLISHED))
def test_keys_match_published_layout(tsv: str) -> None:
    if not (REFERENCE / tsv).is_file():
        pytest.skip(f"reference layout {REFERENCE / tsv} not available")
    ref = {}
    for line in (REFERENCE / tsv).read_text().splitlines():
        name, shape = line.split("\t")
        ref[name] = tuple(int(s) for s in shape.strip("[]").split(",") if s.strip())
    arch, k = PUBLISHED[tsv]
    assert _meta_keys(arch, k) == ref


def test_sizes_and_parameter_counts() -> None:
    def count(arch: str, k: int) -> int:
        return sum(math.prod(s) for n, s in _meta_keys(arch, k).items() if "running" not in n and "batches" not in n)

    assert count("tresnet_l", 1000) == 55_989_256  # 55.99 M in the TResNet paper
    assert count("tresnet_xl", 1000) == 78_436_244  # 78.44 M
    assert count("resnet101", 1000) == 44_549_160  # torchvision resnet101
    assert count("resnet50", 1000) == 25_557_032  # torchvision resnet50
    assert _meta_keys("query2label_r101", 80, image_size=576)["backbone.1.pe"] == (1, 2048, 18, 18)
    assert preprocessing("q2l-r101-576")["input_size"] == (3, 576, 576)
    assert preprocessing("tresnet_l") == {"input_size": (3, 448, 448), "mean": None, "std": None}
    assert preprocessing("q2l-r101-448")["mean"] == IMAGENET_MEAN
    assert preprocessing("q2l-r101-448", "none")["std"] is None  # the SLAM authors' parity switch


def test_tresnet_blocks_are_exact() -> None:
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    s2d = SpaceToDepth()(x)
    assert s2d.shape == (2, 48, 2, 2)
    i, j, c, h, w = 1, 3, 2, 1, 0  # channel (i*4 + j)*C + c holds x[c, 4h + i, 4w + j]
    assert s2d[1, (i * 4 + j) * 3 + c, h, w] == x[1, c, 4 * h + i, 4 * w + j]
    y = torch.rand(1, 2, 6, 6, generator=torch.Generator().manual_seed(0))
    blur = AntiAliasDownsample()(y)
    padded = F.pad(y, (1, 1, 1, 1), mode="reflect")
    k = torch.tensor([1.0, 2.0, 1.0])
    expected = (padded[0, 1, 2:5, 2:5] * (k[:, None] * k[None, :]) / 16).sum()
    assert blur.shape == (1, 2, 3, 3) and torch.isclose(blur[0, 1, 1, 1], expected)
    abn = ActivatedBatchNorm(3, "leaky_relu", 1e-3).eval()
    with torch.no_grad():
        abn.weight.copy_(torch.tensor([-2.0, 0.0, 0.5]))
        abn.bias.copy_(torch.tensor([0.1, -1.0, 0.0]))
        abn.running_mean.copy_(torch.tensor([0.2, 0.0, -1.0]))
        abn.running_var.copy_(torch.tensor([4.0, 1.0, 0.25]))
    z = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    scale = abn.weight.abs() + 1e-5  # inplace_abn's invertible scale
    ref = (z - abn.running_mean.view(1, 3, 1, 1)) / (abn.running_var.view(1, 3, 1, 1) + 1e-5).sqrt()
    ref = F.leaky_relu(ref * scale.view(1, 3, 1, 1) + abn.bias.view(1, 3, 1, 1), 1e-3)
    assert torch.allclose(abn(z), ref, atol=1e-6)


def test_query2label_blocks_are_exact() -> None:
    pe = sine_position_embedding(2048, 14, 14)
    step = 2 * math.pi / (14 + 1e-6)
    assert pe.shape == (1, 2048, 14, 14)
    assert math.isclose(pe[0, 0, 0, 5].item(), math.sin(step), rel_tol=1e-5)  # row channel, row 1
    assert math.isclose(pe[0, 1, 2, 0].item(), math.cos(3 * step), rel_tol=1e-5)
    assert math.isclose(pe[0, 1024, 4, 2].item(), math.sin(3 * step), rel_tol=1e-5)  # column channel
    freq = 10000 ** (2 * 1 / 1024)
    assert math.isclose(pe[0, 2, 6, 0].item(), math.sin(7 * step / freq), rel_tol=1e-5)
    head = GroupWiseLinear(3, 4)
    h = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(head(h), torch.einsum("nkd,kd->nk", h, head.W[0]) + head.b, atol=1e-6)


def test_query2label_attention_gradients_stay_finite_for_huge_logits() -> None:
    """The official (explicit softmax) attention path; torch's fused kernel returns NaN input gradients here,
    which a randomly initialised R101 backbone at 448x448 triggers."""
    from labelflip.models.architectures.query2label import _DecoderLayer, _EncoderLayer

    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        enc, dec = _EncoderLayer(512, 4, 64, 0.1).eval(), _DecoderLayer(512, 4, 64, 0.1).eval()
    src = (torch.randn(196, 1, 512, generator=gen) * 1e6).requires_grad_(True)
    pos, queries = torch.randn(196, 1, 512, generator=gen), torch.randn(3, 1, 512, generator=gen)
    out = dec(torch.zeros_like(queries), enc(src, pos), pos, queries)
    (grad,) = torch.autograd.grad(out.sum(), src)
    assert bool(torch.isfinite(out).all()) and bool(torch.isfinite(grad).all())


def _built(factory, seed: int = 0) -> nn.Module:  # type: ignore[no-untyped-def]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return factory().eval()


@pytest.fixture(scope="module")
def resnet101() -> nn.Module:
    return _built(lambda: build_architecture("resnet101", 5))


@pytest.fixture(scope="module")
def tresnet_l() -> nn.Module:
    net = _built(lambda: build_architecture("tresnet_l", 5))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():  # the upstream init zeroes residual branches and shrinks the head: wake them up
        for m in net.modules():
            if isinstance(m, ActivatedBatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
        net.head.fc.weight.mul_(100)
    return net


@pytest.fixture(scope="module")
def small_q2l() -> nn.Module:
    """The official Query2Label forward (ResNet trunk with frozen BN, encoder, query decoder, group-wise head) at a
    small transformer width (the ``--keep_input_proj`` variant), so it builds in a second on CPU."""
    return _built(lambda: Query2Label(5, image_size=64, depth=50, d_model=64, heads=4, ffn=128, input_proj=True))


def _attack_checks(net: nn.Module, mean: tuple | None, std: tuple | None, n: int = 2) -> None:
    model = MultiLabelModel(net, num_labels=5, mean=mean, std=std, output_kind="logits")
    x = torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (n, 5) and bool(torch.isfinite(logits).all())
    eps = 2 / 255
    result = MIFGSM(model, loss="bce", alpha=eps, return_adv=True)(x, [eps])  # one step (CPU time)
    assert result.linf.shape == (1, n) and float(result.linf.max()) <= eps + 1e-6
    assert float(result.linf.max()) > 0  # the gradient reached the input
    adv = result.x_adv[0]
    assert adv.shape == x.shape and float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0


def test_resnet101_forward_and_attack(resnet101: nn.Module) -> None:
    _attack_checks(resnet101, IMAGENET_MEAN, IMAGENET_STD, n=1)


def test_tresnet_l_forward_and_attack(tresnet_l: nn.Module) -> None:
    _attack_checks(tresnet_l, None, None, n=1)


def test_query2label_forward_and_attack(small_q2l: nn.Module) -> None:
    _attack_checks(small_q2l, IMAGENET_MEAN, IMAGENET_STD)


def test_state_dict_round_trip_safetensors(tmp_path: Path, small_q2l: nn.Module) -> None:
    """Random weights -> safetensors -> a twin built on the meta device (no initialisation): same outputs."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in small_q2l.state_dict().items()}, str(tmp_path / "q2l.safetensors"))
    state, meta = load_state(tmp_path / "q2l.safetensors")
    with torch.device("meta"):
        twin = Query2Label(5, image_size=64, depth=50, d_model=64, heads=4, ffn=128, input_proj=True)
    report = load_into(twin, state, assign=True)
    assert report.loaded == len(state) and meta["format"] == "safetensors"
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(twin.eval()(x), small_q2l(x))


def test_official_asl_container_round_trip(tmp_path: Path, tresnet_l: nn.Module) -> None:
    """TResNet-L weights saved as ASL releases them ({'model', 'num_classes', 'idx_to_class'}, DataParallel prefix)
    load through the registered model with names, [0, 1] preprocessing and identical logits."""
    names = {i: f"class {i}" for i in range(5)}
    with torch.no_grad():  # stored in float16 (half the file; exercises the cast to the model's dtype)
        for t in tresnet_l.state_dict().values():
            t.copy_(t.half().float())
    sd = {f"module.{k}": v.half() for k, v in tresnet_l.state_dict().items()}
    torch.save({"model": sd, "num_classes": 5, "idx_to_class": names}, tmp_path / "asl.pth")
    loaded = create_model("tresnet-l-448", checkpoint=str(tmp_path / "asl.pth"))
    assert loaded.label_names == list(names.values()) and loaded.fingerprint.startswith("tresnet-l-448:")
    assert loaded.module.num_labels == 5 and not loaded.module.training
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(loaded.module(x), tresnet_l(x))  # no normalisation for ASL


@pytest.mark.skipif(not os.environ.get("LABELFLIP_FULL_MODELS"), reason="set LABELFLIP_FULL_MODELS=1 (slow on CPU)")
def test_full_size_query2label_forward_and_attack() -> None:
    net = _built(lambda: build_architecture("query2label_r101", 5))
    _attack_checks(net, IMAGENET_MEAN, IMAGENET_STD, n=1)


def _write_fixture() -> None:
    lines = []
    for arch, k, kwargs in PINNED:
        lines.append(f"[{arch} K={k}]")
        lines += [f"{name} {','.join(map(str, shape))}" for name, shape in _meta_keys(arch, k, **kwargs).items()]
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    _write_fixture()
