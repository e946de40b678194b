"""TResNet-M/L/XL (Ridnik et al., 2021) in the ``state_dict`` layout of the official ``Alibaba-MIIL/ASL`` checkpoints,
runnable on CPU.

Structure (read from the public model definition, re-implemented here):

* ``body.SpaceToDepth``: 4x4 space-to-depth stem, ``(N, 3, H, W) -> (N, 48, H/4, W/4)`` (no parameters);
* ``body.conv1``: 3x3 conv + in-place activated batch norm (``conv1.0`` conv, ``conv1.1`` ABN, leaky-ReLU 0.01);
* ``body.layer1``/``layer2``: BasicBlocks; ``layer3``/``layer4``: Bottlenecks (expansion 4); SE modules in
  layers 1-3 (``se.fc1``/``se.fc2``, 1x1 convs with bias; reduction ``max(C/4, 64)`` in BasicBlocks and
  ``max(4*planes/8, 64)`` in Bottlenecks, applied after the 3x3 conv);
* stride-2 blocks downsample with an *anti-aliasing* blur (3x3 ``[1,2,1]^T [1,2,1] / 16`` depthwise filter,
  reflect padding, stride 2) after a stride-1 3x3 conv (``conv1.0.*`` / ``conv2.0.*`` keys); their shortcut is
  ``AvgPool2d(2, ceil_mode)`` then a 1x1 conv + ABN (``downsample.1.{0,1}``);
* ``head.fc``: linear layer on the global average of the last feature map.

In-place activated batch norm (``inplace_abn``, CUDA-only upstream) is expressed exactly as its inference
computation: batch norm whose scale is ``|weight| + eps`` (the same transform ASL's ``InplacABN_to_ABN`` applies),
followed by leaky-ReLU (slope ``activation_param``) or identity. Its keys are ``weight``, ``bias``,
``running_mean``, ``running_var`` (a ``num_batches_tracked`` in a checkpoint is ignored).

Preprocessing: ASL feeds ``[0, 1]`` images with no mean/std (``meta["mean"] = meta["std"] = None``).
Inputs must have ``H`` and ``W`` divisible by 32 (448 for the published COCO / NUS-WIDE / VOC models).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labelflip._validation import check_choice, check_float, check_int, fail
from labelflip.models.architectures.registry import ARCHITECTURES

__all__ = ["ActivatedBatchNorm", "AntiAliasDownsample", "SEModule", "SpaceToDepth", "TResNet"]


class ActivatedBatchNorm(nn.Module):
    """In-place ABN at inference: ``act(batch_norm(x; running stats, scale=|weight| + eps, shift=bias))``.

    Args:
        num_features: channels.
        activation: ``"leaky_relu"`` (slope ``activation_param``) or ``"identity"``.
        activation_param: the leaky-ReLU negative slope.
        eps: batch-norm epsilon (also added to ``|weight|``).

    In training mode batch statistics are used and the running ones updated (momentum 0.1), as in inplace_abn.
    """

    def __init__(
        self, num_features: int, activation: str = "leaky_relu", activation_param: float = 0.01, eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.activation = check_choice("ActivatedBatchNorm", "activation", activation, ("leaky_relu", "identity"))
        self.activation_param = check_float("ActivatedBatchNorm", "activation_param", activation_param, low=0.0)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errs):  # type: ignore[no-untyped-def]
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errs)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight.abs() + self.eps
        y = F.batch_norm(x, self.running_mean, self.running_var, scale, self.bias, self.training, 0.1, self.eps)
        if self.activation == "leaky_relu":
            y = F.leaky_relu(y, self.activation_param)
        return y


def _conv_abn(
    cin: int, cout: int, *, kernel: int = 3, activation: str = "leaky_relu", slope: float = 1e-2
) -> nn.Sequential:
    """``Sequential(conv (no bias, 'same' padding), ABN)``: keys ``0.weight``, ``1.{weight,bias,running_*}``."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=1, padding=kernel // 2, bias=False),
        ActivatedBatchNorm(cout, activation, slope),
    )


class SpaceToDepth(nn.Module):
    """``(N, C, H, W) -> (N, 16 C, H/4, W/4)``; channel ``(i * 4 + j) * C + c`` holds ``x[c, 4h + i, 4w + j]``."""

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        if h % 4 or w % 4:
            raise fail(
                "TResNet",
                "x",
                "images whose height and width are multiples of 4 (32 for the published models)",
                tuple(x.shape),
            )
        x = x.view(n, c, h // 4, 4, w // 4, 4).permute(0, 3, 5, 1, 2, 4)
        return x.reshape(n, c * 16, h // 4, w // 4)


class AntiAliasDownsample(nn.Module):
    """Blur-then-subsample: reflect-pad by 1, depthwise 3x3 ``[1,2,1]^T [1,2,1] / 16``, stride 2 (no parameters or
    buffers: the filter is built for the input's dtype and device, so a ``meta``-built model needs no fix-up)."""

    def forward(self, x: Tensor) -> Tensor:
        a = x.new_tensor([0.25, 0.5, 0.25])
        filt = (a[:, None] * a[None, :]).expand(x.shape[1], 1, 3, 3)
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), filt, stride=2, groups=x.shape[1])


