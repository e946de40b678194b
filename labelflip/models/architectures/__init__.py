"""Network architectures in plain PyTorch, registered by name."""

from labelflip.models.architectures import builtin as _builtin  # noqa: F401  (registers the built-in families)
from labelflip.models.architectures.builtin import ASLConvNet, QueryLabelNet
from labelflip.models.architectures.registry import ARCHITECTURES, build_architecture, list_architectures

__all__ = ["ARCHITECTURES", "ASLConvNet", "QueryLabelNet", "build_architecture", "list_architectures"]
