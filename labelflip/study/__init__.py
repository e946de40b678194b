"""Studies: one YAML spec -> a plan of work units -> execution (resumable, shardable) -> a results store."""

from labelflip.study.plan import WorkUnit, plan_units, shard
from labelflip.study.runner import StudyContext, run_study
from labelflip.study.spec import DEFAULTS, DEMO_SPEC, StudySpec, load_spec
from labelflip.study.store import ResultRow, ResultsStore

__all__ = [
    "DEFAULTS",
    "DEMO_SPEC",
    "ResultRow",
    "ResultsStore",
    "StudyContext",
    "StudySpec",
    "WorkUnit",
    "load_spec",
    "plan_units",
    "run_study",
    "shard",
]