class SEModule(nn.Module):
    """Squeeze-and-excitation: ``x * sigmoid(fc2(relu(fc1(mean_hw(x)))))`` with 1x1 convolutions."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))


def _strided(cin: int, cout: int, stride: int) -> nn.Module:
    """3x3 conv-ABN (leaky 1e-3); with stride 2 followed by the anti-aliasing downsample (keys ``0.0``/``0.1``)."""
    conv = _conv_abn(cin, cout, slope=1e-3)
    return conv if stride == 1 else nn.Sequential(conv, AntiAliasDownsample())


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None, use_se: bool) -> None:
        super().__init__()
        self.conv1 = _strided(inplanes, planes, stride)
        self.conv2 = _conv_abn(planes, planes, activation="identity")
        self.downsample = downsample
        self.se = SEModule(planes, max(planes // 4, 64)) if use_se else None

    def forward(self, x: Tensor) -> Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.conv2(self.conv1(x))
        if self.se is not None:
            out = self.se(out)
        return torch.relu(out + residual)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None, use_se: bool) -> None:
        super().__init__()
        self.conv1 = _conv_abn(inplanes, planes, kernel=1, slope=1e-3)
        self.conv2 = _strided(planes, planes, stride)
        self.conv3 = _conv_abn(planes, planes * 4, kernel=1, activation="identity")
        self.downsample = downsample
        self.se = SEModule(planes, max(planes * 4 // 8, 64)) if use_se else None

    def forward(self, x: Tensor) -> Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.conv2(self.conv1(x))
        if self.se is not None:
            out = self.se(out)
        return torch.relu(self.conv3(out) + residual)


class TResNet(nn.Module):
    """TResNet (official ASL layout) with a K-output ``head.fc``.

    Args:
        num_labels: K.
        layers: blocks per stage (``[4, 5, 18, 3]`` for L, ``[4, 5, 24, 3]`` for XL, ``[3, 4, 11, 3]`` for M).
        width_factor: channel multiplier (1.2 for L, 1.3 for XL, 1.0 for M): ``planes = int(64 * width_factor)``.

    ``forward(x)``: ``x`` ``(N, 3, H, W)`` in ``[0, 1]`` (no normalisation), ``H, W`` multiples of 32 -> logits
    ``(N, K)``.
    """

    def __init__(self, num_labels: int, layers: tuple[int, int, int, int], width_factor: float = 1.0) -> None:
        super().__init__()
        check_int("TResNet", "num_labels", num_labels, low=1, fix="pass the number of labels K.")
        if len(layers) != 4 or any(not isinstance(n, int) or n < 1 for n in layers):
            raise fail("TResNet", "layers", "four block counts >= 1", layers, "e.g. (4, 5, 18, 3) for TResNet-L.")
        check_float("TResNet", "width_factor", width_factor, low=0.0, low_inclusive=False)
        self.num_labels = num_labels
        planes = int(64 * width_factor)
        self._inplanes = planes
        stages = [
            ("SpaceToDepth", SpaceToDepth()),
            ("conv1", _conv_abn(3 * 16, planes)),
            ("layer1", self._make_layer(BasicBlock, planes, layers[0], 1, True)),
            ("layer2", self._make_layer(BasicBlock, planes * 2, layers[1], 2, True)),
            ("layer3", self._make_layer(Bottleneck, planes * 4, layers[2], 2, True)),
            ("layer4", self._make_layer(Bottleneck, planes * 8, layers[3], 2, False)),
        ]
        self.body = nn.Sequential()
        for name, module in stages:
            self.body.add_module(name, module)
        self.num_features = planes * 8 * Bottleneck.expansion
        self.head = nn.Sequential()
        self.head.add_module("fc", nn.Linear(self.num_features, num_labels))
        if not self.head.fc.weight.is_meta:  # on the meta device (checkpoint loading) there is nothing to initialise
            self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
        with torch.no_grad():  # residual branches start at zero scale (upstream initialisation)
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    m.conv2[1].weight.zero_()
                elif isinstance(m, Bottleneck):
                    m.conv3[1].weight.zero_()
            self.head.fc.weight.normal_(0.0, 0.01)

    def _make_layer(self, block: type, planes: int, blocks: int, stride: int, use_se: bool) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._inplanes != planes * block.expansion:
            parts: list[nn.Module] = []
            if stride == 2:
                parts.append(nn.AvgPool2d(2, stride=2, ceil_mode=True, count_include_pad=False))
            parts.append(_conv_abn(self._inplanes, planes * block.expansion, kernel=1, activation="identity"))
            downsample = nn.Sequential(*parts)
        stage = [block(self._inplanes, planes, stride, downsample, use_se)]
        self._inplanes = planes * block.expansion
        stage += [block(self._inplanes, planes, 1, None, use_se) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x).mean(dim=(2, 3)))


_META = {"input_size": (3, 448, 448), "mean": None, "std": None, "layout": "Alibaba-MIIL/ASL"}


@ARCHITECTURES.register(
    "tresnet_m", description="TResNet-M (ASL layout, [0, 1] inputs)", **{**_META, "input_size": (3, 224, 224)}
)
def tresnet_m(num_labels: int) -> TResNet:
    """TResNet-M: blocks (3, 4, 11, 3), width 1.0 (ASL's 224x224 COCO model)."""
    return TResNet(num_labels, (3, 4, 11, 3), 1.0)


@ARCHITECTURES.register("tresnet_l", description="TResNet-L (ASL layout, [0, 1] inputs)", **_META)
def tresnet_l(num_labels: int) -> TResNet:
    """TResNet-L: blocks (4, 5, 18, 3), width 1.2 (the paper's ASL model on MS-COCO and NUS-WIDE)."""
    return TResNet(num_labels, (4, 5, 18, 3), 1.2)


@ARCHITECTURES.register("tresnet_xl", description="TResNet-XL (ASL layout, [0, 1] inputs)", **_META)
def tresnet_xl(num_labels: int) -> TResNet:
    """TResNet-XL: blocks (4, 5, 24, 3), width 1.3 (the paper's ASL model on VOC2007)."""
    return TResNet(num_labels, (4, 5, 24, 3), 1.3)
