"""``caseledger demo``: the field's stories (S1–S11, the README's table) played through a real ledger.

Each story calls the ledger's commands on a fresh SQLite file (or an empty database the user
names) with a simulated clock, then shows what it returned from three points of view:

* **Customer sees** — acknowledgements, responses, written confirmations, notices;
* **Agent sees** — the case state an agent works from;
* **Auditor sees** — the events the story recorded, one line each, read back from the store.

The clock starts on Monday 2 March 2026 at 09:00 in Paris and is moved by hand between steps,
so every run prints the same story; only the random case references and the receipts (signed with a key
made for the run when none is configured, salted at random) differ.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.rule import Rule
from rich.text import Text

from caseledger.cli.common import environment
from caseledger.cli.demo_show import CUSTOMER_ID, START, TITLES, Demo, SimulatedClock, at, plural
from caseledger.cli.demo_stories import STORIES
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.catalog import topic_of
from caseledger.ledger.errors import ConfigurationError
from caseledger.ledger.settings import LedgerSettings

__all__ = ["TITLES", "SimulatedClock", "run_demo"]


# -- running it ------------------------------------------------------------------------------------------


DEMO_KEY_NAME = "banque-exemple.fr/reclamations"


def demo_signing_key() -> str:
    """A new Ed25519 signing key for one demo's log, held in memory only (the signed-note private key text)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    from caseledger.ledger.transparency.checkpoint_key import CheckpointSigner

    seed = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return CheckpointSigner(DEMO_KEY_NAME, seed).private_text()


def open_fresh_ledger(database: str, clock: SimulatedClock) -> CaseLedger:
    """A ledger on ``database``, refused (ConfigurationError) when it already holds events."""
    # The demo's bank handles complaints under the shipped ACPR 2022-R-01 policy, in French.
    # Its events are marked simulated-clock, as under --now: an auditor can tell the demo from real work.
    # Its log is signed (checkpoints, the receipts customers keep): with the configured key, else one made for it.
    settings = environment()
    if not (settings.transparency.signing_key_file or settings.transparency.signing_key):
        settings = dataclasses.replace(settings, transparency=dataclasses.replace(
            settings.transparency, signing_key=demo_signing_key()))
    ledger = CaseLedger(LedgerSettings.resolve(database=database, policy="acpr-2022-r-01", settings=settings),
                        clock=clock,
                        simulated_clock=True)
    held = ledger.recorder.max_notification_id() or 0
    if held:
        where = ledger.settings.store.describe()
        ledger.close()
        raise ConfigurationError(
            f"{where} already holds {held} events; the demo needs an empty ledger — give a new file "
            "with --database, or none to use a temporary one"
        )
    return ledger


def summary(demo: Demo) -> str:
    recorder = demo.ledger.recorder
    customers = recorder.select_notifications(start=1, limit=10_000, topics=[topic_of("CustomerRegistered")])
    cases = sum(1 for _ in demo.ledger.case_ids())
    return (f"{plural(demo.event_count(), 'event')} recorded, {plural(cases, 'case')}, "
            f"{plural(len(customers), 'customer')}")


def run_demo(console: Console, *, database: str | None = None, keep: bool = False) -> None:
    """Play stories S1–S7 and S9–S11 on a fresh ledger and show what each party sees.

    ``database`` names an empty store to use (refused if it holds events); without it the demo
    uses a SQLite file in a temporary directory, deleted at the end unless ``keep``.
    """
    tempdir = None if database else Path(tempfile.mkdtemp(prefix="caseledger-demo-"))
    path = database or str(Path(tempdir or ".") / "demo.sqlite")
    clock = SimulatedClock()
    try:
        ledger = open_fresh_ledger(path, clock)
        try:
            demo = Demo(console=console, ledger=ledger, clock=clock)
            console.print(Panel(
                Text.assemble(
                    ("caseledger demo", "bold"), " — one customer, Jane Martin (", CUSTOMER_ID, "), on every channel\n",
                    f"ledger: {ledger.settings.store.describe()}\n",
                    f"simulated clock from {at(START)} ({START:%Y-%m-%dT%H:%MZ}); times shown in Paris time",
                ),
                border_style="blue",
            ))
            for story in STORIES:
                story(demo)
            console.print()
            console.print(Rule(f"[bold]Done: {summary(demo)}[/]", align="left"))
        finally:
            ledger.close()
        if keep:
            console.print(Text(f"Kept the demo ledger: {path}"))
    finally:
        if tempdir is not None and not keep:
            shutil.rmtree(tempdir, ignore_errors=True)
