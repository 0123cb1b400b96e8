"""``caseledger export events``: every event of the log as Parquet, one folder per event type, one manifest.

Layout of the output folder::

    manifest.json                       what is there: positions covered, schemas, files, counts, hashes
    ContactReceived/part-00001.parquet  the events of one type exported by one run, in store order
    PromiseBroken/part-00001.parquet
    ...

One folder per event type rather than one file with a union: each type keeps flat, typed columns
(``PromiseBroken.reason`` a string, ``ContactReceived.items`` a list of structs) that DuckDB, polars
and pandas read as they are, where a struct per type would make every reader unpack a wide, mostly
null row. All types share the envelope's columns first, so ``read_parquet('out/*/*.parquet',
union_by_name = true)`` is the whole log.

A run reads its source in batches (never the whole log in memory) from where the manifest says the
last run stopped, writes one new part file per type it met, then replaces the manifest (written to a
temporary file, then renamed): a run that stops half-way leaves the previous manifest, and the next
run removes the part files no manifest names before writing its own. The source is the store's
notification log or the events topic (the projections' sources); positions are the source's own
(the store: the last notification id exported; the topic: the next offset of each partition).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from caseledger.ledger.avro.codec import AvroEventCodec
from caseledger.ledger.errors import ConfigurationError, ValidationError
from caseledger.ledger.private_files import open_private
from caseledger.ledger.reports.event_table import Personal, TypeTable

try:
    import pyarrow.parquet as pq
except ImportError:  # an extra: say which
    raise ConfigurationError("exporting events as Parquet needs pyarrow: pip install 'caseledger[analytics]'") from None

__all__ = ["FORMAT", "MANIFEST", "ExportSummary", "export_events", "read_manifest"]

FORMAT = "caseledger.events.parquet/1"
MANIFEST = "manifest.json"
ROWS_PER_GROUP = 20_000


class SourceRecordLike(Protocol):
    part: int
    next_position: int
    store_position: int
    event_type: str
    data: bytes


class Source(Protocol):
    """What the export reads: the projections' event sources (``caseledger.projections.sources``) are."""

    name: str

    def start(self, positions: Mapping[int, int]) -> None: ...
    def fetch(self, max_records: int, timeout_s: float) -> list[Any]: ...
    def end_positions(self) -> dict[int, int]: ...
    def consumed_positions(self) -> dict[int, int]: ...


