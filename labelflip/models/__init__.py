"""Models: the wrapper every attack sees, its sanity checks, checkpoint I/O, architectures and the model registry.

* :class:`MultiLabelModel` (:mod:`~labelflip.models.wrapper`): bounds, normalisation, thresholds, output adapter,
  eval-mode context, input validation.
* :class:`Runtime` (:mod:`~labelflip.models.runtime`): device, bf16/fp16 autocast, channels-last, compile, batch size.
* :func:`check_model` / :func:`ensure_checked` (:mod:`~labelflip.models.checks`): one-off sanity checks.
* :mod:`~labelflip.models.checkpoints`: safetensors checkpoints with fingerprints.
* :mod:`~labelflip.models.architectures`: networks by name (``build_architecture``).
* :data:`MODELS` (:mod:`~labelflip.models.registry`): named, ready-to-attack models.
"""

from labelflip.models import pretrained as _pretrained  # noqa: F401  (registers q2l-r101-448, tresnet-l-448, ...)
from labelflip.models.checks import check_model, ensure_checked
from labelflip.models.registry import MODELS, LoadedModel, create_model, list_models
from labelflip.models.runtime import Runtime, describe_runtime
from labelflip.models.wrapper import MultiLabelModel, as_model

__all__ = [
    "MODELS",
    "LoadedModel",
    "MultiLabelModel",
    "Runtime",
    "as_model",
    "check_model",
    "create_model",
    "describe_runtime",
    "ensure_checked",
    "list_models",
]
