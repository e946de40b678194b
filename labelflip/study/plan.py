"""A study's plan: the work units, as plain data, and how they are split between workers.

A :class:`WorkUnit` is one model x method x seed x chunk of consecutive samples, at every budget of the model. It
is the atom of a study: attacked in one call, written to the store in one transaction, skipped on resume when
stored. Units are plain, hashable data, so an executor on another process or machine can run any subset of them
(:func:`shard`). Deterministic methods run with the first seed only; stochastic ones once per seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from labelflip._validation import check_int, fail
from labelflip.attacks import attack_info

__all__ = ["WorkUnit", "plan_units", "shard"]


@dataclass(frozen=True, order=True)
class WorkUnit:
    """One atom of work.

    Attributes:
        model: the model's name in the study.
        method: the canonical method spec (``"class:0.5"``).
        seed: the method's seed (the first seed for deterministic methods).
        start, stop: the unit's samples, positions ``start .. stop - 1`` in the study's sample list.
    """

    model: str
    method: str
    seed: int
    start: int
    stop: int

    @property
    def samples(self) -> range:
        return range(self.start, self.stop)

    def __str__(self) -> str:
        return f"{self.model}/{self.method}/seed {self.seed}/samples {self.start}-{self.stop - 1}"


def plan_units(
    models: Sequence[str], methods: Sequence[str], seeds: Sequence[int], num_samples: int, chunk: int
) -> list[WorkUnit]:
    """Every unit of a study, model-major, then method, seed and chunk (the order a single worker runs them)."""
    chunk = check_int("plan_units", "chunk", chunk, low=1)
    units = []
    for model in models:
        for method in methods:
            for seed in seeds if attack_info(method)["stochastic"] else list(seeds)[:1]:
                for start in range(0, num_samples, chunk):
                    units.append(WorkUnit(model, method, int(seed), start, min(num_samples, start + chunk)))
    return units


def shard(units: Sequence[WorkUnit], rank: int, world: int) -> list[WorkUnit]:
    """The units of worker ``rank`` out of ``world``, in plan order. Deterministic; the shards of all ranks
    partition ``units``.

    A chunk's units (one model, one sample range, every method and seed) stay together, so a worker that runs a
    chunk's BCE unit also runs the random and CLASS units that reuse its trajectories
    (:mod:`labelflip.study.execute`): the chunks go round robin over the workers, in order of first appearance. With
    fewer chunks than workers, the units themselves go round robin (every ``world``-th unit from ``rank``), so no
    worker sits idle."""
    world = check_int("shard", "world", world, low=1)
    rank = check_int("shard", "rank", rank, low=0)
    if rank >= world:
        raise fail("shard", "rank", f"in [0, {world})", rank)
    chunks = list(dict.fromkeys((u.model, u.start, u.stop) for u in units))
    if len(chunks) < world:
        return list(units[rank::world])
    mine = set(chunks[rank::world])
    return [u for u in units if (u.model, u.start, u.stop) in mine]
