"""Admin API operations on the audit log and the compliance report (contract §7, §12).

- ``GET /api/v1/audit``: events matching ``type`` (a prefix: ``rollout.`` is the family),
  ``actor``, ``resource``, ``severity``, ``since`` (inclusive) and ``until`` (exclusive,
  RFC 3339), oldest first (``order=desc``: newest first). Keyset pagination on ``seq``:
  ``limit`` (1..1000, default 100) events and ``next_cursor``; pass it back as ``cursor``
  with the same filters for the next page, ``null`` when there is none. Walking the pages
  returns every matching event exactly once, even while events are appended.
- ``GET /api/v1/audit/verify``: ``{"ok", "checked", "first_bad_event"}``.
- ``GET /api/v1/audit/export?format=json|jsonl|yaml|csv`` and the same filters: streamed
  in chunks, so a large log never sits in memory.
- ``GET /api/v1/reports/compliance?since=&until=``: see :mod:`control.compliance`.

Reading an export or a report is itself audited as ``data.access`` (actor, what was read,
format, filters), in its own transaction *before* the data is read; the export or
report then covers the log up to the event before it (``max_seq``), so what was handed
out is exactly the log as it stood when the access was recorded. Queries and verification
are not audited: they are how the log is browsed and checked, and auditing every page
would flood the log with its own reads. Unknown or repeated query parameters are 422s
naming the parameter, as are bad values.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from control.api import ApiRoute, QueryParam, actor_of
from control.audit import (
    AuditEvent,
    AuditFilters,
    EventType,
    ExportFormat,
    check_known,
    format_ts,
    parse_filters,
    parse_page,
    parse_rfc3339,
)
from control.auth import Role
from control.compliance import compliance_report
from control.store import Store
from proxy.app import STATE
from proxy.errors import InvalidInputError, StoreError

log = logging.getLogger("splitway.audit")

FILTERS = ("type", "actor", "resource", "severity", "since", "until")
MEDIA_TYPES = {
    ExportFormat.JSON: "application/json",
    ExportFormat.JSONL: "application/x-ndjson",
    ExportFormat.YAML: "application/yaml",
    ExportFormat.CSV: "text/csv",
}
FLUSH_BYTES = 64 * 1024
REPORT_FAMILIES = ("model.", "rollout.rolled_back", "security.violation")


class EventBody(BaseModel):
    """One audit event (contract §12); ``seq`` is its position in the chain."""

    model_config = ConfigDict(extra="forbid")
    seq: int
    id: str
    ts: str
    type: EventType
    actor: str
    severity: str
    resource: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


class UnreadableBody(BaseModel):
    """A stored row that is not a well-formed event (tampering): its columns as stored,
    ``details`` as the stored text, and why it cannot be read (see ``control.audit.rows``)."""

    seq: int | None
    id: str | None
    ts: str | None
    type: str | None
    actor: str | None
    severity: str | None
    resource: str | None
    details: str | None
    prev_hash: str | None
    hash: str | None
    unreadable: str


class EventPage(BaseModel):
    events: list[EventBody | UnreadableBody]
    next_cursor: str | None


class VerifyBody(BaseModel):
    ok: bool
    checked: int
    first_bad_event: str | None
    reason: str | None = None  # why the first bad event is bad


class ComplianceBody(BaseModel):
    """See :meth:`control.compliance.ComplianceReport.to_json`."""

    period: dict[str, str | None]
    generated_at: str
    compliant: bool
    verification: VerifyBody
    counts: dict[str, int]
    production_changes: list[dict[str, Any]]
    production_exits: list[dict[str, Any]]
    rollbacks: list[dict[str, Any]]
    security_violations: list[dict[str, Any]]


def _store(request: web.Request) -> Store:
    store = request.app[STATE].store
    if store is None:
        raise StoreError("the state store is not open")
    return store


def _params(request: web.Request, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query string as a dict; unknown or repeated parameters are 422s."""
    check_known(request.query, allowed)
    for name in request.query:
        if len(request.query.getall(name)) > 1:
            raise InvalidInputError(f"{name}: given more than once", field=name)
    return dict(request.query)


def _filters_json(filters: Mapping[str, Any]) -> dict[str, str]:
    return {k: format_ts(v) if isinstance(v, datetime) else str(v) for k, v in filters.items()}


def _time(value: datetime | str | None) -> datetime | None:
    return value if value is None or isinstance(value, datetime) else parse_rfc3339(value, "")


async def _record_access(request: web.Request, resource: str, details: dict[str, Any]) -> int:
    """Audit a read as ``data.access``; the newest seq the read may include."""
    event = await _store(request).audit.record(
        EventType.DATA_ACCESS, actor_of(request), resource,
        {**details, "remote": request.remote})  # fmt: skip
    return event.seq - 1