@dataclass
class ExportSummary:
    """What one run did (``--json`` prints it)."""

    out: str
    source: str
    personal: str
    events: int
    counts: dict[str, int]
    files: list[str]
    positions: dict[str, int]
    total_events: int
    seconds: float
    events_per_s: float
    from_position: int | None = None
    skipped: int = 0

    def as_json(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class _Open:
    """One type's part file being written by this run."""

    table: TypeTable
    path: Path
    temporary: Path
    writer: Any
    handle: Any
    rows: list[dict[str, Any]] = field(default_factory=list)
    count: int = 0
    first: int | None = None
    last: int | None = None
    hashes: Any = field(default_factory=hashlib.sha256)


def read_manifest(out: Path) -> dict[str, Any] | None:
    """The manifest of an export folder, None if there is none yet."""
    path = out / MANIFEST
    if not path.exists():
        return None
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValidationError(f"{path}: not a readable export manifest ({error}); export to a new folder") from None
    if manifest.get("format") != FORMAT:
        raise ValidationError(f"{path}: not a caseledger events export ({manifest.get('format')!r}); "
                              "export to a new folder")
    return manifest


def export_events(
    source: Source, out: Path, *, codec: AvroEventCodec, personal: Personal, from_position: int | None = None,
    batch: int = 5_000, progress: Callable[[int, int, float], None] | None = None, idle_s: float = 5.0,
    preload: Callable[[list[bytes]], None] | None = None,
) -> ExportSummary:
    """Export what ``source`` holds past the manifest's positions (or from store position ``from_position``).

    ``personal`` says what becomes of sealed fields; ``preload`` loads the data keys of a batch at once.
    ``progress(events so far, events expected, seconds)`` is called after each batch.
    """
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    mode = "opened" if personal.opened else "withheld"
    manifest = read_manifest(out)
    if manifest is None:
        manifest = {"format": FORMAT, "source": source.name, "personal": mode, "from_position": from_position,
                    "positions": {}, "events": 0, "counts": {}, "schemas": {}, "files": [], "runs": []}
    else:
        _check_resume(manifest, source.name, mode, from_position, out)
        from_position = manifest.get("from_position")
    _remove_unlisted(out, manifest)
    positions = {int(part): int(p) for part, p in manifest["positions"].items()}
    if not positions and from_position is not None and source.name == "store":
        positions = {0: max(0, from_position - 1)}  # the store's position is the last notification read
    source.start(positions)
    ends = source.end_positions()
    expected = sum(max(0, end - positions.get(part, 0)) for part, end in ends.items())
    run = len(manifest["runs"]) + 1
    tables: dict[str, TypeTable] = {}
    opened: dict[str, _Open] = {}
    done = skipped = 0
    idle_since: float | None = None
    try:
        while _behind(source.consumed_positions() or positions, ends):
            records = source.fetch(batch, 0.5)
            if not records:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > idle_s:
                    break  # the source holds no more than this (a topic with fewer records than its offsets say)
                continue
            idle_since = None
            if preload is not None:
                preload([r.data for r in records])
            for record in records:
                positions[record.part] = record.next_position
                if from_position is not None and record.store_position < from_position:
                    skipped += 1
                    continue
                part = opened.get(record.event_type)
                if part is None:
                    table = tables.get(record.event_type) or TypeTable(codec, record.event_type, personal)
                    tables[record.event_type] = table
                    part = opened[record.event_type] = _open(out, table, run)
                decoded = codec.decode_plain(record.event_type, record.data)
                digest = hashlib.sha256(record.data).digest()
                part.rows.append(part.table.row(record.store_position, digest, decoded))
                part.hashes.update(digest)
                part.first = record.store_position if part.first is None else part.first
                part.last = record.store_position
                part.count += 1
                if len(part.rows) >= ROWS_PER_GROUP:
                    _flush(part)
                done += 1
            if progress is not None:
                progress(done, expected, time.monotonic() - started)
        files = [_close(part) for part in opened.values()]
    except BaseException:
        for part in opened.values():
            _abandon(part)
        raise
    for name, part in opened.items():
        manifest["counts"][name] = manifest["counts"].get(name, 0) + part.count
        manifest["schemas"][name] = {"fingerprint": part.table.fingerprint,
                                     "columns": [f.name for f in part.table.schema]}
    manifest["files"].extend(files)
    manifest["events"] += done
    manifest["positions"] = {str(part): p for part, p in sorted(positions.items())}
    manifest["covered"] = _covered(manifest["files"])
    seconds = time.monotonic() - started
    manifest["runs"].append({"run": run, "at": datetime.now(UTC).isoformat(timespec="seconds"), "events": done,
                             "seconds": round(seconds, 3), "positions": manifest["positions"]})
    _write_manifest(out, manifest)
    return ExportSummary(
        out=str(out), source=source.name, personal=mode, events=done,
        counts={name: part.count for name, part in sorted(opened.items())}, files=[f["path"] for f in files],
        positions=manifest["positions"], total_events=manifest["events"], seconds=round(seconds, 3),
        events_per_s=round(done / seconds) if seconds > 0 else 0, from_position=from_position, skipped=skipped,
    )


def _behind(positions: Mapping[int, int], ends: Mapping[int, int]) -> bool:
    return any(positions.get(part, 0) < end for part, end in ends.items())


def _check_resume(manifest: dict[str, Any], source: str, mode: str, from_position: int | None, out: Path) -> None:
    if manifest["source"] != source:
        raise ValidationError(f"{out} was exported from {manifest['source']}, not {source}: its positions are that "
                              "source's; resume with the same --source, or export to a new folder")
    if manifest["personal"] != mode:
        raise ValidationError(f"{out} holds personal data {manifest['personal']}, this run would write it {mode}: "
                              "resume as it was started, or export to a new folder")
    if from_position is not None and from_position != manifest.get("from_position"):
        raise ValidationError(f"{out} already holds an export (up to the positions {manifest['positions']}); "
                              "--from-position starts a new one: run again without it to add what is new, "
                              "or export to a new folder")


def _remove_unlisted(out: Path, manifest: dict[str, Any]) -> None:
    """Part files no manifest names: written by a run that stopped before its manifest."""
    listed = {f["path"] for f in manifest["files"]}
    for path in out.glob("*/*.parquet"):
        if path.relative_to(out).as_posix() not in listed:
            path.unlink()
    for path in out.glob("*/.*.tmp"):
        path.unlink()


def _open(out: Path, table: TypeTable, run: int) -> _Open:
    folder = out / table.name
    folder.mkdir(exist_ok=True)
    path = folder / f"part-{run:05d}.parquet"
    temporary = folder / f".part-{run:05d}.parquet.tmp"
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    handle = os.fdopen(open_private(temporary), "wb")  # it may hold personal data: the owner's alone
    writer = pq.ParquetWriter(handle, table.schema, compression="zstd")
    return _Open(table, path, temporary, writer, handle)


def _flush(part: _Open) -> None:
    if part.rows:
        part.writer.write_batch(part.table.batch(part.rows), row_group_size=ROWS_PER_GROUP)
        part.rows = []


def _close(part: _Open) -> dict[str, Any]:
    _flush(part)
    part.writer.close()
    part.handle.close()
    os.replace(part.temporary, part.path)
    digest = hashlib.sha256()
    with part.path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"path": f"{part.table.name}/{part.path.name}", "event_type": part.table.name, "rows": part.count,
            "first_position": part.first, "last_position": part.last, "sha256": digest.hexdigest(),
            "rows_sha256": part.hashes.hexdigest()}


def _abandon(part: _Open) -> None:
    with contextlib.suppress(Exception):
        part.writer.close()
    with contextlib.suppress(Exception):
        part.handle.close()
    with contextlib.suppress(FileNotFoundError):
        part.temporary.unlink()


def _covered(files: list[dict[str, Any]]) -> dict[str, int | None]:
    firsts = [f["first_position"] for f in files if f["first_position"] is not None]
    lasts = [f["last_position"] for f in files if f["last_position"] is not None]
    return {"first_position": min(firsts, default=None), "last_position": max(lasts, default=None)}


def _write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    temporary = out / f".{MANIFEST}.tmp"
    with os.fdopen(open_private(temporary), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(temporary, out / MANIFEST)
