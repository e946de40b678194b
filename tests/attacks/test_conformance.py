"""Conformance: every registered attack passes every check of :data:`labelflip.testing.CHECKS`.

Parametrised over the attack registry at collection time, so an attack registered now or later (a built-in
module, or a plugin through the ``labelflip.plugins`` entry points) is checked without writing a test: budget
never exceeded, output in bounds, no NaN, zero budget -> zero flips, batch-size invariance, seed determinism
and no global RNG use, model modes restored (also on error), parameters untouched.
"""

from __future__ import annotations

import pytest

from labelflip.attacks import list_attacks
from labelflip.testing import CHECKS, factory_for


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("check", sorted(CHECKS))
@pytest.mark.parametrize("name", list_attacks())
def test_registered_attack_conforms(name: str, check: str, norm: str) -> None:
    CHECKS[check](factory_for(name, norm), norm)
