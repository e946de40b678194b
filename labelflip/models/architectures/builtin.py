"""The two built-in model families, small enough to train and attack on a laptop CPU.

- :class:`ASLConvNet` mirrors the paper's ASL models (a CNN + global pooling + linear head trained with the
  asymmetric loss).
- :class:`QueryLabelNet` mirrors Query2Label: a CNN backbone whose spatial features are cross-attended by K
  learned label queries in a transformer decoder, followed by a per-label (group-FC) linear head.

Both take raw images ``(N, 3, H, W)`` in ``[0, 1]`` (no normalisation inside; a wrapper may add it) and
return **logits** ``(N, K)``. Both are deterministic in ``eval()`` mode.
"""

from __future__ import annotations

import torch
from torch import nn

from labelflip._validation import check_float, check_int, fail
from labelflip.models.architectures.registry import ARCHITECTURES

__all__ = ["ASLConvNet", "QueryLabelNet"]


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _backbone(in_channels: int, width: int) -> nn.Sequential:
    """Conv-BN-ReLU blocks with two 2x poolings: ``(N, C, H, W) -> (N, 4*width, H/4, W/4)``."""
    return nn.Sequential(
        *_conv_bn(in_channels, width),
        nn.MaxPool2d(2),
        *_conv_bn(width, 2 * width),
        *_conv_bn(2 * width, 2 * width),
        nn.MaxPool2d(2),
        *_conv_bn(2 * width, 4 * width),
    )


@ARCHITECTURES.register("asl_convnet", input_size=None)
class ASLConvNet(nn.Module):
    """A small ASL-style CNN: conv-BN-ReLU blocks, global average + max pooling, linear head.

    Args:
        num_labels: K, the number of outputs.
        width: channels of the first block (later blocks use 2x and 4x).
        in_channels: image channels.

    ``forward(x)``: ``x`` float ``(N, in_channels, H, W)`` in ``[0, 1]`` -> logits ``(N, K)``.
    """

    def __init__(self, num_labels: int, width: int = 24, in_channels: int = 3) -> None:
        super().__init__()
        owner = "ASLConvNet"
        check_int(owner, "num_labels", num_labels, low=1, fix="pass the number of labels K.")
        check_int(owner, "width", width, low=1, fix="e.g. width=24.")
        check_int(owner, "in_channels", in_channels, low=1, fix="3 for RGB images.")
        self.num_labels = num_labels
        self.features = _backbone(in_channels, width)
        self.head = nn.Linear(2 * 4 * width, num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
        return self.head(pooled)


@ARCHITECTURES.register("query_label_net", input_size=None)
class QueryLabelNet(nn.Module):
    """A small Query2Label-style model.

    A CNN backbone gives a ``(d, H/4, W/4)`` feature map, flattened to ``H*W/16`` tokens plus a learned
    positional embedding; K learned label queries cross-attend to the tokens in an
    :class:`torch.nn.TransformerDecoder` (dropout ``dropout``, so ``eval()`` matters), and a group-FC head
    (one linear map per label query) gives one logit per label.

    Args:
        num_labels: K.
        width: channels of the first backbone block; the token dimension is ``d = 4 * width``.
        num_layers: decoder layers.
        num_heads: attention heads (must divide ``4 * width``).
        dim_feedforward: decoder MLP width.
        dropout: dropout inside the decoder.
        image_size: input side, sizes the positional embedding (``(image_size // 4) ** 2`` tokens).
        in_channels: image channels.

    ``forward(x)``: ``x`` float ``(N, in_channels, image_size, image_size)`` in ``[0, 1]`` -> logits ``(N, K)``.
    """

    def __init__(
        self,
        num_labels: int,
        width: int = 16,
        num_layers: int = 1,
        num_heads: int = 4,
        dim_feedforward: int = 128,
        dropout: float = 0.1,
        image_size: int = 32,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        owner = "QueryLabelNet"
        check_int(owner, "num_labels", num_labels, low=1, fix="pass the number of labels K.")
        check_int(owner, "width", width, low=1, fix="e.g. width=16.")
        check_int(owner, "num_layers", num_layers, low=1, fix="1 or 2 decoder layers.")
        check_int(owner, "num_heads", num_heads, low=1, fix="e.g. num_heads=4.")
        check_int(owner, "dim_feedforward", dim_feedforward, low=1, fix="e.g. dim_feedforward=128.")
        check_float(owner, "dropout", dropout, low=0.0, high=1.0, high_inclusive=False, fix="e.g. 0.1.")
        check_int(owner, "image_size", image_size, low=4, fix="the input side in pixels, e.g. 32.")
        check_int(owner, "in_channels", in_channels, low=1, fix="3 for RGB images.")
        d = 4 * width
        if d % num_heads:
            raise fail(owner, "num_heads", f"a divisor of the token dimension 4*width = {d}", num_heads)
        self.num_labels = num_labels
        self.image_size = image_size
        self.backbone = _backbone(in_channels, width)
        n_tokens = (image_size // 4) ** 2
        self.pos_embed = nn.Parameter(torch.zeros(1, n_tokens, d))
        self.query_embed = nn.Parameter(torch.zeros(num_labels, d))
        layer = nn.TransformerDecoderLayer(
            d_model=d,
            nhead=num_heads,
            dim_feedforward=dim_feedforward,
            dropout=dropout,
            batch_first=True,
            norm_first=False,
        )
        self.decoder = nn.TransformerDecoder(layer, num_layers=num_layers)
        self.fc_weight = nn.Parameter(torch.zeros(num_labels, d))
        self.fc_bias = nn.Parameter(torch.zeros(num_labels))
        self.reset_extra_parameters()

    def reset_extra_parameters(self) -> None:
        """Initialise the embeddings and the group-FC head (uses the global RNG, like ``nn`` layers do)."""
        nn.init.normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.query_embed, std=1.0)
        nn.init.normal_(self.fc_weight, std=self.fc_weight.shape[1] ** -0.5)
        nn.init.zeros_(self.fc_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x)  # (N, d, h, w)
        tokens = f.flatten(2).transpose(1, 2)  # (N, h*w, d)
        if tokens.shape[1] != self.pos_embed.shape[1]:
            raise fail(
                "QueryLabelNet",
                "x",
                f"images of side {self.image_size}",
                x,
                f"build the model with image_size={x.shape[-1]} or resize the inputs.",
            )
        memory = tokens + self.pos_embed
        queries = self.query_embed.unsqueeze(0).expand(x.shape[0], -1, -1)
        out = self.decoder(queries, memory)  # (N, K, d)
        return (out * self.fc_weight).sum(dim=-1) + self.fc_bias
