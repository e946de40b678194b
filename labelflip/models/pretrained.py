"""The paper's models by name (``--model q2l-r101-448 --checkpoint checkpoint.pkl``), registered in
:data:`labelflip.models.MODELS`.

Nothing is downloaded: each entry builds the architecture (on the ``meta`` device, so nothing is initialised)
and loads the user's checkpoint with :func:`labelflip.models.loading.load_state` (safetensors, or a weights-only
``torch.load``; the official ``.pkl`` / ``.pth`` containers and ``module.`` prefixes are unwrapped). The label
count K is read from the checkpoint's head. Preprocessing travels with the model: the returned
``LoadedModel.module`` is a :class:`~labelflip.models.MultiLabelModel` that maps ``[0, 1]`` images to logits and
applies the architecture's normalisation inside (ImageNet mean/std for Query2Label and ResNet, none for ASL's
TResNets), so attack budgets stay in pixel units. ``input_norm="none"`` feeds the network ``[0, 1]`` images as
they are: the SLAM authors' setting for Query2Label (a parity switch), or a Query2Label checkpoint trained with
``--orid_norm``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from labelflip._registry import Param
from labelflip._validation import LabelflipError, check_choice, fail
from labelflip.models.architectures import ARCHITECTURES, build_architecture
from labelflip.models.architectures.resnet import IMAGENET_MEAN, IMAGENET_STD
from labelflip.models.loading import guess_layout, load_into, load_state
from labelflip.models.registry import MODELS, LoadedModel
from labelflip.models.wrapper import MultiLabelModel

__all__ = ["PRETRAINED", "PretrainedSpec", "load_pretrained", "preprocessing"]

_Q2L = "https://github.com/SlongLiu/query2labels (README, 'Pretrained Models')"
_ASL = "https://github.com/Alibaba-MIIL/ASL/blob/main/MODEL_ZOO.md"


@dataclass(frozen=True)
class PretrainedSpec:
    """A published model: its architecture, where its checkpoint is published and what it was trained on.

    Attributes:
        name: registry name.
        arch: architecture registry name; ``arch_kwargs`` its options.
        image_size: the trained input resolution (square).
        norm: the normalisation the official training used: ``"imagenet"`` (mean/std) or ``"none"`` ([0, 1]).
        head: ``(state_dict key, dim)`` whose size is K.
        labels: label sets the published checkpoints use, by K (``"coco"``: 80, ``"nuswide"``: 81, ``"voc"``: 20),
            for naming outputs when the checkpoint has no names.
        source: where the official checkpoints are published (``files``: their names).
    """

    name: str
    arch: str
    arch_kwargs: dict[str, Any]
    image_size: int
    norm: str
    head: tuple[str, int]
    labels: tuple[str, ...]
    source: str
    files: str
    description: str


PRETRAINED: dict[str, PretrainedSpec] = {
    s.name: s
    for s in (
        PretrainedSpec(
            "q2l-r101-448",
            "query2label_r101",
            {"image_size": 448},
            448,
            "imagenet",
            ("fc.b", 1),
            ("coco", "nuswide"),
            _Q2L,
            "Q2L-R101-448 checkpoint.pkl (MS-COCO, 80 labels)",
            "Query2Label, ResNet-101 backbone, 448x448 (the paper's Q2L models)",
        ),
        PretrainedSpec(
            "q2l-r101-576",
            "query2label_r101",
            {"image_size": 576},
            576,
            "imagenet",
            ("fc.b", 1),
            ("coco",),
            _Q2L,
            "Q2L-R101-576 checkpoint.pkl (MS-COCO, 80 labels)",
            "Query2Label, ResNet-101 backbone, 576x576",
        ),
        PretrainedSpec(
            "tresnet-l-448",
            "tresnet_l",
            {},
            448,
            "none",
            ("head.fc.weight", 0),
            ("coco", "nuswide"),
            _ASL,
            "MS_COCO_TRresNet_L_448_86.6.pth, NUS_WIDE_TRresNet_L_448_65.2.pth",
            "ASL TResNet-L, 448x448 (the paper's ASL model on MS-COCO and NUS-WIDE)",
        ),
        PretrainedSpec(
            "tresnet-xl-448",
            "tresnet_xl",
            {},
            448,
            "none",
            ("head.fc.weight", 0),
            ("voc", "coco"),
            _ASL,
            "PASCAL_VOC_TResNet_xl_448_96.0.pth (20 labels)",
            "ASL TResNet-XL, 448x448 (the paper's ASL model on VOC2007)",
        ),
        PretrainedSpec(
            "resnet101-448",
            "resnet101",
            {},
            448,
            "imagenet",
            ("fc.weight", 0),
            (),
            "your own checkpoint: a torchvision ResNet-101 fine-tuned for multi-label classification",
            "any torchvision-layout ResNet-101 state dict with a K-output fc",
            "ResNet-101 (torchvision layout), 448x448, ImageNet normalisation",
        ),
        PretrainedSpec(
            "resnet50-448",
            "resnet50",
            {},
            448,
            "imagenet",
            ("fc.weight", 0),
            (),
            "your own checkpoint: a torchvision ResNet-50 fine-tuned for multi-label classification",
            "any torchvision-layout ResNet-50 state dict with a K-output fc",
            "ResNet-50 (torchvision layout), 448x448, ImageNet normalisation",
        ),
    )
}


def preprocessing(name: str, input_norm: str = "default") -> dict[str, Any]:
    """Input size and normalisation of a registered pretrained model or architecture.

    Args:
        name: a :data:`PRETRAINED` model name (``"q2l-r101-448"``) or an architecture name (``"tresnet_l"``).
        input_norm: ``"default"`` (the model's own), ``"imagenet"`` or ``"none"`` (``[0, 1]`` images as they are).

    Returns:
        ``{"input_size": (3, H, W), "mean": tuple | None, "std": tuple | None}``.
    """
    mode = check_choice("preprocessing", "input_norm", input_norm, ("default", "imagenet", "none"))
    spec = PRETRAINED.get(name)
    if spec is not None:
        size: tuple[int, ...] = (3, spec.image_size, spec.image_size)
        default = spec.norm
    else:
        meta = ARCHITECTURES.get(name).meta
        size = tuple(meta.get("input_size") or ())
        default = "imagenet" if meta.get("mean") is not None else "none"
    if (default if mode == "default" else mode) == "none":
        return {"input_size": size, "mean": None, "std": None}
    return {"input_size": size, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}


def _known_names(labels: tuple[str, ...], k: int) -> list[str] | None:
    from labelflip.data.coco import COCO_LABELS
    from labelflip.data.nuswide import NUSWIDE_LABELS
    from labelflip.data.voc import VOC_LABELS

    sets = {"coco": COCO_LABELS, "nuswide": NUSWIDE_LABELS, "voc": VOC_LABELS}
    return next((list(sets[s]) for s in labels if len(sets[s]) == k), None)


def load_pretrained(
    name: str,
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    input_norm: str = "default",
    trust_pickle: bool = False,
    sha256: str | None = None,
    prefer_ema: bool = False,
    strict: bool = True,
    data: Any = None,
    label_names: list[str] | None = None,
    **_ignored: Any,
) -> LoadedModel:
    """Build the pretrained model ``name`` and load ``checkpoint`` into it.

    Args:
        name: a :data:`PRETRAINED` name.
        checkpoint: the checkpoint file (required; see the error for where the official ones are published).
        input_norm: ``"default"`` (the architecture's normalisation), ``"imagenet"`` or ``"none"`` (parity switch:
            the SLAM authors fed Query2Label un-normalised ``[0, 1]`` images).
        trust_pickle, sha256, prefer_ema: passed to :func:`load_state`.
        strict: every checkpoint entry must match the architecture (see :func:`load_into`).
        data: a dataset (``DatasetSplits``) whose ``label_names`` name the outputs when the checkpoint has none
            and the counts agree.
        label_names: explicit output names (K of them); they take precedence.

    Returns:
        A :class:`LoadedModel` whose ``module`` is a :class:`MultiLabelModel` (eval mode, CPU) mapping
        ``(N, 3, H, W)`` images in ``[0, 1]`` to logits ``(N, K)``; ``fingerprint`` is
        ``"<name>[:<input_norm>]:<sha256[:16]>"``.
    """
    if name not in PRETRAINED:
        raise fail("load_pretrained", "name", "one of " + ", ".join(sorted(PRETRAINED)), name)
    spec = PRETRAINED[name]
    owner = f"model {name!r}"
    if checkpoint is None:
        raise fail(
            owner,
            "checkpoint",
            "the path of a checkpoint file (labelflip downloads nothing)",
            None,
            f"download {spec.files} from {spec.source} and pass it: --checkpoint PATH on the command line, "
            "'checkpoint: PATH' in a study spec, or checkpoint=PATH in Python.",
        )
    mode = check_choice(owner, "input_norm", input_norm, ("default", "imagenet", "none"))
    state, meta = load_state(checkpoint, trust_pickle=trust_pickle, sha256=sha256, prefer_ema=prefer_ema)
    key, dim = spec.head
    if key not in state or state[key].dim() <= dim:
        layout = f" It looks like a {g} checkpoint." if (g := guess_layout(state)) else ""
        raise LabelflipError(
            f"{checkpoint} has no {key!r} entry, so it is not a {spec.description} checkpoint.{layout} Fix: pass the "
            f"checkpoint of this model ({spec.files}; {spec.source}) or pick the model that matches the file."
        )
    k = int(state[key].shape[dim])
    with torch.device("meta"):
        net = build_architecture(spec.arch, k, **spec.arch_kwargs)
    load_into(net, state, strict=strict, assign=True)
    net.eval()
    names = _resolve_names(owner, k, label_names, meta.get("label_names"), data, spec.labels)
    pre = preprocessing(name, mode)
    module = MultiLabelModel(net, num_labels=k, mean=pre["mean"], std=pre["std"], output_kind="logits")
    module.eval()
    suffix = "" if mode == "default" else f":{mode}"
    return LoadedModel(
        module=module,
        name=name,
        fingerprint=f"{name}{suffix}:{meta['sha256'][:16]}",
        metrics={},
        data_config={"checkpoint": meta.get("extra", {}), "input_size": list(pre["input_size"])},
        label_names=names,
        path=Path(checkpoint),
    )


def _resolve_names(
    owner: str, k: int, given: list[str] | None, stored: list[str] | None, data: Any, labels: tuple[str, ...]
) -> list[str]:
    """Output names: explicit > stored in the checkpoint > the dataset's (same K) > the published label set."""
    if given is not None:
        if len(given) != k or not all(isinstance(n, str) for n in given):
            raise fail(owner, "label_names", f"{k} names (the checkpoint has K = {k} outputs)", given)
        return list(given)
    if stored and len(stored) == k:
        return list(stored)
    data_names = list(getattr(data, "label_names", None) or [])
    if len(data_names) == k:
        return data_names
    return _known_names(labels, k) or [f"label_{i}" for i in range(k)]


def _register(spec: PretrainedSpec) -> None:
    pre = preprocessing(spec.name)

    def factory(*, input_norm: str = "default", checkpoint: Any = None, **options: Any) -> LoadedModel:
        return load_pretrained(spec.name, checkpoint, input_norm=input_norm, **options)

    factory.__doc__ = spec.description
    MODELS.add(
        spec.name,
        factory,
        params=[
            Param(
                "input_norm",
                str,
                "default",
                help=f"default ({spec.norm}), imagenet, or none (un-normalised [0, 1] inputs: parity switch)",
            )
        ],
        description=spec.description,
        input_size=pre["input_size"],
        mean=pre["mean"],
        std=pre["std"],
        arch=spec.arch,
        checkpoint_required=True,
        checkpoint_source=spec.source,
        checkpoint_files=spec.files,
        builtin=False,
    )


for _spec in PRETRAINED.values():
    _register(_spec)
