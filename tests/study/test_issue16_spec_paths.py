"""Issue 14 item 7 (study side): factory and weights paths resolve relative to the YAML file, a ``file.py:callable``
factory imports modules beside it, and ``--set`` on a key that exists elsewhere says where it applies."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from labelflip._validation import LabelflipError
from labelflip.study import load_spec
from labelflip.study.inputs import import_factory, load_model


def test_factory_and_weights_resolve_beside_the_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "layers_beside.py").write_text("from torch import nn\n\ndef head():\n    return nn.Linear(12, 4)\n")
    (project / "net.py").write_text(
        textwrap.dedent(
            """
            from torch import nn
            import layers_beside  # a module next to this file

            def build():
                return nn.Sequential(nn.Flatten(), layers_beside.head())
            """
        )
    )
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(project / "w.safetensors"))
    (project / "study.yaml").write_text(
        yaml.safe_dump({"models": [{"name": "mine", "factory": "net.py:build", "weights": "w.safetensors"}]})
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative to the YAML, not to the working directory
    spec = load_spec(Path("..") / "project" / "study.yaml")
    (entry,) = spec.models
    assert Path(entry.factory.rpartition(":")[0]).is_absolute() and Path(entry.weights).is_absolute()
    assert Path(entry.weights).resolve() == (project / "w.safetensors").resolve()
    module = import_factory(entry.factory)()
    assert isinstance(module, torch.nn.Module)
    wrapped, fp, _ = load_model("mine", None, factory=entry.factory, weights=entry.weights)  # type: ignore[arg-type]
    x = torch.rand(2, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(wrapped.module(x), net(x)) and fp
    import sys

    assert str(project) not in sys.path  # the factory's directory is importable only while it loads


@pytest.mark.parametrize(
    ("setting", "needles"),
    [
        ("profile.eps=0.1", ["does not apply there", "correlations.eps", "attackability.eps"]),
        ("weights=w.safetensors", ["models", "YAML"]),
        ("models.threshold=0.6", ["models", "YAML"]),
        ("chunk.size=3", ["not a section", "--set chunk="]),
        ("profile.intervall=3", ["check the spelling", "Did you mean 'interval'"]),
    ],
)
def test_set_on_a_key_that_does_not_apply_says_so(setting: str, needles: list[str]) -> None:
    with pytest.raises(LabelflipError, match="--set") as info:
        load_spec(sets=[setting])
    for needle in needles:
        assert needle in str(info.value), str(info.value)


def test_set_budgets_switches_between_fractions_and_absolute() -> None:
    spec = load_spec(sets=["budgets.absolute=[0.01, 0.02]"])
    assert spec.budgets == {"absolute": [0.01, 0.02]}
