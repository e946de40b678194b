"""Studies: a YAML spec runs the paper's evaluation into a resumable results store."""

from labelflip.study.spec import DEFAULTS, DEMO_SPEC, ModelEntry, StudySpec, load_spec

__all__ = ["DEFAULTS", "DEMO_SPEC", "ModelEntry", "StudySpec", "load_spec"]
