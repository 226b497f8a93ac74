"""The compliance report as Markdown, for people (``splitway audit report``).

It renders the report's JSON form (:meth:`control.compliance.ComplianceReport.to_json`,
the body of ``GET /api/v1/reports/compliance``), so the CLI, which only has the API's
answer, and the server print the same thing. Cells are escaped so that a justification
or detail containing ``|`` or a newline cannot break a table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def cell(value: Any) -> str:
    """One table cell: ``-`` for nothing, pipes escaped, lines joined."""
    if value is None or value == "" or value == []:
        return "-"
    text = str(value).replace("\\", "\\\\").replace("|", "\\|")
    return " ".join(text.split())


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def _approvers(items: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(f"{a.get('user')} ({a.get('at') or 'time unknown'})" for a in items)


def _section(title: str, items: Sequence[Any], body: list[str]) -> list[str]:
    out = ["", f"## {title} ({len(items)})", ""]
    return out + (body if items else ["None in this period."])


def render_markdown(report: Mapping[str, Any]) -> str:
    """The Markdown text of a compliance report given in its JSON form."""
    period = report.get("period", {})
    since = period.get("since") or "the beginning of the log"
    until = period.get("until") or "now"
    ver = report.get("verification", {})
    if ver.get("ok"):
        chain = f"**verified**: {ver.get('checked', 0)} events checked, the chain is intact."
    else:
        why = f" — {cell(ver['reason'])}" if ver.get("reason") else ""
        chain = (f"**BROKEN** at {ver.get('first_bad_event')}{why} ({ver.get('checked', 0)} "
                 "events checked): events from there on cannot be trusted.")
    verdict = "compliant" if report.get("compliant") else "NOT compliant"
    lines = [
        "# Compliance report",
        "",
        f"- Period: {since} to {until} (end exclusive)",
        f"- Generated: {report.get('generated_at')}",
        f"- Audit chain: {chain}",
        f"- Verdict: **{verdict}**",
        "",
        "## Summary",
        "",
        *table(("what", "count"), sorted(report.get("counts", {}).items())),
    ]

    changes = report.get("production_changes", [])
    rows = [(c["at"], f"{c['model']}@{c['version']}", c.get("from_stage"),
             c.get("requested_by"), c.get("requested_at"), _approvers(c.get("approved_by", [])),
             c.get("justification"), c.get("promotion_id"),
             "ok" if c.get("compliant") else "FLAGGED") for c in changes]
    body = table(("when", "version", "from", "requested by", "requested at", "approved by",
                  "justification", "promotion", "status"), rows)
    flagged = [c for c in changes if c.get("issues")]
    if flagged:
        body += ["", "Flagged:", ""]
        body += [f"- {c['event_id']} {c['model']}@{c['version']}: {cell(issue)}"
                 for c in flagged for issue in c["issues"]]
    lines += _section("Production changes", changes, body)

    exits = report.get("production_exits", [])
    lines += _section("Left production", exits, table(
        ("when", "version", "to", "by", "reason"),
        [(x["at"], f"{x['model']}@{x['version']}", x.get("to_stage"), x.get("actor"),
          x.get("reason")) for x in exits]))

    rollbacks = report.get("rollbacks", [])
    lines += _section("Rollbacks", rollbacks, table(
        ("when", "type", "what", "by", "reason"),
        [(r["at"], r.get("type"), r.get("target"), r.get("actor"), r.get("reason"))
         for r in rollbacks]))

    violations = report.get("security_violations", [])
    lines += _section("Security violations", violations, table(
        ("when", "actor", "resource", "severity", "count", "detail"),
        [(v["at"], v.get("actor"), v.get("resource"), v.get("severity"), v.get("count", 1),
          v.get("detail")) for v in violations]))
    return "\n".join(lines) + "\n"
