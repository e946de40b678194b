"""MULAN multi-label datasets: an ARFF file whose label attributes are named by a companion ``.xml`` file.

Layout (http://mulan.sourceforge.net/format.html): an ARFF file (dense or sparse, plain or gzip-compressed)
with one attribute per feature and one per label; the ``.xml`` lists the label attribute names
(``<labels><label name="..."/>...</labels>``, possibly nested). Every attribute not named in the ``.xml`` is a
feature. Labels keep the order of their attributes in the ARFF file.

Parsing: dense files are read by :func:`scipy.io.arff.loadarff`. SciPy cannot read **sparse** ARFF rows
(``{index value, ...}``) and the ``liac-arff`` package is not a dependency of labelflip, so for sparse files
SciPy still parses the header (attribute names and types, from the header followed by an empty ``@data``
section) and a minimal reader in this module parses only the ``{index value, ...}`` data rows (omitted entries
are 0 for numeric attributes and the first declared value for nominal ones, as the ARFF specification says).

The data are split 50/30/20 with a seed and standardised on the training split
(:func:`labelflip.data.tabular.split_and_standardise`), as the SAE paper's protocol (seed 004, §5.1).
Registered as ``mulan``: ``create_dataset("mulan:name=yeast")`` or ``create_dataset("mulan", path="x.arff")``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.io import arff

from labelflip._registry import Param
from labelflip._validation import check_int, fail
from labelflip.data.base import DATASETS, DatasetSplits
from labelflip.data.tabular import PAPER_FRACTIONS, split_and_standardise

__all__ = ["MULAN_DIR_ENV", "ArffTable", "MulanConfig", "find_mulan", "load_mulan", "read_arff", "read_label_names"]

_OWNER = "load_mulan"
MULAN_DIR_ENV = "LABELFLIP_MULAN_DIR"
"""Environment variable naming a directory searched first for ``<name>.arff[.gz]`` / ``<name>.xml[.gz]``."""
_DATA_LINE = re.compile(r"^\s*@data\b", re.IGNORECASE)


@dataclass
class ArffTable:
    """The attributes and data of an ARFF file.

    Attributes:
        relation: the ``@relation`` name.
        names: attribute names, in file order. types: ``"numeric"`` or ``"nominal"`` per attribute.
        values: ``(N, A)`` float64: numeric values; nominal values converted with ``float()`` when every declared
            value of the attribute is a number, else the index of the value in its declaration; NaN is missing.
        numeric_nominal: per attribute, whether it is numeric or a nominal whose declared values are all numbers.
        sparse: whether the data rows were sparse.
    """

    relation: str
    names: list[str]
    types: list[str]
    values: np.ndarray
    numeric_nominal: list[bool]
    sparse: bool


def _read_text(path: Path, param: str) -> str:
    if not path.is_file():
        raise fail(_OWNER, param, "an existing file", str(path), "check the path (MULAN files: <name>.arff[.gz]).")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise fail(
                _OWNER, param, "a readable gzip file", str(path), "the file is truncated; fetch it again."
            ) from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _is_numeric_text(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _parse_sparse_rows(lines: list[str], names: list[str], defaults: np.ndarray, convert: list[Any]) -> np.ndarray:
    """The minimal sparse-row reader: ``{index value, ...}`` per line -> ``(N, A)`` float64."""
    rows = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not (text.startswith("{") and text.endswith("}")):
            raise fail(
                _OWNER, "path", "sparse data rows of the form {index value, ...}", f"data row {number}: {text[:60]!r}"
            )
        row = defaults.copy()
        body = text[1:-1].strip()
        for item in body.split(",") if body else ():
            parts = item.strip().split(None, 1)
            if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) >= len(names):
                raise fail(
                    _OWNER,
                    "path",
                    f"sparse entries 'index value' with 0 <= index < {len(names)}",
                    f"data row {number}: {item.strip()!r}",
                )
            col, value = int(parts[0]), parts[1].strip().strip("'\"")
            row[col] = convert[col](value, number)
        rows.append(row)
    return np.stack(rows) if rows else np.zeros((0, len(names)))


def read_arff(path: str | os.PathLike[str]) -> ArffTable:
    """Read a dense or sparse ARFF file (plain or gzip) into an :class:`ArffTable` (see the module docstring).

    Raises a :class:`~labelflip.LabelflipError` naming the problem for an empty file, a file without
    ``@attribute``/``@data`` sections, unsupported attribute types (string, date, relational) and values that do
    not parse.
    """
    path = Path(path)
    text = _read_text(path, "path")
    if not text.strip():
        raise fail(_OWNER, "path", "a non-empty ARFF file", str(path), "the file is empty; fetch it again.")
    lines = text.splitlines()
    at = next((i for i, line in enumerate(lines) if _DATA_LINE.match(line)), None)
    if at is None or not any(line.strip().lower().startswith("@attribute") for line in lines[:at]):
        raise fail(_OWNER, "path", "an ARFF file with @attribute lines and a @data section", str(path))
    data_lines = [ln for ln in lines[at + 1 :] if ln.strip() and not ln.lstrip().startswith("%")]
    sparse = bool(data_lines) and data_lines[0].lstrip().startswith("{")
    header = "\n".join(lines[: at + 1]) + "\n"
    try:
        records, meta = arff.loadarff(io.StringIO(header if sparse else text))
    except NotImplementedError as exc:  # string / relational attributes
        raise fail(
            _OWNER, "path", "an ARFF file with numeric and nominal attributes only", str(path), str(exc)
        ) from exc
    except (ValueError, arff.ParseArffError) as exc:
        raise fail(
            _OWNER, "path", "an ARFF file whose values parse (numbers for numeric attributes)", str(path), str(exc)
        ) from exc
    names = list(meta.names())
    types = list(meta.types())
    bad = [f"{n} ({t})" for n, t in zip(names, types, strict=True) if t not in ("numeric", "nominal")]
    if bad:
        raise fail(_OWNER, "path", "numeric or nominal attributes only", ", ".join(bad[:5]), "drop or encode them.")
    declared = [tuple(meta[n][1]) if t == "nominal" else () for n, t in zip(names, types, strict=True)]
    numeric_nominal = [
        t == "numeric" or all(_is_numeric_text(v) for v in d) for t, d in zip(types, declared, strict=True)
    ]

    def converter(col: int) -> Any:
        def conv(value: str, row: int) -> float:
            if value == "?":
                return float("nan")
            if types[col] == "numeric":
                if not _is_numeric_text(value):
                    raise fail(
                        _OWNER, "path", f"a number for numeric attribute {names[col]!r}", f"row {row}: {value!r}"
                    )
                return float(value)
            if value not in declared[col]:
                raise fail(
                    _OWNER, "path", f"one of {declared[col]} for attribute {names[col]!r}", f"row {row}: {value!r}"
                )
            return float(value) if numeric_nominal[col] else float(declared[col].index(value))

        return conv

    convert = [converter(c) for c in range(len(names))]
    if sparse:
        defaults = np.array([0.0 if t == "numeric" else convert[c](declared[c][0], 0) for c, t in enumerate(types)])
        values = _parse_sparse_rows(data_lines, names, defaults, convert)
    else:
        values = np.empty((len(records), len(names)))
        for c, name in enumerate(names):
            column = records[name]
            if types[c] == "numeric":
                values[:, c] = column.astype(np.float64)
            else:
                decoded = [v.decode() if isinstance(v, bytes) else str(v) for v in column]
                values[:, c] = [convert[c](v, r + 1) for r, v in enumerate(decoded)]
    return ArffTable(str(meta.name), names, types, values, numeric_nominal, sparse)


def read_label_names(path: str | os.PathLike[str]) -> list[str]:
    """Label attribute names from a MULAN ``.xml`` (plain or gzip), in document order (nested labels included)."""
    path = Path(path)
    text = _read_text(path, "xml")
    try:
        root = ET.fromstring(text.encode("utf-8"))
    except ET.ParseError as exc:
        raise fail(_OWNER, "xml", "a MULAN label file (<labels><label name=.../></labels>)", str(path)) from exc
    names = [el.get("name") for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "label"]
    if not names or any(not n for n in names):
        raise fail(_OWNER, "xml", "a MULAN label file with at least one <label name=...>", str(path))
    return [str(n) for n in names]


@dataclass(frozen=True)
class MulanConfig:
    """What determines a loaded MULAN dataset: the files (with the ARFF's sha256), seed, fractions, scaling."""

    path: str
    xml: str
    sha256: str
    seed: int = 0
    fractions: tuple[float, float, float] = PAPER_FRACTIONS
    standardise: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict for fingerprints (file names only: the hash identifies the content)."""
        d = asdict(self)
        d.update(kind="mulan", path=Path(self.path).name, xml=Path(self.xml).name, fractions=list(self.fractions))
        return d


def _search_dirs(data_dir: str | os.PathLike[str] | None) -> list[Path]:
    dirs = [Path(data_dir)] if data_dir else []
    if os.environ.get(MULAN_DIR_ENV):
        dirs.append(Path(os.environ[MULAN_DIR_ENV]))
    project = Path(__file__).resolve().parents[2]
    dirs += [project.parent / "shared" / "data" / "mulan", Path.cwd() / "data" / "mulan"]
    return dirs


def find_mulan(name: str, data_dir: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """The ``(arff, xml)`` paths of MULAN dataset ``name`` (``<name>[.orig].arff[.gz]``, ``<name>.xml[.gz]``),
    searched in ``data_dir``, ``$LABELFLIP_MULAN_DIR``, ``../shared/data/mulan`` beside the project and
    ``./data/mulan``."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise fail(_OWNER, "name", "a MULAN dataset name such as 'yeast' or 'emotions'", name)
    dirs = _search_dirs(data_dir)
    for d in dirs:
        arffs = [d / f"{name}{s}" for s in (".arff.gz", ".arff", ".orig.arff.gz", ".orig.arff")]
        xmls = [d / f"{name}{s}" for s in (".xml.gz", ".xml")]
        a = next((p for p in arffs if p.is_file()), None)
        x = next((p for p in xmls if p.is_file()), None)
        if a is not None and x is not None:
            return a, x
    raise fail(
        _OWNER,
        "name",
        f"a dataset with <name>.arff[.gz] and <name>.xml[.gz] in one of {[str(d) for d in dirs]}",
        name,
        f"download it from MULAN, or set ${MULAN_DIR_ENV}, or pass path=... and xml=....",
    )


def load_mulan(
    path: str | os.PathLike[str],
    xml: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    fractions: tuple[float, float, float] = PAPER_FRACTIONS,
    standardise: bool = True,
) -> DatasetSplits:
    """Load a MULAN dataset and split it 50/30/20 (seeded), standardising features on the training split.

    Args:
        path: the ARFF file (dense or sparse, plain or gzip).
        xml: the label file; default: ``path`` with its ``.arff[.gz]`` suffix replaced by ``.xml`` or ``.xml.gz``.
        seed: the split seed. fractions: train / val / test fractions. standardise: z-score the features.

    Returns:
        :class:`DatasetSplits` of :class:`MultiLabelData`: float32 ``x`` ``(n, D)`` and float32 ``y`` ``(n, K)``
        in ``{0, 1}``; labels in ARFF attribute order; ``config`` a :class:`MulanConfig`.
    """
    check_int(_OWNER, "seed", seed, low=0, fix="pass a non-negative integer seed.")
    path = Path(path)
    if xml is None:
        stem = re.sub(r"(\.orig)?\.arff(\.gz)?$", "", path.name)
        candidates = [path.with_name(stem + s) for s in (".xml", ".xml.gz")]
        xml = next((p for p in candidates if p.is_file()), candidates[0])
    xml = Path(xml)
    label_names = read_label_names(xml)
    table = read_arff(path)
    missing = [n for n in label_names if n not in table.names]
    if missing:
        raise fail(
            _OWNER,
            "xml",
            "label names that are attributes of the ARFF file",
            f"{missing[:5]} not among {len(table.names)} attributes",
            "use the .xml that belongs to this ARFF file.",
        )
    wanted = set(label_names)
    label_cols = [i for i, n in enumerate(table.names) if n in wanted]
    feature_cols = [i for i, n in enumerate(table.names) if n not in wanted]
    if not feature_cols:
        raise fail(_OWNER, "path", "an ARFF file with at least one feature attribute", str(path))
    for c in feature_cols:
        if not table.numeric_nominal[c]:
            raise fail(
                _OWNER,
                "path",
                "numeric features (numeric attributes, or nominal ones whose values are numbers)",
                f"feature {table.names[c]!r} of type nominal",
                "one-hot encode it or drop it before loading.",
            )
    if table.values.shape[0] < 3:
        raise fail(_OWNER, "path", "an ARFF file with at least 3 data rows", f"{table.values.shape[0]} rows")
    x = table.values[:, feature_cols]
    y = table.values[:, label_cols]
    if np.isnan(x).any():
        raise fail(
            _OWNER,
            "path",
            "features without missing values ('?')",
            f"{int(np.isnan(x).sum())} missing",
            "impute them before loading.",
        )
    if not np.isin(y, (0.0, 1.0)).all():
        raise fail(_OWNER, "path", "label attributes with values 0 or 1 only (no '?')", str(path))
    config = MulanConfig(
        str(path), str(xml), hashlib.sha256(path.read_bytes()).hexdigest(), seed, tuple(fractions), standardise
    )
    names = [table.names[c] for c in label_cols]
    return split_and_standardise(x, y, names, config, seed=seed, fractions=tuple(fractions), standardise=standardise)


@DATASETS.register(
    "mulan",
    params=[
        Param("name", str, "", "a MULAN dataset name (emotions, yeast, ...) found by find_mulan"),
        Param("path", str, "", "an ARFF file (instead of name)"),
        Param("xml", str, "", "its label .xml (default: beside the ARFF file)"),
        Param("seed", int, 0, "split seed", 0),
    ],
    description="a MULAN ARFF dataset (name= or path=), split 50/30/20, standardised on train",
)
def mulan_dataset(name: str = "", path: str = "", xml: str = "", seed: int = 0, **options: Any) -> DatasetSplits:
    """``create_dataset("mulan:name=yeast")`` or ``create_dataset("mulan", path="my.arff.gz")``."""
    if bool(name) == bool(path):
        raise fail(
            "the mulan dataset",
            "name/path",
            "exactly one of name=... or path=...",
            {"name": name, "path": path},
            "e.g. mulan:name=yeast.",
        )
    if name:
        arff_path, xml_path = find_mulan(name, options.pop("data_dir", None))
        return load_mulan(arff_path, xml or xml_path, seed=seed, **options)
    return load_mulan(path, xml or None, seed=seed, **options)
