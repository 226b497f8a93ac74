"""What counts as a success for an experiment (pure).

* ``status_below: N`` — the response status is below N (default 500: no server error);
* ``header: NAME`` (+ ``equals: VALUE``) — the response header is present (equal to VALUE);
* ``json_field: PATH`` (+ ``equals``) — the JSON response body has a truthy value at PATH
  (dots and ``[i]``), or one equal to ``equals`` as a string. A body that is not JSON, or
  larger than the capture cap, is not a success.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from proxy.config import Success
from proxy.shadow_compare import at_path


@dataclass(frozen=True, slots=True)
class SuccessRule:
    status_below: int | None
    header: str | None
    json_field: str | None
    equals: str | None

    @classmethod
    def of(cls, cfg: Success) -> SuccessRule:
        return cls(cfg.status_below, cfg.header.lower() if cfg.header else None,
                   cfg.json_field, cfg.equals)

    @property
    def needs_body(self) -> bool:
        return self.json_field is not None

    def judge(self, status: int, headers: Mapping[str, str],
              body: bytes | bytearray | None) -> bool:
        if self.status_below is not None:
            return status < self.status_below
        if self.header is not None:
            value = headers.get(self.header)
            return value is not None and (self.equals is None or value == self.equals)
        if self.json_field is None or body is None:
            return False
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return False
        found, value = at_path(doc, self.json_field)
        if not found:
            return False
        if self.equals is not None:
            text = json.dumps(value) if not isinstance(value, str) else value
            return text == self.equals
        return bool(value)
