"""Losses: the attack losses (:mod:`~labelflip.losses.attack`) and the training losses (ASL,
:mod:`~labelflip.losses.training`)."""

from labelflip.losses.attack import (
    LOSSES,
    AttackLoss,
    BCELoss,
    HingeLoss,
    LinearLoss,
    MSELoss,
    SLAMLoss,
    check_flip_estimate,
    create_loss,
    list_losses,
)
from labelflip.losses.training import AsymmetricLoss, asymmetric_loss

__all__ = [
    "LOSSES",
    "AsymmetricLoss",
    "AttackLoss",
    "BCELoss",
    "HingeLoss",
    "LinearLoss",
    "MSELoss",
    "SLAMLoss",
    "asymmetric_loss",
    "check_flip_estimate",
    "create_loss",
    "list_losses",
]
