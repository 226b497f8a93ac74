"""The promotion record: a request, its reviews and its comment thread, as stored and as
the admin API shows them.

Tables: ``promotions`` (one row per request; ``state`` pending/approved/rejected/
cancelled, ``closed_by``/``closed_at`` once final), ``promotion_reviews`` (one approval or
rejection per reviewer: primary key ``(promotion_id, reviewer)``) and
``promotion_comments`` (numbered per promotion). Ids are ``prm-`` and 12 hex digits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from control.approvals import Policy, PromotionFacts, PromotionState, Stage
from proxy.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from control.store import Row, Transaction

PROMOTION_ID_RE = re.compile(r"prm-[0-9a-f]{12}")


def check_promotion_id(value: str) -> str:
    """A well-formed promotion id, or a 422 naming ``id``."""
    if not PROMOTION_ID_RE.fullmatch(value):
        raise InvalidInputError(f"{value!r} is not a promotion id (prm-<12 hex>)", field="id")
    return value


@dataclass(frozen=True, slots=True)
class Review:
    """One approver's approval or rejection."""

    reviewer: str
    decision: str  # "approve" | "reject"
    comment: str | None
    at: str


@dataclass(frozen=True, slots=True)
class Comment:
    """One entry of a promotion's comment thread."""

    seq: int
    author: str
    body: str
    at: str


@dataclass(frozen=True, slots=True)
class Promotion:
    """A promotion request with its reviews and comment thread."""

    id: str
    model: str
    version: str
    from_stage: Stage
    to_stage: Stage
    justification: str
    requested_by: str
    requested_at: str
    state: PromotionState
    closed_by: str | None
    closed_at: str | None
    reviews: tuple[Review, ...] = ()
    comments: tuple[Comment, ...] = ()

    @property
    def approvals(self) -> tuple[Review, ...]:
        return tuple(r for r in self.reviews if r.decision == "approve")

    def facts(self) -> PromotionFacts:
        return PromotionFacts(
            self.id, self.from_stage, self.to_stage, self.requested_by, self.state,
            frozenset(r.reviewer for r in self.approvals),
            frozenset(r.reviewer for r in self.reviews))

    def to_dict(self, policy: Policy, *, thread: bool = True) -> dict[str, Any]:
        """The admin API's promotion document (``thread``: with the comments)."""
        doc: dict[str, Any] = {
            "id": self.id, "model": self.model, "version": self.version,
            "from_stage": str(self.from_stage), "to_stage": str(self.to_stage),
            "justification": self.justification, "requested_by": self.requested_by,
            "requested_at": self.requested_at, "state": str(self.state),
            "closed_by": self.closed_by, "closed_at": self.closed_at,
            "approvals": len(self.approvals), "required": policy.required_for(self.to_stage),
            "reviews": [{"reviewer": r.reviewer, "decision": r.decision,
                         "comment": r.comment, "at": r.at} for r in self.reviews],
        }  # fmt: skip
        if thread:
            doc["comments"] = [{"seq": c.seq, "author": c.author, "body": c.body, "at": c.at}
                               for c in self.comments]
        return doc


def promotion_from_rows(row: Row, reviews: list[Row], comments: list[Row]) -> Promotion:
    """A promotion from its ``promotions`` row and its review and comment rows."""
    return Promotion(
        id=row["id"], model=row["model"], version=row["version"],
        from_stage=Stage(row["from_stage"]), to_stage=Stage(row["to_stage"]),
        justification=row["justification"], requested_by=row["requested_by"],
        requested_at=row["requested_at"], state=PromotionState(row["state"]),
        closed_by=row["closed_by"], closed_at=row["closed_at"],
        reviews=tuple(Review(r["reviewer"], r["decision"], r["comment"], r["at"])
                      for r in reviews),
        comments=tuple(Comment(int(c["seq"]), c["author"], c["body"], c["at"])
                       for c in comments))


async def load_promotion(tx: Transaction, promotion_id: str) -> Promotion:
    """A promotion with its reviews and comments, read in ``tx`` (404 when unknown)."""
    row = await tx.fetchone("SELECT * FROM promotions WHERE id = ?", (promotion_id,))
    if row is None:
        raise NotFoundError(f"no promotion {promotion_id}")
    reviews = await tx.fetchall(
        "SELECT * FROM promotion_reviews WHERE promotion_id = ? ORDER BY at, reviewer",
        (promotion_id,))
    comments = await tx.fetchall(
        "SELECT * FROM promotion_comments WHERE promotion_id = ? ORDER BY seq", (promotion_id,))
    return promotion_from_rows(row, reviews, comments)
