"""Attacks: the MI-FGSM max-flip engine (losses x targeting x optimiser) and its result type."""

from labelflip.attacks.mifgsm import ALPHA_LINF, MIFGSM, num_steps
from labelflip.attacks.result import AttackResult, count_flips

__all__ = ["ALPHA_LINF", "MIFGSM", "AttackResult", "count_flips", "num_steps"]
