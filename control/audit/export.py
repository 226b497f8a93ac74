"""Audit records as json, jsonl, yaml or csv text, a piece at a time (streamable).

An export hands out evidence, so it never drops or hides a row: a row that is not a
well-formed event (see :mod:`control.audit.rows`) is exported *as stored* — its columns as
text (bytes that are not UTF-8 shown as ``\\xNN``), ``details`` as the stored text rather
than an object — with an ``unreadable`` field giving the reason. CSV has a trailing
``unreadable`` column for that, empty for every well-formed event.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import yaml

from control.audit.chain import AuditEvent, ExportFormat, canonical_json
from control.audit.rows import AuditRecord

CSV_COLUMNS = ("seq", "id", "ts", "type", "actor", "severity", "resource", "details",
               "prev_hash", "hash", "unreadable")  # fmt: skip


def _csv_line(values: list[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


def _csv_row(record: AuditRecord) -> str:
    data = record.to_dict()
    if isinstance(record, AuditEvent):
        data["details"] = canonical_json(record.details)
    return _csv_line([data.get(c, "") for c in CSV_COLUMNS])


async def export_chunks(records: AsyncIterable[AuditRecord], form: ExportFormat
                        ) -> AsyncIterator[str]:
    """``records`` in format ``form``, one chunk per record (plus the framing)."""
    first = True
    if form is ExportFormat.JSON:
        yield "["
    elif form is ExportFormat.CSV:
        yield _csv_line(list(CSV_COLUMNS))
    async for record in records:
        data = record.to_dict()
        if form is ExportFormat.JSON:
            yield ("\n" if first else ",\n") + json.dumps(data, ensure_ascii=False)
        elif form is ExportFormat.JSONL:
            yield json.dumps(data, ensure_ascii=False) + "\n"
        elif form is ExportFormat.YAML:
            yield yaml.safe_dump([data], sort_keys=False, allow_unicode=True)
        else:
            yield _csv_row(record)
        first = False
    if form is ExportFormat.JSON:
        yield "]\n" if first else "\n]\n"
    elif form is ExportFormat.YAML and first:
        yield "[]\n"
