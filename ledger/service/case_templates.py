"""What the case page says and which forms it has: the forms' fields (read by the page and by the routes that
check what a form posts, :mod:`ledger.service.case_actions`) and the page's Jinja2 templates (autoescaped)."""

from __future__ import annotations

from dataclasses import dataclass

from caseledger.ledger.domain.case_parts import Status
from caseledger.ledger.domain.permissions import Operation
from caseledger.ledger.domain.values import MAX_BODY_CHARS, Channel

__all__ = ["FORMS", "PAGE", "SECTION", "FieldSpec", "FormSpec"]

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


_REASON = FieldSpec("reason", "Reason (kept in the case)", "textarea")
_NOTICE = FieldSpec("notice", "Notice to the customer", "textarea")
_CHANNELS = tuple(c.value for c in Channel)

FORMS: dict[str, FormSpec] = {f.action: f for f in (
    FormSpec("respond", O.RESPOND, "Send the answer",
             (FieldSpec("body", "Answer", "textarea", limit=MAX_BODY_CHARS),), "Response {id} sent", target="Q"),
    FormSpec("waive", O.ITEM_WAIVE, "Waive", (_REASON,), "Item {id} waived", target="Q"),
    FormSpec("keep", O.PROMISE_KEEP, "Mark kept", (FieldSpec("evidence", "Evidence", "textarea"),),
             "Promise {id} kept", target="P"),
    FormSpec("withdraw", O.PROMISE_WITHDRAW, "Withdraw", (_REASON, _NOTICE), "Promise {id} withdrawn", target="P"),
    FormSpec("approve", O.ACTION_APPROVE, "Approve", (FieldSpec("note", "Note", "textarea", required=False),),
             "Proposal {id} approved", target="X"),
    FormSpec("reject", O.ACTION_REJECT, "Reject", (_REASON,), "Proposal {id} rejected", target="X"),
    FormSpec("promise", O.PROMISE_MAKE, "Make the promise", (
        FieldSpec("kind", "Kind (callback, refund, credit …)", limit=40),
        FieldSpec("terms", "Terms: what exactly is promised", "textarea"),
        FieldSpec("due", "Due (your time)", "datetime", limit=40),
        FieldSpec("channel", "Made on", "select", choices=_CHANNELS, limit=40),
    ), "Promise {id} made"),
    FormSpec("handoff", O.CASE_HANDOFF, "Hand off", (
        FieldSpec("to", "To agent", required=False, limit=100),
        FieldSpec("team", "To team", required=False, limit=100),
        FieldSpec("note", "Note for the next agent", "textarea"),
    ), "Handed off ({id})"),
    FormSpec("status", O.CASE_STATUS, "Change the status", (
        FieldSpec("to", "New status", "select", choices=Status.ACTIVE, limit=40), _REASON, _NOTICE,
    ), "Status changed"),
    FormSpec("close", O.CASE_CLOSE, "Close the case", (_REASON, _NOTICE), "Case closed"),
    FormSpec("cancel", O.CASE_CANCEL, "Cancel the case", (_REASON, _NOTICE), "Case cancelled"),
    FormSpec("reopen", O.CASE_REOPEN, "Reopen the case", (_REASON, _NOTICE), "Case reopened"),
)}

# A whole-case form is shown while the case is active, except reopen (shown once it is closed or cancelled).
CASE_FORMS = ("handoff", "status", "close", "cancel")

