"""Query2Label (Liu et al., 2021) with a ResNet-101 backbone, in the ``state_dict`` layout of the official
``SlongLiu/query2labels`` checkpoints (``Q2L-R101-448``, ``Q2L-R101-576``).

Structure (read from the public model definition, re-implemented here):

* ``backbone.0.body``: a torchvision ResNet-101 trunk (``conv1`` ... ``layer4``) with :class:`FrozenBatchNorm2d`
  (buffers only, no ``num_batches_tracked``) -> ``(N, 2048, H/32, W/32)``;
* ``backbone.1.pe``: a DETR-style sine position embedding, normalised to ``[0, 2*pi]``, precomputed for the
  trained resolution and stored as a buffer ``(1, 2048, H/32, W/32)``;
* ``input_proj``: identity (the backbone already has ``d_model = 2048`` channels);
* ``transformer.encoder.layers.0``: one post-norm encoder layer (self-attention with the position embedding
  added to queries and keys, ReLU FFN of width 8192, ``norm1``/``norm2``), no final encoder norm;
* ``transformer.decoder.layers.{0,1}``: two post-norm decoder layers *without self-attention* (removed in the
  official model, so no ``self_attn`` / ``norm1``): cross-attention from the label queries (target starts at
  zero, the learned ``query_embed`` is added as the query position) to the encoder memory (keys carry the
  position embedding), then the FFN; ``norm2``/``norm3``; then ``transformer.decoder.norm``;
* ``query_embed``: ``nn.Embedding(K, 2048)``, one learned query per label;
* ``fc``: the group-wise linear head, ``logit_k = <W[0, k], h_k> + b[0, k]`` with ``W (1, K, d)``, ``b (1, K)``.

Attention runs through ``nn.MultiheadAttention`` with its default ``need_weights=True``, as the official code
calls it: the explicit softmax path. (The fused kernel used with ``need_weights=False`` returns NaN input
gradients when attention logits are huge, e.g. behind a randomly initialised backbone.)

Preprocessing: the official training normalises with ImageNet mean/std (unless trained with ``--orid_norm``); the
registry ``meta`` records it and the wrapper applies it. ``meta["parity"]`` records the SLAM authors' choice of
feeding un-normalised ``[0, 1]`` images (a documented switch, not the default).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from labelflip._validation import check_float, check_int, fail
from labelflip.models.architectures.registry import ARCHITECTURES
from labelflip.models.architectures.resnet import IMAGENET_MEAN, IMAGENET_STD, ResNetTrunk

__all__ = ["GroupWiseLinear", "PositionEmbeddingSine", "Query2Label", "sine_position_embedding"]


def sine_position_embedding(d_model: int, height: int, width: int, temperature: float = 10000.0) -> Tensor:
    """DETR's normalised 2-D sine embedding: float32 ``(1, d_model, height, width)``.

    Row and column indices ``1..H`` / ``1..W`` are scaled to ``(0, 2*pi]``; the first ``d_model/2`` channels encode
    the row (interleaved sin/cos over frequencies ``temperature^(2*floor(i/2)/(d_model/2))``), the rest the column.
    """
    feats = d_model // 2
    ones = torch.ones(1, height, width, device="cpu")
    y = ones.cumsum(1)
    x = ones.cumsum(2)
    scale, eps = 2 * math.pi, 1e-6
    y = y / (y[:, -1:, :] + eps) * scale
    x = x / (x[:, :, -1:] + eps) * scale
    dim_t = torch.arange(feats, dtype=torch.float32, device="cpu")
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / feats)
    px = x[..., None] / dim_t
    py = y[..., None] / dim_t
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((py, px), dim=3).permute(0, 3, 1, 2).contiguous()


class PositionEmbeddingSine(nn.Module):
    """Holds the precomputed embedding as the persistent buffer ``pe`` ``(1, d, h, w)`` (official layout).

    ``forward(features)`` returns ``pe`` expanded to the batch; for a feature map of another size (inputs at a
    resolution other than the trained one) the same normalised embedding is computed for that size instead.
    """

    #: ``pe`` is a deterministic function of its shape: a checkpoint without it (older releases) still loads.
    _optional_state_keys = ("pe",)

    def __init__(self, d_model: int, height: int, width: int) -> None:
        super().__init__()
        self.d_model = d_model
        if torch.empty(0).is_meta:  # built on the meta device to load a checkpoint: shape only
            self.register_buffer("pe", torch.empty(1, d_model, height, width))
        else:
            self.register_buffer("pe", sine_position_embedding(d_model, height, width))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errs):  # type: ignore[no-untyped-def]
        if prefix + "pe" not in state_dict:
            state_dict[prefix + "pe"] = sine_position_embedding(self.d_model, *self.pe.shape[-2:])
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errs)

    def forward(self, features: Tensor) -> Tensor:
        n, _, h, w = features.shape
        pe = self.pe
        if pe.shape[-2:] != (h, w):
            pe = sine_position_embedding(self.d_model, h, w).to(features.device)
        return pe.to(features.dtype).expand(n, -1, -1, -1)


class _BackboneBody(nn.Module):
    """``backbone.0``: holds the trunk as ``body`` (the official ``IntermediateLayerGetter``)."""

    def __init__(self, depth: int) -> None:
        super().__init__()
        self.body = ResNetTrunk(depth, norm="frozen")


class _EncoderLayer(nn.Module):
    """Post-norm encoder layer: ``x = norm1(x + SA(x + pos, x + pos, x)); x = norm2(x + FFN(x))``."""

    def __init__(self, d: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout)
        self.linear1 = nn.Linear(d, ffn)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ffn, d)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, src: Tensor, pos: Tensor) -> Tensor:
        q = src + pos
        src = self.norm1(src + self.dropout1(self.self_attn(q, q, src)[0]))
        ffn = self.linear2(self.dropout(torch.relu(self.linear1(src))))
        return self.norm2(src + self.dropout2(ffn))


class _DecoderLayer(nn.Module):
    """Post-norm decoder layer without self-attention:
    ``t = norm2(t + CA(t + qpos, mem + pos, mem)); t = norm3(t + FFN(t))``."""

    def __init__(self, d: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d, heads, dropout=dropout)
        self.linear1 = nn.Linear(d, ffn)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ffn, d)
        self.norm2 = nn.LayerNorm(d)
        self.norm3 = nn.LayerNorm(d)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, tgt: Tensor, memory: Tensor, pos: Tensor, query_pos: Tensor) -> Tensor:
        att = self.multihead_attn(tgt + query_pos, memory + pos, memory)[0]
        tgt = self.norm2(tgt + self.dropout2(att))
        ffn = self.linear2(self.dropout(torch.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(ffn))


class _Stack(nn.Module):
    def __init__(self, layers: list[nn.Module], norm: nn.Module | None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        if norm is not None:
            self.norm = norm


class _Transformer(nn.Module):
    """``transformer.encoder`` / ``transformer.decoder`` (sequence-first tensors ``(L, N, d)``)."""

    def __init__(self, d: int, heads: int, ffn: int, enc: int, dec: int, dropout: float) -> None:
        super().__init__()
        self.encoder = _Stack([_EncoderLayer(d, heads, ffn, dropout) for _ in range(enc)], None)
        self.decoder = _Stack([_DecoderLayer(d, heads, ffn, dropout) for _ in range(dec)], nn.LayerNorm(d))
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src: Tensor, pos: Tensor, queries: Tensor) -> Tensor:
        """``src``/``pos`` ``(N, d, h, w)``, ``queries`` ``(K, d)`` -> decoder output ``(N, K, d)``."""
        n = src.shape[0]
        memory = src.flatten(2).permute(2, 0, 1)
        pos = pos.flatten(2).permute(2, 0, 1)
        for layer in self.encoder.layers:
            memory = layer(memory, pos)
        query_pos = queries.unsqueeze(1).expand(-1, n, -1)
        out = torch.zeros_like(query_pos)
        for layer in self.decoder.layers:
            out = layer(out, memory, pos, query_pos)
        return self.decoder.norm(out).transpose(0, 1)


class GroupWiseLinear(nn.Module):
    """One linear map per label: ``(N, K, d) -> (N, K)``, ``out[n, k] = sum_j W[0, k, j] * h[n, k, j] + b[0, k]``."""

    def __init__(self, num_labels: int, d: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(d)
        self.W = nn.Parameter(torch.empty(1, num_labels, d).uniform_(-bound, bound))
        self.b = nn.Parameter(torch.empty(1, num_labels).uniform_(-bound, bound))

    def forward(self, h: Tensor) -> Tensor:
        return (self.W * h).sum(-1) + self.b


class Query2Label(nn.Module):
    """Query2Label with a ResNet backbone (official layout and forward pass).

    Args:
        num_labels: K (label queries and head outputs).
        image_size: the trained input resolution (448 or 576 for the official R101 models); sets the
            ``pe`` buffer to ``(1, d_model, image_size/32, image_size/32)``.
        depth: backbone ResNet depth (101 for the official models).
        d_model, heads, ffn: transformer width (2048), attention heads (4), feed-forward width (8192).
        enc_layers, dec_layers: 1 and 2 in the official models.
        dropout: transformer dropout (0.1; inactive in ``eval()``).
        input_proj: project the backbone's 2048 channels to ``d_model`` with a 1x1 convolution (the official
            ``--keep_input_proj`` variant, keys ``input_proj.{weight,bias}``); required when ``d_model != 2048``.
            The published models have ``d_model = 2048`` and an identity projection.

    ``forward(x)``: ``x`` ``(N, 3, H, W)`` normalised with ImageNet mean/std (the wrapper does it) -> logits
    ``(N, K)``. Inputs at other resolutions (multiples of 32) get a position embedding computed for their size.
    """

    def __init__(
        self,
        num_labels: int,
        image_size: int = 448,
        depth: int = 101,
        d_model: int = 2048,
        heads: int = 4,
        ffn: int = 8192,
        enc_layers: int = 1,
        dec_layers: int = 2,
        dropout: float = 0.1,
        input_proj: bool = False,
    ) -> None:
        super().__init__()
        owner = "Query2Label"
        check_int(owner, "num_labels", num_labels, low=1, fix="pass the number of labels K.")
        check_int(owner, "image_size", image_size, low=32, fix="the trained resolution, e.g. 448.")
        if image_size % 32:
            raise fail(owner, "image_size", "a multiple of 32 (the backbone stride)", image_size, "e.g. 448 or 576.")
        check_int(owner, "heads", heads, low=1)
        check_int(owner, "d_model", d_model, low=heads)
        if d_model % heads or d_model % 2:
            raise fail(owner, "d_model", f"even and divisible by heads={heads}", d_model)
        check_int(owner, "ffn", ffn, low=1)
        check_int(owner, "enc_layers", enc_layers, low=0)
        check_int(owner, "dec_layers", dec_layers, low=1)
        check_float(owner, "dropout", dropout, low=0.0, high=1.0, high_inclusive=False)
        self.num_labels = num_labels
        self.image_size = image_size
        body = _BackboneBody(depth)
        channels = body.body.num_channels
        if channels != d_model and not input_proj:
            raise fail(owner, "d_model", f"{channels} (the backbone's channels)", d_model, "or pass input_proj=True.")
        side = image_size // 32
        self.backbone = nn.Sequential(body, PositionEmbeddingSine(d_model, side, side))
        self.transformer = _Transformer(d_model, heads, ffn, enc_layers, dec_layers, dropout)
        self.input_proj: nn.Module = nn.Conv2d(channels, d_model, 1) if input_proj else nn.Identity()
        queries = torch.empty(num_labels, d_model)
        if not queries.is_meta:  # N(0, 1) as nn.Embedding; skipped on the meta device (slow to trace there)
            nn.init.normal_(queries)
        self.query_embed = nn.Embedding(num_labels, d_model, _weight=queries)
        self.fc = GroupWiseLinear(num_labels, d_model)

    def forward(self, x: Tensor) -> Tensor:
        features = self.backbone[0].body(x)
        pos = self.backbone[1](features)
        hidden = self.transformer(self.input_proj(features), pos, self.query_embed.weight)
        return self.fc(hidden)


_META = {
    "mean": IMAGENET_MEAN,
    "std": IMAGENET_STD,
    "parity": {"mean": None, "std": None},
    "layout": "SlongLiu/query2labels",
}


@ARCHITECTURES.register(
    "query2label_r101",
    description="Query2Label, ResNet-101 backbone (official layout)",
    input_size=(3, 448, 448),
    **_META,
)
def query2label_r101(num_labels: int, image_size: int = 448, **kwargs: object) -> Query2Label:
    """Query2Label R101 as published (``d_model`` 2048, 4 heads, FFN 8192, 1 encoder + 2 decoder layers).

    ``meta["parity"]``: the SLAM authors fed Query2Label plain ``[0, 1]`` images (no mean/std), a documented
    parity switch; the default applies ImageNet mean/std as the official training did.
    """
    return Query2Label(num_labels, image_size=image_size, **kwargs)  # type: ignore[arg-type]
