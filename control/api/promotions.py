"""Admin API of promotions and approvals (contract §7, §8).

Roles: an ``operator`` requests (and, being the requester, cancels); ``approver``s approve
or reject; any authenticated user comments; ``viewer``s read. The rules themselves (no
self-approval, one review per approver, quorum from the config's ``approvals:``) are in
:mod:`control.approvals`; the quorum is read from the live config on every call, so a
reload applies to pending requests.
"""

from __future__ import annotations

from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, Field

from control.api import ApiRoute, principal_of
from control.api.fields import DIGITS, NOT_BLANK, TEXT, Body, Name, Params, PromotionId
from control.api.inputs import body_of, path_of, query_of
from control.api.registry import VersionPath
from control.approvals import Policy, PromotionState, Stage
from control.auth import Principal, Role
from control.promotion_record import Promotion
from control.promotions import MAX_TEXT, Promotions
from proxy.app import STATE
from proxy.errors import StoreError, UnauthorizedError

Text = Annotated[str, Field(max_length=MAX_TEXT), TEXT]
NonBlankText = Annotated[str, Field(max_length=MAX_TEXT), NOT_BLANK]


class PromotionPath(Params):
    id: PromotionId = Field(description="promotion id, prm-<12 hex>")


class PromotionsQuery(Params):
    state: PromotionState | None = Field(None, description="only promotions in this state")
    model: Name | None = Field(None, description="only this model's promotions")
    limit: Annotated[int, Field(ge=1, le=1000), DIGITS] = Field(
        100, description="at most this many")


class RequestBody(Body):
    stage: Literal["staging", "production", "archived"] = Field(description="target stage")
    justification: NonBlankText = Field(
        description="why; recorded in the audit log")


class ReviewBody(Body):
    comment: Text | None = Field(None, description="optional; blank counts as none")


class CommentBody(Body):
    comment: NonBlankText


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


def _reply(service: Promotions, promotion: Promotion, status: int = 200) -> web.Response:
    return web.json_response(promotion.to_dict(service.policy), status=status)


async def request_promotion(request: web.Request) -> web.Response:
    p, body = path_of(request, VersionPath), body_of(request, RequestBody)
    service = _service(request)
    created = await service.request(p.model, p.version, body.stage, body.justification,
                                    _caller(request))
    return _reply(service, created, 201)


async def list_promotions(request: web.Request) -> web.Response:
    q = query_of(request, PromotionsQuery)
    service = _service(request)
    found = await service.query(state=q.state, model=q.model, limit=q.limit)
    return web.json_response(
        {"promotions": [p.to_dict(service.policy, thread=False) for p in found]})


def _id(request: web.Request) -> str:
    return path_of(request, PromotionPath).id


async def get_promotion(request: web.Request) -> web.Response:
    service = _service(request)
    return _reply(service, await service.get(_id(request)))


async def approve(request: web.Request) -> web.Response:
    body = body_of(request, ReviewBody)
    service = _service(request)
    done = await service.approve(_id(request), _caller(request), body.comment)
    return _reply(service, done)


async def reject(request: web.Request) -> web.Response:
    body = body_of(request, ReviewBody)
    service = _service(request)
    done = await service.reject(_id(request), _caller(request), body.comment)
    return _reply(service, done)


async def comment(request: web.Request) -> web.Response:
    body = body_of(request, CommentBody)
    service = _service(request)
    done = await service.comment(_id(request), _caller(request).user, body.comment)
    return _reply(service, done)


async def cancel(request: web.Request) -> web.Response:
    service = _service(request)
    return _reply(service, await service.cancel(_id(request), _caller(request)))


_P = "/api/v1/promotions/{id}"
ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute("POST", "/api/v1/models/{model}/versions/{version}/promotions",
             request_promotion,
             "Request a promotion to a stage, with a justification (applied at once when "
             "the stage needs no approval)", role=Role.OPERATOR, tag="promotions",
             params=VersionPath, body=RequestBody, response=PromotionOut, success=(201,),
             errors=(409,)),
    ApiRoute("GET", "/api/v1/promotions", list_promotions, "Promotions, newest first",
             role=Role.VIEWER, tag="promotions", response=PromotionsOut,
             query=PromotionsQuery),
    ApiRoute("GET", _P, get_promotion, "One promotion with its reviews and comments",
             role=Role.VIEWER, tag="promotions", params=PromotionPath, response=PromotionOut),
    ApiRoute("POST", f"{_P}/approve", approve,
             "Approve (not your own request; once per approver); on quorum the stage changes",
             role=Role.APPROVER, tag="promotions", params=PromotionPath, body=ReviewBody,
             response=PromotionOut, errors=(409,)),
    ApiRoute("POST", f"{_P}/reject", reject, "Reject: ends the request",
             role=Role.APPROVER, tag="promotions", params=PromotionPath, body=ReviewBody,
             response=PromotionOut, errors=(409,)),
    ApiRoute("POST", f"{_P}/comment", comment, "Comment on a promotion (any user)",
             any_user=True, tag="promotions", params=PromotionPath, body=CommentBody,
             response=PromotionOut),
    ApiRoute("POST", f"{_P}/cancel", cancel, "Cancel a pending request (its requester only)",
             role=Role.OPERATOR, tag="promotions", params=PromotionPath,
             response=PromotionOut, errors=(409,)),
)
