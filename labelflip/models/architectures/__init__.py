"""Network architectures in plain PyTorch, registered by name."""

from labelflip.models.architectures import builtin as _builtin  # noqa: F401  (registers the built-in families)
from labelflip.models.architectures import query2label as _query2label  # noqa: F401  (registers query2label_r101)
from labelflip.models.architectures import resnet as _resnet  # noqa: F401  (registers resnet50/101)
from labelflip.models.architectures import tresnet as _tresnet  # noqa: F401  (registers tresnet_m/l/xl)
from labelflip.models.architectures.builtin import ASLConvNet, QueryLabelNet
from labelflip.models.architectures.registry import ARCHITECTURES, build_architecture, list_architectures

__all__ = ["ARCHITECTURES", "ASLConvNet", "QueryLabelNet", "build_architecture", "list_architectures"]