SECTION = """\
{% macro when(dt) -%}
<time datetime="{{ clock.iso(dt) }}">{{ clock.when(dt) }}</time>
{%- endmacro %}
{% macro due(dt, open=True) -%}
{% if open and clock.is_overdue(dt) -%}
<span class="overdue">{{ when(dt) }} — <strong>{{ clock.overdue_word }}</strong>, {{ clock.relative(dt) }}</span>
{%- else -%}
{{ when(dt) }} — {{ clock.relative(dt) }}
{%- endif %}
{%- endmacro %}
{% macro action(name, target="") -%}
{% set spec = forms[name] %}
{% if viewer.may(spec.operation) %}
{% set fid = spec.form_id(target) %}
{% set f = form(fid) %}
<details class="act" id="details-{{ fid }}"{% if f.error %} open{% endif %}>
<summary>{{ spec.button }}{% if target %} {{ target }}{% endif %}</summary>
<form method="post" action="/cases/{{ case.reference }}/act/{{ name }}" id="form-{{ fid }}">
{{ hidden() }}<input type="hidden" name="target" value="{{ target }}">
{% if f.error %}<p class="error" id="{{ fid }}-error" role="alert">{{ f.error }}</p>{% endif %}
{% for field in spec.fields %}
{% set cid = fid ~ "-" ~ field.name %}
<p><label for="{{ cid }}">{{ field.label }}</label>
{% if field.kind == "textarea" %}
<textarea id="{{ cid }}" name="{{ field.name }}" rows="3"{% if field.required %} required{% endif %}>{{ f.values.get(field.name, "") }}</textarea>
{% elif field.kind == "select" %}
<select{{ attrs(cid, field.name) }}>
{% for choice in field.choices %}<option{% if f.values.get(field.name) == choice %} selected{% endif %}>{{ choice }}</option>{% endfor %}
</select>
{% elif field.kind == "datetime" %}
<input type="datetime-local" id="{{ cid }}" name="{{ field.name }}" value="{{ f.values.get(field.name, default_due) }}"{% if field.required %} required{% endif %}> <span class="muted">{{ viewer.zone }}</span>
{% else %}
<input type="text" id="{{ cid }}" name="{{ field.name }}" value="{{ f.values.get(field.name, "") }}"{% if field.required %} required{% endif %}>
{% endif %}
</p>
{% endfor %}
<p><button type="submit" id="{{ fid }}-submit">{{ spec.button }}{% if target %} {{ target }}{% endif %}</button></p>
</form>
</details>
{% endif %}
{%- endmacro %}
<h1><span id="reference">{{ case.reference }}</span> — {{ case.subject }}</h1>
<p id="case-facts">Status <b id="status">{{ case.status }}</b> · <span id="customer">{{ customer }}</span>
 · assignee {{ case.assignee or "-" }} · team {{ case.team or "-" }} · opened {{ when(case.opened_at) }}
 · follow-ups {{ case.follow_ups }}</p>
<section aria-labelledby="brief-heading"><h2 id="brief-heading">Handoff brief</h2>
<div id="brief">
{% if handoff %}
<p id="brief-handoff">Handed off by {{ handoff.by }} {{ when(handoff.at) }} ({{ clock.relative(handoff.at) }}) to
 {{ handoff.to_assignee or "nobody in particular" }}{% if handoff.to_team %}, team {{ handoff.to_team }}{% endif %}{% if handoff.note %}:
 “{{ handoff.note }}”{% else %}, without a note{% endif %}.</p>
{% endif %}
{% if brief.open_items %}
<p>The customer is waiting for an answer to {{ brief.open_items|length }} question(s):</p>
<ul>{% for i in brief.open_items %}<li>{{ i.item_id }} — “{{ i.text }}” (asked in {{ i.contact_id }})</li>{% endfor %}</ul>
{% else %}<p>Every question of the customer is answered or waived.</p>{% endif %}
{% if brief.open_promises %}
<p>Promised and not yet kept:</p>
<ul>{% for p in brief.open_promises %}<li>{{ p.promise_id }} — {{ p.terms }}, due {{ due(p.due_at) }}</li>{% endfor %}</ul>
{% else %}<p>No promise is open.</p>{% endif %}
{% if brief.last_contacts %}
<p>Last contact on each channel:
{% for c in brief.last_contacts %}{{ c.channel }} {{ when(c.received_at) }} (“{{ c.subject }}”){% if not loop.last %}; {% endif %}{% endfor %}.</p>
{% endif %}
</div></section>
<section aria-labelledby="deadlines-heading"><h2 id="deadlines-heading">Deadlines</h2>
{% if deadlines %}
<table id="deadlines"><thead><tr><th scope="col">for</th><th scope="col">deadline</th><th scope="col">due</th></tr></thead><tbody>
{% for target, what, at in deadlines %}<tr><td>{{ target }}</td><td>{{ what }}</td><td>{{ due(at) }}</td></tr>{% endfor %}
</tbody></table>
{% else %}<p class="muted" id="deadlines">none</p>{% endif %}
{% if missed %}
<table id="missed"><thead><tr><th scope="col">missed</th><th scope="col">target</th></tr></thead><tbody>
{% for kind, target in missed %}<tr><td>{{ kind }}</td><td>{{ target }}</td></tr>{% endfor %}</tbody></table>
{% else %}<p class="muted" id="missed">no deadline missed</p>{% endif %}
</section>
<section aria-labelledby="items-heading"><h2 id="items-heading">Items</h2>
{% if items %}
<table id="items"><thead><tr><th scope="col">item</th><th scope="col">question</th><th scope="col">status</th><th scope="col">answer</th></tr></thead><tbody>
{% for i in items %}
<tr id="item-{{ i.item_id }}"><td>{{ i.item_id }}</td><td>{{ i.text }}</td><td class="{{ 'open' if i.status == 'open' else 'done' }}">{{ i.status }}</td><td>
{% if i.answered_by %}{% set said = bodies.get(i.answered_by) %}{{ i.answered_by }}{% if case.recorded.get(i.answered_by) %}, {{ when(case.recorded[i.answered_by]) }}{% endif %}{% if said %}: “{{ said }}”{% endif %}
{% elif i.waived_reason %}waived: {{ i.waived_reason }}
{% elif active %}{{ action("respond", i.item_id) }}{{ action("waive", i.item_id) }}{% endif %}
</td></tr>
{% endfor %}
</tbody></table>
{% else %}<p class="muted" id="items">none</p>{% endif %}
</section>
<section aria-labelledby="promises-heading"><h2 id="promises-heading">Promises</h2>
{% if promises %}
<table id="promises"><thead><tr><th scope="col">promise</th><th scope="col">kind</th><th scope="col">terms</th><th scope="col">due</th><th scope="col">status</th><th scope="col">made</th></tr></thead><tbody>
{% for p in promises %}
<tr id="promise-{{ p.promise_id }}"><td>{{ p.promise_id }}</td><td>{{ p.kind }}</td><td>{{ p.terms }}</td><td>{{ due(p.due_at, p.status == "open") }}</td>
<td class="{{ 'open' if p.status == 'open' else 'done' }}">{{ p.status }}{% if p.closing_note %}: {{ p.closing_note }}{% endif %}</td>
<td>by {{ p.made_by }} on {{ p.channel }}{% if p.confirmation_id %}, confirmed in writing ({{ p.confirmation_id }}){% endif %}
{% if p.status == "open" and active %}{{ action("keep", p.promise_id) }}{{ action("withdraw", p.promise_id) }}{% endif %}</td></tr>
{% endfor %}
</tbody></table>
{% else %}<p class="muted" id="promises">none</p>{% endif %}
{% if active %}{{ action("promise") }}{% endif %}
</section>
<section aria-labelledby="proposals-heading"><h2 id="proposals-heading">Proposals of automation</h2>
{% if proposals %}
<table id="proposals"><thead><tr><th scope="col">proposal</th><th scope="col">rule</th><th scope="col">action</th><th scope="col">why</th><th scope="col">status</th></tr></thead><tbody>
{% for x in proposals %}
<tr id="proposal-{{ x.proposal_id }}"><td>{{ x.proposal_id }}</td><td>{{ x.rule_id }}</td><td>{{ x.action }}{% for k, v in x.params|dictsort %} {{ k }}={{ v }}{% endfor %}</td><td>{{ x.rationale }}</td>
<td>{{ x.status }}{% if x.decided_by %} by {{ x.decided_by }}{% endif %}
{% if x.status == "proposed" %}{{ action("approve", x.proposal_id) }}{{ action("reject", x.proposal_id) }}{% endif %}</td></tr>
{% endfor %}
</tbody></table>
{% else %}<p class="muted" id="proposals">none</p>{% endif %}
</section>
<section aria-labelledby="timeline-heading"><h2 id="timeline-heading">Customer timeline</h2>
{% if not viewer.names_customer %}<p class="muted">This case only: your role does not read the customer's other cases.</p>
{% elif context.others %}<p class="muted">This case and the customer's {{ context.others|length }} other case(s){% if context.more %} (and {{ context.more }} older){% endif %}, newest first.</p>{% endif %}
<ol id="timeline">
{% for e in timeline %}
{% set c = e.case %}
<li{% if c.reference != case.reference %} class="other-case"{% endif %}>{{ when(e.at) }} · <a href="/cases/{{ c.reference }}">{{ c.reference }}</a> ·
{% if e.kind == "contact" %}{% set k = e.contact %}
{{ "follow-up" if k.follow_up else "contact" }} {{ k.contact_id }} by {{ k.channel }}: “{{ k.subject }}”
{% if e["items"] %} — {% for i in e["items"] %}{{ i.item_id }} {{ i.status }}{% if not loop.last %}, {% endif %}{% endfor %}{% endif %}
{% if e.ack %}; acknowledged ({{ e.ack.message_id }}{% if e.ack.channel %} by {{ e.ack.channel }}{% endif %}){% if e.ack.delivered_at %}, delivered {{ when(e.ack.delivered_at) }}{% elif e.ack.failure %}, <span class="overdue">not delivered ({{ e.ack.failure }})</span>{% else %}, not delivered yet{% endif %}{% endif %}
{% else %}{% set m = e.message %}
{{ {"R": "response", "W": "written confirmation", "N": "notice"}[m.message_id[:1]] }} {{ m.message_id }}{% if m.channel %} by {{ m.channel }}{% endif %}{% if m.delivered_at %}, delivered {{ when(m.delivered_at) }}{% elif m.failure %}, <span class="overdue">not delivered ({{ m.failure }})</span>{% else %}, not delivered yet{% endif %}{% if m.read_by %}, read{% endif %}
{% endif %}
</li>
{% endfor %}
</ol>
</section>
<section aria-labelledby="contacts-heading"><h2 id="contacts-heading">Contacts</h2>
<table id="last-contacts"><caption>Last contact per channel</caption><thead><tr><th scope="col">channel</th><th scope="col">contact</th><th scope="col">received</th><th scope="col">subject</th></tr></thead><tbody>
{% for ch, c in last.items() %}<tr><td>{{ ch }}</td><td>{{ c.contact_id }}</td><td>{{ when(c.received_at) }}</td><td>{{ c.subject }}</td></tr>{% endfor %}
</tbody></table>
<table id="contacts"><caption>Contacts of this case</caption><thead><tr><th scope="col">contact</th><th scope="col">channel</th><th scope="col">message id</th><th scope="col">items</th></tr></thead><tbody>
{% for c in contacts %}<tr><td>{{ c.contact_id }}</td><td>{{ c.channel }}</td><td>{{ c.channel_message_id }}</td><td>{{ c.item_ids|join("; ") }}</td></tr>{% endfor %}
</tbody></table>
</section>
<section aria-labelledby="act-heading" id="act"><h2 id="act-heading">Act on the case</h2>
{% if active %}{% for name in case_forms %}{{ action(name) }}{% endfor %}
{% else %}{{ action("reopen") }}{% endif %}
</section>
"""

PAGE = """\
<!doctype html><html lang="{{ lang }}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ case.reference }} · caseledger</title><link rel="stylesheet" href="/live.css"></head>
<body data-csrf="{{ page.csrf }}">
<header><nav aria-label="caseledger"><a href="/">Queue</a></nav>
<p id="live-state" role="status">connecting…</p></header>
{% if page.flash %}<p id="flash" role="status">{{ page.flash }}</p>{% endif %}
{% if page.error %}<p id="form-error" role="alert">{{ page.error }}</p>{% endif %}
<main id="case" data-events="/cases/{{ case.reference }}/events?zone={{ viewer.zone|urlencode }}&amp;seen={{ case.version }}" data-version="{{ case.version }}">
{{ section }}
</main>
<script src="/live.js"></script></body></html>
"""
