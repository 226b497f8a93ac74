"""Admin API operations on the audit log and the compliance report (contract §7, §12).

- ``GET /api/v1/audit``: events matching ``type`` (a type, or a family: ``rollout.``),
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
naming the parameter (:mod:`control.api.inputs`), as are values the query models below
refuse — the same models the OpenAPI document publishes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from control.api import ApiRoute, actor_of
from control.api.fields import DIGITS, FilterText, Params, Pattern, Time, one_of
from control.api.inputs import query_of
from control.audit import (
    AuditEvent,
    AuditFilters,
    EventType,
    ExportFormat,
    Severity,
    format_ts,
)
from control.auth import Role
from control.compliance import compliance_report
from control.store import Store
from proxy.app import STATE
from proxy.errors import StoreError

log = logging.getLogger("splitway.audit")

#: What ``type`` takes: an event type, or a family with or without its dot (``rollout.``).
TYPE_FILTERS = tuple(sorted({t.value for t in EventType}
                            | {t.value.partition(".")[0] + dot for t in EventType
                               for dot in ("", ".")}))
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
    reason: str | None = Field(None, description="why the first bad event is bad")


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


class PeriodQuery(Params):
    """``since`` (inclusive) and ``until`` (exclusive), RFC 3339 with an offset."""

    since: Time | None = Field(None, description="RFC 3339 time, inclusive")
    until: Time | None = Field(None, description="RFC 3339 time, exclusive; after since")

    @model_validator(mode="after")
    def _ordered(self) -> PeriodQuery:
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise PydanticCustomError("period", "must be later than since", {"field": "until"})
        return self


class FilterQuery(PeriodQuery):
    type: Annotated[str, one_of(TYPE_FILTERS)] | None = Field(
        None, description="an event type, or a family: rollout. (or rollout) matches "
                          "every rollout.* type")
    actor: FilterText | None = Field(None, description="who caused the event (a user)")
    resource: FilterText | None = Field(
        None, description="exact resource, e.g. route/sentiment or model/m@1.0.0")
    severity: Severity | None = None


Cursor = Annotated[str, Pattern(r"^[0-9]{1,18}$", "is not a cursor this API returned")]


class PageQuery(FilterQuery):
    limit: Annotated[int, Field(ge=1, le=1000), DIGITS] = Field(
        100, description="events per page")
    cursor: Cursor | None = Field(
        None, description="next_cursor of the previous page (same filters)")
    order: Literal["asc", "desc"] = Field("asc", description="asc: oldest first")


class ExportQuery(FilterQuery):
    format: ExportFormat = ExportFormat.JSON


class VerifyQuery(Params):
    """No parameters: any is refused."""


def _filters(q: PeriodQuery) -> AuditFilters:
    """The store's filters for a validated query."""
    f: AuditFilters = {}
    if isinstance(q, FilterQuery):
        if q.type is not None:  # a family without its dot still means the family
            f["type"] = q.type if "." in q.type else q.type + "."
        if q.actor is not None:
            f["actor"] = q.actor
        if q.resource is not None:
            f["resource"] = q.resource
        if q.severity is not None:
            f["severity"] = q.severity
    if q.since is not None:
        f["since"] = q.since
    if q.until is not None:
        f["until"] = q.until
    return f


def _store(request: web.Request) -> Store:
    store = request.app[STATE].store
    if store is None:
        raise StoreError("the state store is not open")
    return store


def _filters_json(filters: Mapping[str, Any]) -> dict[str, str]:
    return {k: format_ts(v) if isinstance(v, datetime) else str(v) for k, v in filters.items()}


async def _record_access(request: web.Request, resource: str, details: dict[str, Any]) -> int:
    """Audit a read as ``data.access``; the newest seq the read may include."""
    event = await _store(request).audit.record(
        EventType.DATA_ACCESS, actor_of(request), resource,
        {**details, "remote": request.remote})  # fmt: skip
    return event.seq - 1


async def list_events(request: web.Request) -> web.Response:
    q = query_of(request, PageQuery)
    events = await _store(request).audit.read(  # unreadable rows too, shown as stored
        limit=q.limit + 1, after=None if q.cursor is None else int(q.cursor),
        newest_first=q.order == "desc", **_filters(q))
    more = len(events) > q.limit
    events = events[: q.limit]
    return web.json_response({"events": [e.to_dict() for e in events],
                              "next_cursor": str(events[-1].seq) if more else None})


async def verify(request: web.Request) -> web.Response:
    result = await _store(request).audit.verify()
    if not result.ok:
        log.warning("audit chain broken at %s: %s", result.first_bad_event, result.reason)
    return web.json_response(result.to_dict())


async def export(request: web.Request) -> web.StreamResponse:
    q = query_of(request, ExportQuery)
    fmt, filters = q.format, _filters(q)
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
    q = query_of(request, PeriodQuery)
    period = _filters(q)
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
    report = compliance_report(events, verification, q.since, q.until)
    return web.json_response(report.to_json())


ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute("GET", "/api/v1/audit", list_events,
             "Query audit events (filters, keyset pagination on seq)", role=Role.VIEWER,
             tag="audit", response=EventPage, query=PageQuery,
             semantic=(("until", "later than since"),)),
    ApiRoute("GET", "/api/v1/audit/verify", verify,
             "Verify the audit hash chain; names the first bad event", role=Role.VIEWER,
             tag="audit", response=VerifyBody, query=VerifyQuery),
    ApiRoute("GET", "/api/v1/audit/export", export,
             "Export audit events as json (an array), jsonl, yaml or csv (streamed; audited "
             "as data.access)", role=Role.VIEWER, tag="audit", response=list[EventBody],
             content_type=", ".join(MEDIA_TYPES.values()), query=ExportQuery,
             semantic=(("until", "later than since"),)),
    ApiRoute("GET", "/api/v1/reports/compliance", compliance,
             "Compliance report for a period (audited as data.access)", role=Role.VIEWER,
             tag="audit", response=ComplianceBody, query=PeriodQuery,
             semantic=(("until", "later than since"),)),
)
