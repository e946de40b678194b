"""Studies: one YAML spec -> a plan of work units -> execution (resumable, shardable) -> a results store.

Attack studies (:func:`run_study`) and robust studies (``kind: robust``, the SAE paper's Tables 2-4:
:func:`run_robust_study`)."""

from labelflip.study.plan import WorkUnit, plan_units, shard
from labelflip.study.robust_runner import RobustStudyResult, run_robust_study
from labelflip.study.robust_spec import ROBUST_DEMO_SPEC, RobustSpec, load_robust_spec
from labelflip.study.runner import StudyContext, run_study
from labelflip.study.spec import DEFAULTS, DEMO_SPEC, StudySpec, load_spec
from labelflip.study.store import ResultRow, ResultsStore

__all__ = [
    "DEFAULTS",
    "DEMO_SPEC",
    "ROBUST_DEMO_SPEC",
    "ResultRow",
    "ResultsStore",
    "RobustSpec",
    "RobustStudyResult",
    "StudyContext",
    "StudySpec",
    "WorkUnit",
    "load_robust_spec",
    "load_spec",
    "plan_units",
    "run_robust_study",
    "run_study",
    "shard",
]
