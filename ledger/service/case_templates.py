"""Which forms the case page has: their fields, read by the page (``templates/case_form.html``) and by the routes
that check what a form posts (:mod:`ledger.service.case_actions`). Labels, buttons and flashes are English msgids
(``N_``), said in the agent's language where they are shown (:mod:`ledger.service.agent_language`)."""

from __future__ import annotations

from dataclasses import dataclass

from caseledger.ledger.domain.case_parts import Status
from caseledger.ledger.domain.permissions import Operation
from caseledger.ledger.domain.values import MAX_BODY_CHARS, Channel
from caseledger.ledger.service.agent_language import N_

__all__ = ["CASE_FORMS", "FORMS", "FieldSpec", "FormSpec"]

O = Operation  # noqa: E741 -- short: each form names one
TEXT_LIMIT = 4000  # characters of a reason, notice, note, terms or evidence typed in a form


@dataclass(frozen=True)
class FieldSpec:
    """One control of a form: its name (``NAME-FIELD`` is its id), label, kind, whether it is required, its limit."""

    name: str
    label: str
    kind: str = "text"  # "text", "textarea", "datetime" or "select" (a drop-down of ``choices``)
    required: bool = True
    limit: int = TEXT_LIMIT
    choices: tuple[str, ...] = ()
    default: str = ""  # a drop-down's choice when nothing was typed


@dataclass(frozen=True)
class FormSpec:
    """One action of the page: the command it posts to, under its operation, and the flash once it is done."""

    action: str
    operation: Operation
    button: str
    fields: tuple[FieldSpec, ...]
    done: str  # the flash, ``{id}`` the handle recorded or acted on
    target: str = ""  # the handle's letter (Q, P, X) when the form acts on one item, promise or proposal

    def form_id(self, target: str = "") -> str:
        return f"{self.action}-{target}" if target else self.action


_REASON = FieldSpec("reason", N_("Reason (kept in the case)"), "textarea")
_NOTICE = FieldSpec("notice", N_("Notice to the customer"), "textarea")
_CHANNELS = tuple(c.value for c in Channel)

FORMS: dict[str, FormSpec] = {f.action: f for f in (
    FormSpec("respond", O.RESPOND, N_("Send the answer"),
             (FieldSpec("body", N_("Answer"), "textarea", limit=MAX_BODY_CHARS),), N_("Response {id} sent"), target="Q"),
    FormSpec("waive", O.ITEM_WAIVE, N_("Waive"), (_REASON,), N_("Item {id} waived"), target="Q"),
    FormSpec("keep", O.PROMISE_KEEP, N_("Mark kept"), (FieldSpec("evidence", N_("Evidence"), "textarea"),),
             N_("Promise {id} kept"), target="P"),
    FormSpec("withdraw", O.PROMISE_WITHDRAW, N_("Withdraw"), (_REASON, _NOTICE), N_("Promise {id} withdrawn"), target="P"),
    FormSpec("approve", O.ACTION_APPROVE, N_("Approve"), (FieldSpec("note", N_("Note"), "textarea", required=False),),
             N_("Proposal {id} approved"), target="X"),
    FormSpec("reject", O.ACTION_REJECT, N_("Reject"), (_REASON,), N_("Proposal {id} rejected"), target="X"),
    FormSpec("promise", O.PROMISE_MAKE, N_("Make the promise"), (
        FieldSpec("kind", N_("Kind (callback, refund, credit …)"), limit=40),
        FieldSpec("terms", N_("Terms: what exactly is promised"), "textarea"),
        FieldSpec("due", N_("Due (your time)"), "datetime", limit=40),
        FieldSpec("channel", N_("Made on"), "select", choices=_CHANNELS, limit=40, default="phone"),
    ), N_("Promise {id} made")),
    FormSpec("handoff", O.CASE_HANDOFF, N_("Hand off"), (
        FieldSpec("to", N_("To agent"), required=False, limit=100),
        FieldSpec("team", N_("To team"), required=False, limit=100),
        FieldSpec("note", N_("Note for the next agent"), "textarea"),
    ), N_("Handed off ({id})")),
    FormSpec("status", O.CASE_STATUS, N_("Change the status"), (
        FieldSpec("to", N_("New status"), "select", choices=Status.ACTIVE, limit=40), _REASON, _NOTICE,
    ), N_("Status changed")),
    FormSpec("close", O.CASE_CLOSE, N_("Close the case"), (_REASON, _NOTICE), N_("Case closed")),
    FormSpec("cancel", O.CASE_CANCEL, N_("Cancel the case"), (_REASON, _NOTICE), N_("Case cancelled")),
    FormSpec("reopen", O.CASE_REOPEN, N_("Reopen the case"), (_REASON, _NOTICE), N_("Case reopened")),
)}

# A whole-case form is shown while the case is active, except reopen (shown once it is closed or cancelled).
CASE_FORMS = ("handoff", "status", "close", "cancel")
