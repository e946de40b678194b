"""Conformance: every registered attack passes every check of :data:`labelflip.testing.CHECKS`.

Parametrised over the attack registry at collection time, so an attack registered now or later (a built-in
module, or a plugin through the ``labelflip.plugins`` entry points) is checked without writing a test: budget
never exceeded, output in bounds, no NaN, zero budget -> zero flips, batch-size invariance, seed determinism
and no global RNG use, model modes restored (also on error), parameters untouched. The budget checks also run
on float16 and bfloat16 networks: the budget must hold exactly against the caller's float32 input.
"""

from __future__ import annotations

import pytest
import torch

from labelflip.attacks import list_attacks
from labelflip.testing import CHECKS, LOW_PRECISION, LOW_PRECISION_CHECKS, factory_for


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("check", sorted(CHECKS))
@pytest.mark.parametrize("name", list_attacks())
def test_registered_attack_conforms(name: str, check: str, norm: str) -> None:
    CHECKS[check](factory_for(name, norm), norm)


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("check", LOW_PRECISION_CHECKS)
@pytest.mark.parametrize("name", list_attacks())
def test_registered_attack_conforms_low_precision(name: str, check: str, norm: str, dtype: torch.dtype) -> None:
    CHECKS[check](factory_for(name, norm), norm, dtype=dtype)
