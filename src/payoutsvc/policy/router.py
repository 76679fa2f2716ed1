"""GET/PUT /v1/policy: the company-wide payout policy, one immutable version per PUT."""

from __future__ import annotations

import copy
import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse

from payoutsvc.auth.dependencies import Admin
from payoutsvc.deps import DbSession, RuntimeDep
from payoutsvc.errors import (
    InsufficientScope,
    InvalidJson,
    NotFound,
    PolicyChanging,
    PolicyVersionConflict,
    Unauthorized,
    ValidationFailed,
)
from payoutsvc.policy.document import DEFAULT_POLICY_DOCUMENT, PolicyDocumentIn
from payoutsvc.policy.service import PolicyService
from payoutsvc.schemas_common import problem_responses

router = APIRouter(prefix="/v1/policy", tags=["Policy"])

_POLICY_TOP_LEVEL_DOCS = {
    "currencies": "ISO 4217 currencies payouts may use; every amount map may only use these.",
    "roles": "Operator roles by name (an operator's `role` names one). Each role's maps are "
    "keyed by currency; a currency missing from `request_max`/`daily_request_total` means the "
    "role cannot request in it, missing from `auto_approve_max` means every request needs "
    "approval, missing from `approve_max` (or `approve_max: null`) means it cannot approve it.",
    "dual_approval_over": "Payouts above this amount need two different approvers; a missing "
    "currency means never.",
    "per_ticket_max": "Cap on the sum of a ticket's live payouts (not rejected, canceled or "
    "failed), any day; a missing currency means no cap.",
    "per_recipient_daily": "Caps per recipient account per policy day, across tickets, "
    "operators and integrations.",
    "duplicate_window_hours": "A payout with the same ticket, recipient and amount as a live "
    "one created this many hours before needs approval; 0 turns the check off.",
    "timezone": "IANA time zone whose midnight starts a new day for the daily totals.",
    "approvals": "`require_operator_key` (default true): approve, reject, release, resolve and "
    "record-payment only with an API key bound to the acting operator (403 "
    "`operator_key_required` otherwise), and a request whose key is not bound to its "
    "requester is never auto-approved (rule `requester_unverified`). false: an integration "
    "key may name any operator; the helpdesk vouches for who its agents are.",
}

# A worked example that makes the dual-approval rule reachable: finance may request up to
# 50 000 CNY and per_ticket_max allows it, so 10 000.01 CNY and more needs two approvers.
DUAL_APPROVAL_EXAMPLE: dict[str, Any] = copy.deepcopy(DEFAULT_POLICY_DOCUMENT)
DUAL_APPROVAL_EXAMPLE.update(
    currencies=["CNY"],
    roles={
        "agent": {
            "request_max": {"CNY": "500.00"},
            "auto_approve_max": {"CNY": "50.00"},
            "approve_max": None,
            "daily_request_total": {"CNY": "2000.00"},
            "reasons": ["refund", "compensation"],
        },
        "supervisor": {
            "request_max": {"CNY": "5000.00"},
            "auto_approve_max": {"CNY": "500.00"},
            "approve_max": {"CNY": "20000.00"},
            "daily_request_total": {"CNY": "20000.00"},
            "reasons": None,
        },
        "finance": {
            "request_max": {"CNY": "50000.00"},
            "auto_approve_max": {"CNY": "0.00"},
            "approve_max": {"CNY": "50000.00"},
            "daily_request_total": {"CNY": "200000.00"},
            "reasons": None,
        },
    },
    dual_approval_over={"CNY": "10000.00"},
    per_ticket_max={"CNY": "50000.00"},
    per_recipient_daily={"count": 3, "amount": {"CNY": "50000.00"}},
    duplicate_window_hours=24,
    timezone="Asia/Shanghai",
)


