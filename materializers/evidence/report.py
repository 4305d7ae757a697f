"""The self-contained HTML evidence report of an examination export.

One file, ``report.html``: inline CSS, inline SVG plots drawn in Python, no
script, no font, no image or stylesheet fetched from anywhere, so it opens
the same way on an examiner's air-gapped laptop in ten years. It shows what
the tables hold, for people: the summary (contract and its FINRA fields,
window, counts, how the events were verified), the freshness headroom of
every key over time, the violations, the reads served (by outcome and
role), the key events and the contracts in force. Element ids
(``summary``, ``headroom``, ``violations``, ``reads``, ``key-events``,
``contracts``) are stable for whoever checks a report mechanically.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from html import escape

from cachet.materializers.evidence.finra import FinraProfile
from cachet.materializers.evidence.records import VerificationSummary, Window, iso
from cachet.materializers.evidence.svg import Point, bar_chart, headroom_timeline
from cachet.materializers.evidence.tables import Table, Value

__all__ = ["MAX_ROWS", "render_report"]

# Tables longer than this show their first rows; the data files hold all.
MAX_ROWS = 500

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d1d1f;background:#fff}
header{background:#12284a;color:#fff;padding:20px 32px}
header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;opacity:.85}
main{padding:8px 32px 40px;max-width:1200px}
h2{border-bottom:2px solid #12284a;padding-bottom:4px;margin-top:32px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #d0d7e2;border-radius:6px;padding:10px 14px;min-width:120px}
.card b{display:block;font-size:22px}
.ok{color:#0a7a32}.bad{color:#b00020}.warn{color:#9a5b00}
table{border-collapse:collapse;margin:8px 0;font-size:12.5px}
th,td{border:1px solid #d0d7e2;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#eef2f8}
td.hash{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:11.5px}
.note{color:#555;font-size:12.5px}
"""


def _cell(column: str, value: Value) -> str:
    if value is None:
        return "<td></td>"
    text = "yes" if value is True else "no" if value is False else str(value)
    hashy = column.endswith(("hash", "_id", "fingerprint", "sha3_256")) and len(text) > 24
    shown = text[:16] + "…" if hashy else text
    klass = ' class="hash"' if hashy else ""
    return f'<td{klass} title="{escape(text)}">{escape(shown)}</td>'


def _table(table: Table, columns: Sequence[str], element_id: str) -> str:
    index = {c.name: i for i, c in enumerate(table.columns)}
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(_cell(c, row[index[c]]) for c in columns) + "</tr>"
        for row in table.rows[:MAX_ROWS]
    )
    more = (
        f'<p class="note">First {MAX_ROWS} of {len(table.rows)} rows; '
        f"every row is in {table.name}.*.</p>"
        if len(table.rows) > MAX_ROWS
        else ""
    )
    if not table.rows:
        return f'<p class="note" id="{element_id}-empty">None in the window.</p>'
    return (
        f'<table id="{element_id}" data-rows="{len(table.rows)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>{more}"
    )


def _card(label: str, value: object, klass: str = "") -> str:
    k = f' class="{klass}"' if klass else ""
    return f'<div class="card"><b{k}>{escape(str(value))}</b>{escape(label)}</div>'


def _series(reads: Table, violations: Table) -> dict[str, list[Point]]:
    series: dict[str, list[Point]] = {}
    for r in reads.dicts():
        headroom = r["headroom_ms"]
        if isinstance(headroom, int):
            series.setdefault(str(r["key_hash"]), []).append(
                Point(int(r["occurred_at_us"] or 0), headroom)
            )
    for v in violations.dicts():
        series.setdefault(str(v["key_hash"]), []).append(
            Point(int(v["occurred_at_us"] or 0), None, violation=True)
        )
    return series


def _supervisory(queue: Table | None) -> str:
    if queue is None:
        return ""
    return (
        f"<section><h2>Supervisory review queue, FINRA Rule 3110 ({len(queue.rows)})</h2>"
        '<p class="note">The contract requires a registered principal to review every '
        "violation; supervisory_review.* is the queue to sign off.</p>"
        + _table(
            queue,
            ["occurred_at", "reason", "key_hash", "node_id", "review_status"],
            "supervisory-review",
        )
        + "</section>"
    )


