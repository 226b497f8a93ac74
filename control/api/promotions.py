"""Admin API of promotions and approvals (contract §7, §8).

Roles: an ``operator`` requests (and, being the requester, cancels); ``approver``s approve
or reject; any authenticated user comments; ``viewer``s read. The rules themselves (no
self-approval, one review per approver, quorum from the config's ``approvals:``) are in
:mod:`control.approvals`; the quorum is read from the live config on every call, so a
reload applies to pending requests.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from control.api import ApiRoute, QueryParam, parse_body, principal_of, read_json
from control.api.registry import path_model, path_version
from control.approvals import Policy, PromotionState, Stage
from control.auth import Principal, Role
from control.promotion_record import Promotion
from control.promotions import Promotions
from control.versions import check_name
from proxy.app import STATE
from proxy.errors import InvalidInputError, StoreError, UnauthorizedError


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RequestBody(_Body):
    stage: str = Field(description="staging, production or archived")
    justification: str = Field(description="why; recorded in the audit log")


class ReviewBody(_Body):
    comment: str | None = None


class CommentBody(_Body):
    comment: str


class ReviewOut(BaseModel):
    reviewer: str
    decision: str
    comment: str | None
    at: str


class CommentOut(BaseModel):
    seq: int
    author: str
    body: str
    at: str


class PromotionOut(BaseModel):
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
    approvals: int
    required: int
    reviews: list[ReviewOut]
    comments: list[CommentOut] = []


class PromotionsOut(BaseModel):
    promotions: list[PromotionOut]


def _service(request: web.Request) -> Promotions:
    state = request.app[STATE]
    if state.store is None:  # pragma: no cover - the store opens before the admin app serves
        raise StoreError("the state store is not open")
    return Promotions(state.store, Policy.from_config(state.settings.approvals))


def _caller(request: web.Request) -> Principal:
    principal = principal_of(request)
    if principal is None:  # writes need a token; the middleware has checked it
        raise UnauthorizedError("a valid bearer token is required")
    return principal


async def _optional_body(request: web.Request) -> dict[str, Any]:
    return await read_json(request) if request.can_read_body else {}


def _reply(service: Promotions, promotion: Promotion, status: int = 200) -> web.Response:
    return web.json_response(promotion.to_dict(service.policy), status=status)


async def request_promotion(request: web.Request) -> web.Response:
    model, version = path_model(request), path_version(request)
    body = parse_body(RequestBody, await read_json(request))
    service = _service(request)
    created = await service.request(model, version, body.stage, body.justification,
                                    _caller(request))
    return _reply(service, created, 201)


async def list_promotions(request: web.Request) -> web.Response:
    state_text, model = request.query.get("state") or None, request.query.get("model") or None
    try:
        state = PromotionState(state_text) if state_text else None
    except ValueError:
        raise InvalidInputError(f"{state_text!r} is not a state: use "
                                + ", ".join(PromotionState), field="state") from None
    if model is not None:
        check_name(model, "model")
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 1000:
        raise InvalidInputError("limit must be 1..1000", field="limit")
    service = _service(request)
    found = await service.query(state=state, model=model, limit=limit)
    return web.json_response(
        {"promotions": [p.to_dict(service.policy, thread=False) for p in found]})


async def get_promotion(request: web.Request) -> web.Response:
    service = _service(request)
    return _reply(service, await service.get(request.match_info["id"]))


async def approve(request: web.Request) -> web.Response:
    body = parse_body(ReviewBody, await _optional_body(request))
    service = _service(request)
    done = await service.approve(request.match_info["id"], _caller(request), body.comment)
    return _reply(service, done)


async def reject(request: web.Request) -> web.Response:
    body = parse_body(ReviewBody, await _optional_body(request))
    service = _service(request)
    done = await service.reject(request.match_info["id"], _caller(request), body.comment)
    return _reply(service, done)


async def comment(request: web.Request) -> web.Response:
    body = parse_body(CommentBody, await read_json(request))
    service = _service(request)
    done = await service.comment(request.match_info["id"], _caller(request).user, body.comment)
    return _reply(service, done)


async def cancel(request: web.Request) -> web.Response:
    service = _service(request)
    return _reply(service, await service.cancel(request.match_info["id"], _caller(request)))


_P = "/api/v1/promotions/{id}"
ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute("POST", "/api/v1/models/{model}/versions/{version}/promotions",
             request_promotion,
             "Request a promotion to a stage, with a justification (applied at once when "
             "the stage needs no approval)", role=Role.OPERATOR, tag="promotions",
             body=RequestBody, response=PromotionOut),
    ApiRoute("GET", "/api/v1/promotions", list_promotions, "Promotions, newest first",
             role=Role.VIEWER, tag="promotions", response=PromotionsOut,
             query=(QueryParam("state", "pending, approved, rejected or cancelled"),
                    QueryParam("model", "only this model's promotions"),
                    QueryParam("limit", "at most this many (1..1000, default 100)",
                               type="integer"))),
    ApiRoute("GET", _P, get_promotion, "One promotion with its reviews and comments",
             role=Role.VIEWER, tag="promotions", response=PromotionOut),
    ApiRoute("POST", f"{_P}/approve", approve,
             "Approve (not your own request; once per approver); on quorum the stage changes",
             role=Role.APPROVER, tag="promotions", body=ReviewBody, response=PromotionOut),
    ApiRoute("POST", f"{_P}/reject", reject, "Reject: ends the request",
             role=Role.APPROVER, tag="promotions", body=ReviewBody, response=PromotionOut),
    ApiRoute("POST", f"{_P}/comment", comment, "Comment on a promotion (any user)",
             any_user=True, tag="promotions", body=CommentBody, response=PromotionOut),
    ApiRoute("POST", f"{_P}/cancel", cancel, "Cancel a pending request (its requester only)",
             role=Role.OPERATOR, tag="promotions", response=PromotionOut),
)
