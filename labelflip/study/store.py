"""ResultsStore: an embedded SQLite database holding every per-sample result of a study.

One row per (model, method, seed, budget, sample) with flips (total, up, down), achieved L-inf/L2 norms,
clean and adversarial confidences (float32 vectors) and timing. The primary key makes a duplicate row
impossible; a *unit* of work (one model x method x seed x chunk of samples, all budgets) is written in one
transaction, so a study killed at any point (Ctrl-C or ``kill -9``) leaves only complete units behind, and a
rerun skips exactly those. The manifest (versions, git hash, engine hash, device, seeds, config hash, model
fingerprints) is stored alongside; a store refuses to resume under a different config hash, model fingerprint or
engine code (:meth:`ResultsStore.claim`), warns and records a resume under another labelflip/torch version or git
hash (``resumed_with``), and lets a directory without stored results be reused by a new configuration.
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import functools
import json
import logging
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from labelflip._validation import LabelflipError, fail
from labelflip.models.checkpoints import code_hash

__all__ = ["ENGINE_SOURCES", "ResultRow", "ResultsStore", "decode_array", "encode_array", "engine_hash"]

log = logging.getLogger(__name__)

#: The code that produces a study's stored numbers (attacks, losses, analyses, data, the wrapper, sample selection
#: and planning). Its :func:`engine_hash` is stored in the manifest; resuming under different code is refused.
ENGINE_SOURCES = ("attacks", "losses", "analysis", "data", "estimate.py", "models/wrapper.py", "study/plan.py")
PROVENANCE_KEYS = ("labelflip_version", "git_hash", "torch_version", "engine_hash")  # compared on resume


@functools.lru_cache(maxsize=1)
def engine_hash() -> str:
    """16 hex of the *code* of :data:`ENGINE_SOURCES` (:func:`~labelflip.models.checkpoints.code_hash`: syntax
    trees without docstrings or comments: editing documentation does not count, changing an operation does)."""
    return code_hash((*ENGINE_SOURCES, "study/inputs.py"))


_SCHEMA = """
CREATE TABLE IF NOT EXISTS manifest (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS artefacts (model TEXT, kind TEXT, value TEXT NOT NULL, PRIMARY KEY (model, kind));
CREATE TABLE IF NOT EXISTS results (
    model TEXT NOT NULL, method TEXT NOT NULL, seed INTEGER NOT NULL, budget_index INTEGER NOT NULL,
    sample_index INTEGER NOT NULL, eps REAL NOT NULL, dataset_index INTEGER NOT NULL, steps INTEGER NOT NULL,
    flips INTEGER NOT NULL, flips_up INTEGER NOT NULL, flips_down INTEGER NOT NULL,
    linf REAL NOT NULL, l2 REAL NOT NULL, clean_conf BLOB NOT NULL, adv_conf BLOB NOT NULL, elapsed_s REAL NOT NULL,
    PRIMARY KEY (model, method, seed, budget_index, sample_index)
);
"""


def encode_array(a: np.ndarray) -> dict[str, Any]:
    """A float32 array as JSON-able ``{shape, data (base64)}`` (adversarial examples in the artefacts table)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    return {"shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_array(d: Mapping[str, Any]) -> np.ndarray:
    """The inverse of :func:`encode_array`."""
    return np.frombuffer(base64.b64decode(d["data"]), dtype=np.float32).reshape(d["shape"])


@dataclass
class ResultRow:
    """One stored result. ``clean_conf`` / ``adv_conf`` are float32 confidence vectors of length K;
    ``elapsed_s`` is the sample's share of its unit's wall time."""

    model: str
    method: str
    seed: int
    budget_index: int
    sample_index: int
    eps: float
    dataset_index: int
    steps: int
    flips: int
    flips_up: int
    flips_down: int
    linf: float
    l2: float
    clean_conf: bytes
    adv_conf: bytes
    elapsed_s: float


_COLUMNS = [f.name for f in fields(ResultRow)]


class ResultsStore:
    """A study's SQLite store (WAL journal; safe against interruption at any point)."""

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        """Open (creating it and its directory if needed) the store at ``path``.

        ``readonly=True`` is for readers (export, report): the file must exist (LabelflipError otherwise), nothing
        is created or written, and no lock is needed: with the WAL journal a reader sees a consistent snapshot of
        the committed units while a run is writing (a write through a read-only store raises LabelflipError).
        """
        self.path = Path(path)
        self.readonly = readonly
        if readonly:
            self._db = self._open_readonly()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None)  # explicit transactions below
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def _open_readonly(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise fail(
                "ResultsStore",
                "path",
                "an existing results store (results.sqlite) when readonly=True",
                str(self.path),
                "run the study first (labelflip study run), or pass the study's output directory.",
            )
        uri = self.path.resolve().as_uri() + "?mode=ro"  # as_uri() escapes '?', '#', '%' and spaces in the path
        db = sqlite3.connect(uri, uri=True, isolation_level=None)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            db.close()
            raise LabelflipError(
                f"{self.path} is not a readable labelflip results store ({exc}). "
                "Fix: pass the output directory of a labelflip study, or rerun the study."
            ) from exc
        if not {"manifest", "artefacts", "results"} <= tables:
            db.close()
            raise LabelflipError(
                f"{self.path} is not a labelflip results store, or a run has only just created it (tables found: "
                f"{sorted(tables) or 'none'}). Fix: retry in a moment, or pass the output directory of a study."
            )
        return db

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ manifest and artefacts
    def manifest(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self._db.execute("SELECT key, value FROM manifest")}

    def check_config(self, config_hash: str) -> None:
        """Refuse (before any work) a stored study whose config hash differs from ``config_hash``."""
        stored = self.manifest().get("config_hash")
        if stored is not None and stored != config_hash:
            raise LabelflipError(
                f"The output directory {self.path.parent} holds a study with a different configuration "
                f"(config hash {stored} there, {config_hash} now) and {self.count()} stored results. Refusing to "
                "mix results. Fix: rerun with the original spec to resume it, or choose another output directory "
                "(--out)."
            )

    def claim(self, config_hash: str, provenance: Mapping[str, Any] | None = None, kind: str = "attack") -> None:
        """Tie the store to ``config_hash`` before any work (the runner's first step, under the study lock).

        * No stored results (a run that failed before its first unit: a typo'd model, a missing weights file): the
          directory is reused whatever it holds; a failed run's manifest and artefacts are discarded (logged).
        * Same config hash: a resume. A ``provenance`` (labelflip/torch version, git hash, engine hash) differing
          from the manifest's is logged and appended to its ``resumed_with``; a different **engine hash**
          (:func:`engine_hash`: the code computing the numbers) is refused: resumed rows would come from other
          code. Same engine code, other versions: only a warning (torch kernels may move a float's last bits).
        * Stored results of a different configuration, or of another study ``kind`` (attack / robust): refused.
        """
        manifest = self.manifest()
        stored = manifest.get("config_hash")
        there = manifest.get("kind") or ("attack" if self.count() else None)  # robust studies store artefacts only
        if there is not None and there != kind:  # another kind's results: never discarded
            raise LabelflipError(f"{self.path.parent} holds a {there} study, not a {kind} study: refusing to reuse "
                                 "it. Fix: choose another output directory (--out).")  # fmt: skip
        if self.count() == 0:
            if stored == config_hash:
                return  # nothing stored yet: no results to mix, whatever ran before
            if manifest or self._db.execute("SELECT COUNT(*) FROM artefacts").fetchone()[0]:
                log.warning(
                    "%s: no results were stored by the previous run (config hash %s); reusing the directory for "
                    "config %s and discarding that run's manifest and artefacts",
                    self.path.parent,
                    stored,
                    config_hash,
                )
            with self._transaction():
                self._db.execute("DELETE FROM manifest")
                self._db.execute("DELETE FROM artefacts")
                self._db.execute("INSERT INTO manifest VALUES (?, ?)", ("config_hash", json.dumps(config_hash)))
            return
        if stored is None:
            raise LabelflipError(
                f"{self.path} holds {self.count()} results but no configuration hash: it was not written by a "
                "labelflip study run. Fix: choose another output directory (--out)."
            )
        self.check_config(config_hash)
        if provenance is not None and "spec" in manifest:
            self._note_resume(manifest, provenance)

    def _note_resume(self, manifest: Mapping[str, Any], now: Mapping[str, Any]) -> None:
        """Compare the provenance of a resumed study with the stored one; warn, record, refuse a code change."""
        changed = {k: (manifest.get(k), now.get(k)) for k in PROVENANCE_KEYS if manifest.get(k) != now.get(k)}
        if manifest.get("engine_hash") is None:  # a store from before the engine hash: unknown, not a change
            changed.pop("engine_hash", None)
        if not changed:
            return
        if "engine_hash" in changed:
            then, current = changed["engine_hash"]
            raise LabelflipError(
                f"The study in {self.path.parent} was computed by different labelflip code (engine hash {then}, "
                f"labelflip {manifest.get('labelflip_version')}, git {manifest.get('git_hash')}; now {current}, "
                f"labelflip {now.get('labelflip_version')}, git {now.get('git_hash')}): its {self.count()} stored "
                "results and the ones a resume would add could differ. Refusing to mix them. Fix: resume with the "
                "labelflip that started it, or rerun the study into another output directory (--out)."
            )
        entry = {**{k: now.get(k) for k in PROVENANCE_KEYS}, "at": _dt.datetime.now(_dt.timezone.utc).isoformat()}
        history = [*manifest.get("resumed_with", []), entry]
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO manifest VALUES (?, ?)", ("resumed_with", json.dumps(history)))
        was, now_ = (", ".join(f"{k} {v[i]}" for k, v in changed.items()) for i in (0, 1))
        log.warning("%s: resuming a study started under %s (now %s), same engine code: recorded in resumed_with",
                    self.path.parent, was, now_)  # fmt: skip

    def init_manifest(self, manifest: Mapping[str, Any], config_hash: str) -> None:
        """Write the manifest once (the first run reaching its units; keys already stored are kept), or check that
        a stored study has the same config hash (refuse otherwise)."""
        self.check_config(config_hash)
        stored = self.manifest()
        if "spec" in stored:
            return
        with self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO manifest VALUES (?, ?)",
                [(k, json.dumps(v)) for k, v in {**manifest, "config_hash": config_hash}.items() if k not in stored],
            )

    def check_fingerprint(self, model: str, fingerprint: str | None) -> None:
        """Record a model's fingerprint, or refuse if the stored study used a different model."""
        key = f"fingerprint:{model}"
        row = self._db.execute("SELECT value FROM manifest WHERE key = ?", (key,)).fetchone()
        if row is not None and json.loads(row[0]) != fingerprint and not self.has_rows(model):
            # no stored result of this model: a changed model (fixed weights path, retrained) takes its place
            log.warning("%s: model %r changed, has no stored results; its artefacts are recomputed", self.path, model)
            with self._transaction():
                self._db.execute("DELETE FROM artefacts WHERE model = ?", (model,))
                self._db.execute("DELETE FROM manifest WHERE key = ?", (key,))
            row = None
        if row is None:
            with self._transaction():
                self._db.execute("INSERT INTO manifest VALUES (?, ?)", (key, json.dumps(fingerprint)))
        elif json.loads(row[0]) != fingerprint:
            raise LabelflipError(
                f"Model {model!r} differs from the one this study was run with (fingerprint {json.loads(row[0])} "
                f"stored, {fingerprint} now). Fix: restore the original model/weights or use another --out."
            )

    def has_rows(self, model: str) -> bool:
        """Whether any result of ``model`` is stored."""
        return self._db.execute("SELECT 1 FROM results WHERE model = ? LIMIT 1", (model,)).fetchone() is not None

    def put_artefact(self, model: str, kind: str, value: Mapping[str, Any]) -> None:
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO artefacts VALUES (?, ?, ?)", (model, kind, json.dumps(value)))

    def get_artefact(self, model: str, kind: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT value FROM artefacts WHERE model = ? AND kind = ?", (model, kind)).fetchone()
        return None if row is None else json.loads(row[0])

    # ------------------------------------------------------------------ results
    def _transaction(self) -> _Transaction:
        if self.readonly:
            raise LabelflipError(
                f"ResultsStore({self.path}) was opened with readonly=True and cannot be written. "
                "Fix: open it without readonly=True (only the run that holds the study lock writes a store)."
            )
        return _Transaction(self._db)

    def has_unit(self, model: str, method: str, seed: int, samples: Sequence[int], num_budgets: int) -> bool:
        """Whether every row of a unit is stored (units are written atomically, so any row means all)."""
        q = (
            "SELECT COUNT(*) FROM results WHERE model = ? AND method = ? AND seed = ? AND sample_index >= ? "
            "AND sample_index <= ?"
        )
        (count,) = self._db.execute(q, (model, method, seed, min(samples), max(samples))).fetchone()
        if count not in (0, len(samples) * num_budgets):
            raise LabelflipError(
                f"{self.path}: a partial unit ({count} rows) for {model}/{method}/seed {seed}; the store was "
                "written by another tool or corrupted. Fix: delete the output directory and rerun."
            )
        return count > 0

    def write_unit(
        self, rows: Iterable[ResultRow], *, artefacts: Mapping[tuple[str, str], Mapping[str, Any]] | None = None
    ) -> None:
        """Insert all rows of one unit, and artefacts that belong to it (``{(model, kind): value}``), in a single
        transaction (a duplicate key aborts the whole unit)."""
        values = [astuple(r) for r in rows]
        placeholders = ", ".join("?" for _ in _COLUMNS)
        with self._transaction():
            self._db.executemany(f"INSERT INTO results ({', '.join(_COLUMNS)}) VALUES ({placeholders})", values)
            for (model, kind), value in (artefacts or {}).items():
                self._db.execute("INSERT OR REPLACE INTO artefacts VALUES (?, ?, ?)", (model, kind, json.dumps(value)))

    def merge_from(self, other: str | Path) -> int:
        """Copy the rows and artefacts of store ``other`` (a rank's shard) in one transaction; returns the rows
        added. Idempotent: a row whose key is already here is kept, never duplicated (units are merged whole)."""
        before, cols = self.count(), ", ".join(_COLUMNS)
        self._db.execute("ATTACH DATABASE ? AS shard", (str(other),))
        try:
            with self._transaction():
                self._db.execute(f"INSERT OR IGNORE INTO results ({cols}) SELECT {cols} FROM shard.results")
                self._db.execute("INSERT OR REPLACE INTO artefacts SELECT model, kind, value FROM shard.artefacts")
        finally:
            self._db.execute("DETACH DATABASE shard")
        return self.count() - before

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def rows(self, *, model: str | None = None, method: str | None = None) -> list[ResultRow]:
        q, args = "SELECT * FROM results", []
        conds = []
        if model is not None:
            conds.append("model = ?")
            args.append(model)
        if method is not None:
            conds.append("method = ?")
            args.append(method)
        if conds:
            q += " WHERE " + " AND ".join(conds)
        q += " ORDER BY model, method, seed, budget_index, sample_index"
        return [ResultRow(*r) for r in self._db.execute(q, args)]

    def array(self, model: str, method: str, seed: int, column: str = "flips") -> np.ndarray:
        """``(B, N)`` array of a numeric column for one model/method/seed (budgets x samples)."""
        if column not in ("flips", "flips_up", "flips_down", "linf", "l2", "elapsed_s", "eps", "steps"):
            raise LabelflipError(f"ResultsStore.array: unknown column {column!r}.")
        q = (
            f"SELECT budget_index, sample_index, {column} FROM results WHERE model = ? AND method = ? AND seed = ? "
            "ORDER BY budget_index, sample_index"
        )
        data = self._db.execute(q, (model, method, seed)).fetchall()
        if not data:
            return np.zeros((0, 0))
        b = max(r[0] for r in data) + 1
        n = max(r[1] for r in data) + 1
        out = np.full((b, n), np.nan)
        for bi, si, v in data:
            out[bi, si] = v
        return out

    def confidences(self, model: str, method: str, seed: int, budget_index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(clean, adversarial)`` confidences ``(N, K)`` at one budget."""
        q = (
            "SELECT clean_conf, adv_conf FROM results WHERE model = ? AND method = ? AND seed = ? AND budget_index = ? "
            "ORDER BY sample_index"
        )
        data = self._db.execute(q, (model, method, seed, budget_index)).fetchall()
        clean = np.stack([np.frombuffer(r[0], dtype=np.float32) for r in data]) if data else np.zeros((0, 0))
        adv = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in data]) if data else np.zeros((0, 0))
        return clean, adv

    # ------------------------------------------------------------------ export
    def export_csv(self, path: str | Path) -> Path:
        """All rows as CSV; confidence vectors as space-separated numbers."""
        path = Path(path)
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(_COLUMNS)
            for r in self.rows():
                vals = list(astuple(r))
                vals[_COLUMNS.index("clean_conf")] = " ".join(
                    f"{v:.6g}" for v in np.frombuffer(r.clean_conf, np.float32)
                )
                vals[_COLUMNS.index("adv_conf")] = " ".join(f"{v:.6g}" for v in np.frombuffer(r.adv_conf, np.float32))
                w.writerow(vals)
        return path

    def export_parquet(self, path: str | Path) -> Path:
        """All rows as Parquet (needs pyarrow: ``pip install labelflip[parquet]``); confidences as lists."""
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise LabelflipError(
                "Parquet export needs pyarrow. Fix: pip install 'labelflip[parquet]' (or pyarrow), or export CSV."
            ) from exc
        rows = self.rows()
        cols: dict[str, list[Any]] = {c: [] for c in _COLUMNS}
        for r in rows:
            for c, v in zip(_COLUMNS, astuple(r), strict=True):
                cols[c].append(np.frombuffer(v, np.float32).tolist() if c in ("clean_conf", "adv_conf") else v)
        pq.write_table(pa.table(cols), Path(path))
        return Path(path)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception (KeyboardInterrupt included)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
