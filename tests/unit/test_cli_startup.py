"""Issue 27, "a CLI that answers at once": what ``caseledger --help`` and ``case show`` import.

Findings: ``caseledger --help`` took 0.62–0.88 s because importing ``caseledger.cli.app`` imported
every command module and, through them, the whole ledger (eventsourcing, Avro, the service); ``case
show`` 1.1–1.5 s. Times are measured by ``caseledger bench cli`` (not here: a loaded machine would
make a timed test lie); these tests guard what is imported, the cause.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from caseledger.cli.app import COMMAND_ORDER, COMMANDS, app

#: What a help screen has no use for: the store's framework, Avro, crypto, drivers, Kafka, the service, texts.
HEAVY = ("eventsourcing", "fastavro", "cryptography", "psycopg", "kafka", "confluent_kafka", "fastapi", "starlette",
         "uvicorn", "httpx", "jwt", "pydantic", "jinja2", "babel", "holidays", "sqlite3", "pyarrow", "duckdb",
         "polars", "pandas", "matplotlib",
         "caseledger.ledger.application", "caseledger.ledger.core", "caseledger.ledger.store",
         "caseledger.ledger.avro", "caseledger.ledger.service", "caseledger.projections")


def imported_by(*argv: str, tmp_path: Path) -> set[str]:
    """The modules a fresh interpreter holds after running ``caseledger ARGV`` (its exit ignored)."""
    script = ("import json, sys\n"
              "from caseledger.cli.app import main\n"
              f"sys.argv = ['caseledger', *{list(argv)!r}]\n"
              "try:\n    main()\nexcept SystemExit:\n    pass\n"
              "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "COLUMNS": "120"}, timeout=120, check=False)
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_help_imports_none_of_the_ledger_nor_any_command_module(tmp_path: Path) -> None:
    """Finding: ``caseledger --help`` imported everything (0.62–0.88 s); now typer and the root only."""
    modules = imported_by("--help", tmp_path=tmp_path)
    assert heavy(modules) == []
    assert sorted(m for m in modules if m.startswith("caseledger.cli.") and m.endswith("_commands")) == []


def test_case_show_imports_its_own_group_only(tmp_path: Path) -> None:
    """Finding: every command paid for all the others (``caseledger.cli.app`` alone took 0.5 s to import)."""
    modules = imported_by("--database", str(tmp_path / "l.sqlite"), "case", "show", "CL-AAAAA-AAAAA",
                          tmp_path=tmp_path)
    assert sorted(m for m in modules if m.startswith("caseledger.cli.") and m.endswith("_commands")) == [
        "caseledger.cli.case_commands"]
    # Nor the service, Kafka, the policy's calendar (the holidays of 250 countries): a case is shown as recorded;
    # nor pydantic, which typer would import to hand over a text unchanged (cli/command_tree.py, plain_values).
    assert sorted(m for m in modules if m.split(".")[0] in ("fastapi", "uvicorn", "kafka", "holidays", "pydantic")) == []


def test_the_codec_fingerprints_every_schema_version_as_fastavro_does() -> None:
    """The codec's CRC-64-AVRO (its table built once: it fingerprints ~300 schema versions as a ledger opens)."""
    from fastavro.schema import fingerprint as fastavro_fingerprint
    from fastavro.schema import to_parsing_canonical_form

    from caseledger.ledger.avro.codec import AvroEventCodec, fingerprint, parse_event_schema

    versions = AvroEventCodec()._versions
    assert len(versions) > 100
    for _name, text, _fps, envelope in versions:
        canonical = to_parsing_canonical_form(parse_event_schema(text, envelope))
        assert fingerprint(canonical) == fastavro_fingerprint(canonical, "CRC-64-AVRO")
    assert fingerprint("") == fastavro_fingerprint("", "CRC-64-AVRO")


@pytest.mark.parametrize("entry", COMMANDS, ids=[e.name for e in COMMANDS])
def test_each_entry_lists_its_command_as_the_command_itself_would(entry: object) -> None:
    """The line and panel --help shows without importing a command are those of the command itself."""
    built = entry.build()  # type: ignore[attr-defined]
    stub = entry.stub()  # type: ignore[attr-defined]
    first = inspect.cleandoc(built.help or "").split("\n\n")[0]
    assert (stub.name, stub.help, stub.rich_help_panel, stub.hidden, stub.deprecated) == (
        built.name, first, built.rich_help_panel, built.hidden, built.deprecated)


def test_the_root_lists_every_command_in_its_order_and_runs_them() -> None:
    assert set(COMMAND_ORDER) <= {e.name for e in COMMANDS}
    shown = CliRunner().invoke(app, ["--help"], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    for entry in COMMANDS:
        assert entry.name in shown.output
    assert CliRunner().invoke(app, ["version"]).exit_code == 0
    unknown = CliRunner().invoke(app, ["cas", "show"])
    assert unknown.exit_code == 2 and "case" in unknown.output  # typer still suggests the near names
