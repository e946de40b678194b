"""ResNet-50/101 in plain PyTorch with the torchvision ``state_dict`` layout, and the frozen-BN trunk Query2Label uses.

Keys follow ``torchvision.models.resnet``: ``conv1``, ``bn1``, ``layer{1..4}.{i}.{conv,bn}{1,2,3}``,
``layer{1..4}.0.downsample.{0,1}`` and ``fc``, so a fine-tuned torchvision checkpoint loads as is. The bottleneck
is "ResNet v1.5" (stride on the 3x3 convolution), as in torchvision.

Inputs: ``(N, 3, H, W)`` *normalised* images (ImageNet mean/std; the registry ``meta`` records it and
:class:`labelflip.models.MultiLabelModel` applies it, so budgets stay in ``[0, 1]`` pixel units). Any ``H, W >= 32``
works (adaptive average pooling); the registered resolution is 448.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from labelflip._validation import check_choice, check_int, fail
from labelflip.models.architectures.registry import ARCHITECTURES

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Bottleneck", "FrozenBatchNorm2d", "ResNet", "ResNetTrunk"]

#: ImageNet channel statistics (torchvision / Query2Label ``transforms.Normalize``).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Bottleneck blocks per stage.
DEPTHS: dict[int, tuple[int, int, int, int]] = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters, all four stored as *buffers* (DETR / Query2Label).

    ``y = (x - running_mean) / sqrt(running_var + 1e-5) * weight + bias`` per channel, in train and eval mode.
    A ``num_batches_tracked`` entry in a loaded state dict is ignored (checkpoints saved from a plain BatchNorm).
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errs):  # type: ignore[no-untyped-def]
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errs)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


NormLayer = Callable[[int], nn.Module]


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 convolutions, each followed by a norm layer, plus the (projected) identity."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None, norm: NormLayer) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = norm(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = norm(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetTrunk(nn.Module):
    """The convolutional part of a torchvision ResNet (``conv1`` ... ``layer4``): ``(N, 3, H, W) -> (N, 2048, H/32,
    W/32)``. ``norm="batch"`` uses :class:`torch.nn.BatchNorm2d`, ``"frozen"`` :class:`FrozenBatchNorm2d`."""

    def __init__(self, depth: int = 101, norm: str = "batch") -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise fail("ResNetTrunk", "depth", f"one of {sorted(DEPTHS)}", depth, "e.g. depth=101.")
        check_choice("ResNetTrunk", "norm", norm, ("batch", "frozen"))
        layer: NormLayer = nn.BatchNorm2d if norm == "batch" else FrozenBatchNorm2d
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = layer(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for i, (blocks, planes) in enumerate(zip(DEPTHS[depth], (64, 128, 256, 512), strict=True)):
            stride = 1 if i == 0 else 2
            down = nn.Sequential(
                nn.Conv2d(inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
                layer(planes * Bottleneck.expansion),
            )
            stage = [Bottleneck(inplanes, planes, stride, down, layer)]
            inplanes = planes * Bottleneck.expansion
            stage += [Bottleneck(inplanes, planes, 1, None, layer) for _ in range(1, blocks)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
        self.num_channels = inplanes
        for m in self.modules():  # skipped on the meta device (checkpoint loading), where normal_ is slow to trace
            if isinstance(m, nn.Conv2d) and not m.weight.is_meta:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class ResNet(ResNetTrunk):
    """A torchvision-layout ResNet with a K-output linear head: logits ``(N, K)``.

    Args:
        num_labels: K (the ``fc`` layer's outputs).
        depth: 50 or 101 (152 also works).
        norm: ``"batch"`` (trainable BatchNorm, torchvision) or ``"frozen"``.

    ``forward(x)``: ``x`` ``(N, 3, H, W)``, normalised with ImageNet mean/std -> logits ``(N, K)``.
    """

    def __init__(self, num_labels: int, depth: int = 101, norm: str = "batch") -> None:
        check_int("ResNet", "num_labels", num_labels, low=1, fix="pass the number of labels K.")
        super().__init__(depth, norm)
        self.num_labels = num_labels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.num_channels, num_labels)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.avgpool(super().forward(x)).flatten(1))


_META = {
    "input_size": (3, 448, 448),
    "mean": IMAGENET_MEAN,
    "std": IMAGENET_STD,
    "layout": "torchvision.models.resnet",
}


@ARCHITECTURES.register("resnet50", description="ResNet-50 (torchvision keys), K-label linear head", **_META)
def resnet50(num_labels: int, norm: str = "batch") -> ResNet:
    """ResNet-50 with the torchvision key layout and a K-output ``fc``."""
    return ResNet(num_labels, 50, norm)


@ARCHITECTURES.register("resnet101", description="ResNet-101 (torchvision keys), K-label linear head", **_META)
def resnet101(num_labels: int, norm: str = "batch") -> ResNet:
    """ResNet-101 with the torchvision key layout and a K-output ``fc``."""
    return ResNet(num_labels, 101, norm)