def render_report(
    *,
    profile: FinraProfile,
    window: Window,
    tables: Mapping[str, Table],
    summary: VerificationSummary,
    signer: str,
    created_at_us: int,
) -> str:
    """The report's HTML text."""
    reads, violations = tables["reads"], tables["violations"]
    transitions, keys, contracts = tables["transitions"], tables["key_events"], tables["contracts"]
    outcomes = Counter(str(v) for v in reads.column("outcome"))
    by_role = Counter(
        f"{role} {outcome}"
        for role, outcome in zip(reads.column("reader_role"), reads.column("outcome"), strict=True)
    )
    series = _series(reads, violations)
    refused = escape(str(summary.refused_by_status()))
    if summary.ok:
        verified = (
            f'<span class="ok">every exported event verified</span> ({summary.verified} events: '
            "seal signatures, Merkle leaves, hash chains, sequences; key statements under the "
            "trust anchor)"
        )
    elif summary.intact:
        verified = (
            f'<span class="ok">every exported event verified</span> ({summary.verified} events); '
            f'<span class="warn">{len(summary.unsealed)} records had no verified seal</span> when '
            "the log was read (on a live log, its tail awaiting its seal) and are not exported"
        )
    else:
        verified = (
            f'<span class="bad">{len(summary.refused)} records refused</span> and not exported '
            f"({refused}); {summary.verified} verified events exported"
        )
    finra = [
        ("Contract", profile.contract),
        ("Defined by", f"{profile.source.value} (SHA3-256 {profile.definition_hash or 'n/a'})"),
        ("Max staleness", f"{profile.max_staleness_ms} ms"),
        ("Regulatory classification", profile.regulatory_classification or "not set"),
        ("Books-and-records category (Rule 4511)", profile.books_and_records_category or "not set"),
        (
            "Supervisory review (Rule 3110)",
            "required" if profile.supervisory_review else "not required",
        ),
        (
            "Examination export format",
            profile.examination_export_format or "not set (CSV and JSONL)",
        ),
    ]
    finra_rows = "".join(
        f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in finra
    )
    role_rows = "".join(
        f"<tr><td>{escape(k)}</td><td>{n}</td></tr>" for k, n in sorted(by_role.items())
    )
    sections = [
        f'<header><h1>Examination evidence: contract <span id="contract-name">{escape(profile.contract)}'
        f"</span></h1><p>Window {iso(window.from_us)} to {iso(window.to_us)} (event time, UTC) · "
        f"exported {iso(created_at_us)} by {escape(signer)} · source {escape(summary.source)}</p></header><main>",
        '<section id="summary"><h2>Summary</h2><div class="cards">',
        _card("reads", len(reads.rows)),
        _card("hits", outcomes.get("HIT", 0)),
        _card("misses", outcomes.get("MISS", 0)),
        _card("violations", len(violations.rows), "bad" if violations.rows else "ok"),
        _card("transitions", len(transitions.rows)),
        _card("key events", len(keys.rows)),
        _card("contract definitions", len(contracts.rows)),
        f"</div><p>Verification: {verified}.</p>",
        '<p class="note">This report is one of the files the signed manifest lists: '
        "<code>cachet export verify DIR --anchor ANCHOR.json</code> proves, offline, that no file "
        "changed since the export was signed.</p>",
        f'<table id="finra">{finra_rows}</table></section>',
        '<section id="headroom"><h2>Freshness headroom per key</h2>'
        '<p class="note">Headroom = max staleness − age − view lag at the moment each read was '
        "served; below the dashed line a read would have been a violation. Red triangles mark "
        "violations (nothing was served).</p>",
        headroom_timeline(
            series,
            from_us=window.from_us,
            to_us=window.to_us,
            label_of={k: k[:12] + "…" for k in series},
        ),
        "</section>",
        f"<section><h2>Violations ({len(violations.rows)})</h2>",
        _table(
            violations,
            ["occurred_at", "reason", "detail", "key_hash", "node_id", "event_id"],
            "violations",
        ),
        "</section>",
        f"<section><h2>Reads served ({len(reads.rows)})</h2>",
        bar_chart(dict(sorted(by_role.items()))),
        f'<table id="reads-by-role"><thead><tr><th>role, outcome</th><th>reads</th></tr></thead>'
        f"<tbody>{role_rows}</tbody></table>",
        _table(
            reads,
            [
                "occurred_at",
                "outcome",
                "reason",
                "key_hash",
                "version",
                "age_ms",
                "headroom_ms",
                "view_lag_ms",
                "reader_role",
                "node_id",
            ],
            "reads",
        ),
        "</section>",
        f"<section><h2>Signing-key events ({len(keys.rows)})</h2>",
        _table(
            keys,
            [
                "occurred_at",
                "action",
                "identity",
                "key_set_id",
                "old_key_set_id",
                "effective_at_us",
                "revocation_reason",
                "anchor_signatures",
            ],
            "key-events",
        ),
        "</section>",
        f"<section><h2>Contracts in force ({len(contracts.rows)})</h2>",
        _table(
            contracts,
            [
                "occurred_at",
                "contract",
                "definition_sha3_256",
                "max_staleness_ms",
                "regulatory_classification",
                "books_and_records_category",
                "supervisory_review",
            ],
            "contracts",
        ),
        "</section>",
        f"<section><h2>Transition history ({len(transitions.rows)})</h2>",
        _table(
            transitions,
            [
                "occurred_at",
                "kind",
                "key_hash",
                "version",
                "from_state",
                "to_state",
                "authority",
                "reason",
            ],
            "transitions",
        ),
        "</section>",
        _supervisory(tables.get("supervisory_review")),
        "</main>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        # Nothing may be fetched: a report that loads a resource is not
        # self-contained, and one that runs script is not a document.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">"
        f"<title>Examination evidence: {escape(profile.contract)}</title>"
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(sections) + "\n</body></html>\n"
    )