async def list_events(request: web.Request) -> web.Response:
    params = _params(request, (*FILTERS, "limit", "cursor", "order"))
    filters, page = parse_filters(params), parse_page(params)
    events = await _store(request).audit.read(  # unreadable rows too, shown as stored
        limit=page.limit + 1, after=page.after, newest_first=page.newest_first, **filters)
    more = len(events) > page.limit
    events = events[: page.limit]
    return web.json_response({"events": [e.to_dict() for e in events],
                              "next_cursor": str(events[-1].seq) if more else None})


async def verify(request: web.Request) -> web.Response:
    _params(request, ())
    result = await _store(request).audit.verify()
    if not result.ok:
        log.warning("audit chain broken at %s: %s", result.first_bad_event, result.reason)
    return web.json_response(result.to_dict())


async def export(request: web.Request) -> web.StreamResponse:
    params = _params(request, (*FILTERS, "format"))
    try:
        fmt = ExportFormat(params.get("format", "json"))
    except ValueError:
        raise InvalidInputError("format: must be one of json, jsonl, yaml, csv",
                                field="format") from None
    filters = parse_filters(params)
    store = _store(request)
    filters["max_seq"] = await _record_access(request, "audit", {
        "what": "audit export", "format": str(fmt), "filters": _filters_json(filters)})
    stamp = format_ts(store.clock())[:19].replace(":", "")
    resp = web.StreamResponse(headers={
        "Content-Type": f"{MEDIA_TYPES[fmt]}; charset=utf-8",
        "Content-Disposition": f'attachment; filename="splitway-audit-{stamp}.{fmt}"',
        "Cache-Control": "no-store",
    })
    await resp.prepare(request)
    try:
        await _stream(resp, store, fmt, filters)
    except Exception:  # the status line is gone: cut the body short so it cannot pass
        log.exception("audit export failed part-way; closing the connection")
        if request.transport is not None:
            request.transport.close()
        return resp
    await resp.write_eof()
    return resp


async def _stream(resp: web.StreamResponse, store: Store, fmt: ExportFormat,
                  filters: AuditFilters) -> None:
    buf: list[str] = []
    size = 0
    async for chunk in store.audit.export_chunks(fmt, **filters):
        buf.append(chunk)
        size += len(chunk)
        if size >= FLUSH_BYTES:
            await resp.write("".join(buf).encode("utf-8"))
            buf, size = [], 0
    if buf:
        await resp.write("".join(buf).encode("utf-8"))


async def compliance(request: web.Request) -> web.Response:
    params = _params(request, ("since", "until"))
    period = parse_filters(params)
    store = _store(request)
    max_seq = await _record_access(request, "report/compliance", {
        "what": "compliance report", "filters": _filters_json(period)})
    verification = await store.audit.verify()
    events: list[AuditEvent] = []
    for family in REPORT_FAMILIES:
        scan: AuditFilters = {**period, "type": family, "max_seq": max_seq}
        events += [e async for e in store.audit.iter_events(**scan)]
    approvals: AuditFilters = {"type": "approval.", "max_seq": max_seq}
    if "until" in period:
        approvals["until"] = period["until"]
    events += [e async for e in store.audit.iter_events(**approvals)]
    report = compliance_report(events, verification, _time(period.get("since")),
                               _time(period.get("until")))
    return web.json_response(report.to_json())


def _filter_params(*extra: QueryParam) -> tuple[QueryParam, ...]:
    return (
        QueryParam("type", "event type or family prefix, e.g. rollout. or weights.changed"),
        QueryParam("actor", "who caused the event (a token's user)"),
        QueryParam("resource", "exact resource, e.g. route/sentiment or model/m@1.0.0"),
        QueryParam("severity", "info, warning or critical"),
        QueryParam("since", "RFC 3339 time, inclusive"),
        QueryParam("until", "RFC 3339 time, exclusive"),
        *extra,
    )


ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute("GET", "/api/v1/audit", list_events,
             "Query audit events (filters, keyset pagination on seq)", role=Role.VIEWER,
             tag="audit", response=EventPage, query=_filter_params(
                 QueryParam("limit", "events per page, 1..1000 (default 100)", type="integer"),
                 QueryParam("cursor", "next_cursor of the previous page"),
                 QueryParam("order", "asc (oldest first, default) or desc"))),
    ApiRoute("GET", "/api/v1/audit/verify", verify,
             "Verify the audit hash chain; names the first bad event", role=Role.VIEWER,
             tag="audit", response=VerifyBody),
    ApiRoute("GET", "/api/v1/audit/export", export,
             "Export audit events as json, jsonl, yaml or csv (streamed; audited as "
             "data.access)", role=Role.VIEWER, tag="audit",
             content_type=", ".join(MEDIA_TYPES.values()), query=_filter_params(
                 QueryParam("format", "json (default), jsonl, yaml or csv"))),
    ApiRoute("GET", "/api/v1/reports/compliance", compliance,
             "Compliance report for a period (audited as data.access)", role=Role.VIEWER,
             tag="audit", response=ComplianceBody, query=(
                 QueryParam("since", "RFC 3339 time, inclusive (default: the log's start)"),
                 QueryParam("until", "RFC 3339 time, exclusive (default: now)"))),
)