def _inline_refs(schema: Any, definitions: dict[str, Any]) -> Any:
    """Replace ``{"$ref": "#/$defs/X"}`` by X itself: a request-body schema in
    ``openapi_extra`` cannot carry pydantic's ``$defs`` (refs would resolve against the
    OpenAPI document's root). The policy document has no recursive types."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline_refs(definitions[ref.removeprefix("#/$defs/")], definitions)
        return {key: _inline_refs(value, definitions) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_inline_refs(item, definitions) for item in schema]
    return schema


def policy_schema(*, with_version: bool, version_required: bool) -> dict[str, Any]:
    """JSON Schema of the policy document, self-contained, with field documentation."""
    raw = PolicyDocumentIn.model_json_schema()
    definitions = raw.pop("$defs", {})
    schema: dict[str, Any] = _inline_refs(raw, definitions)
    schema["title"] = "PolicyDocument"
    properties: dict[str, Any] = schema["properties"]
    for name, description in _POLICY_TOP_LEVEL_DOCS.items():
        properties[name].setdefault("description", description)
    if with_version:
        properties["version"] = {
            "type": "integer",
            "minimum": 1,
            "description": (
                "The version this document is (GET) or was based on (PUT, optional): when "
                "given, the PUT only applies while it is still current (else 409 "
                "`policy_version_conflict`)."
            ),
        }
        if version_required:
            schema["required"] = ["version", *schema.get("required", [])]
    return schema


_EXAMPLE_GET = {"version": 1, **DEFAULT_POLICY_DOCUMENT}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The policy document with its `version`.",
        "content": {
            "application/json": {
                "schema": policy_schema(with_version=True, version_required=True),
                "example": _EXAMPLE_GET,
            }
        },
    },
}


def _json(document: dict[str, Any]) -> JSONResponse:
    return JSONResponse(document)


@router.get(
    "",
    summary="Get the current policy",
    description=(
        "The policy document in force, with its `version`. Amounts are decimal strings in "
        "major units keyed by currency; limits are inclusive (exactly the limit passes). "
        "Scope `admin`."
    ),
    responses={**_RESPONSES, **problem_responses(Unauthorized, InsufficientScope)},
)
async def get_policy(session: DbSession, runtime: RuntimeDep, _caller: Admin) -> JSONResponse:
    policy = await PolicyService.of(session, runtime).current()
    return _json(policy.to_document())


@router.put(
    "",
    summary="Replace the policy (new version)",
    description=(
        "Validates the whole document strictly (unknown roles or keys, malformed or negative "
        "amounts, currencies not listed in `currencies`, bad time zones: 422 "
        "`validation_failed` with one dotted `field` per problem, e.g. "
        "`roles.agent.request_max.CNY`; whole numbers such as `duplicate_window_hours` are "
        "written without a fraction: `24`, not `24.0`, which JSON Schema cannot tell apart) "
        "and stores it as a new immutable version; the answer "
        "is the stored document with its new `version`. It applies to the next request in "
        "every process; payouts already decided keep the version they were decided under. "
        "Optionally send the `version` you based the edit on: if another PUT came first the "
        "answer is 409 `policy_version_conflict` and nothing changes. Scope `admin`."
    ),
    responses={
        **_RESPONSES,
        **problem_responses(
            InvalidJson,
            Unauthorized,
            InsufficientScope,
            PolicyVersionConflict,
            ValidationFailed,
            PolicyChanging,
        ),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": policy_schema(with_version=True, version_required=False),
                    "examples": {
                        "default": {
                            "summary": "The built-in policy",
                            "value": DEFAULT_POLICY_DOCUMENT,
                        },
                        "dual_approval": {
                            "summary": "CNY only, Shanghai days, dual approval over 10 000",
                            "value": DUAL_APPROVAL_EXAMPLE,
                        },
                    },
                }
            },
        }
    },
)
async def put_policy(
    request: Request, session: DbSession, runtime: RuntimeDep, caller: Admin
) -> JSONResponse:
    # The raw body is validated by parse_policy_document (not by a FastAPI body model) so that
    # every problem carries its full dotted path, including cross-field checks.
    try:
        data: object = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise InvalidJson("The request body is not valid JSON.") from None
    policy = await PolicyService.of(session, runtime).replace(data, caller.key_id)
    return _json(policy.to_document())


@router.get(
    "/versions/{version}",
    summary="Get a policy version",
    description="Any stored version, e.g. the one a payout's `policy.version` names. Scope "
    "`admin`.",
    responses={**_RESPONSES, **problem_responses(Unauthorized, InsufficientScope, NotFound)},
)
async def get_policy_version(
    version: Annotated[int, Path(ge=1, le=2_147_483_647)],
    session: DbSession,
    runtime: RuntimeDep,
    _caller: Admin,
) -> JSONResponse:
    policy = await PolicyService.of(session, runtime).get(version)
    return _json(policy.to_document())
