"""``GET /v1/audit/verify``: the back office's view of ``payoutsvc audit verify``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from payoutsvc.audit import verify_all
from payoutsvc.auth.dependencies import Admin
from payoutsvc.deps import RuntimeDep
from payoutsvc.errors import InsufficientScope, Unauthorized
from payoutsvc.schemas_common import problem_responses

router = APIRouter(prefix="/v1/audit", tags=["Audit"])


class AuditProblemOut(BaseModel):
    payout_id: str = Field(
        description="The payout, the anomaly (`an_…`, also in `anomaly_id`) or `checkpoint` "
        "for the checkpoint itself."
    )
    anomaly_id: str | None = Field(
        default=None, description="The anomaly whose history is broken (else null)."
    )
    kind: str = Field(description="`altered`, `removed`, `inserted` or `unauthorized`.")
    event_id: str | None
    sequence: int | None
    message: str


class AuditReportOut(BaseModel):
    ok: bool = Field(description="True when every history is intact.")
    payouts_checked: int
    events_checked: int
    anomalies_checked: int = Field(description="Anomalies whose history was walked.")
    anomaly_events_checked: int
    checkpoint: dict[str, Any] | None = Field(
        description="The signed checkpoint the heads were compared with (its heads digested)."
    )
    problems: list[AuditProblemOut] = Field(
        description="The first problem of each payout and of each anomaly."
    )


@router.get(
    "/verify",
    summary="Verify the tamper-evident audit trail",
    description="Walks every payout's keyed hash chain (or one payout's), checks its status "
    "history against the arrows and the approvals its decision required, and compares the "
    "chain heads with the latest checkpoint; then every anomaly's keyed chain (all payouts "
    "only). Scope `admin`.",
    response_model=AuditReportOut,
    responses=problem_responses(Unauthorized, InsufficientScope),
)
async def verify_audit(
    runtime: RuntimeDep,
    _caller: Admin,
    payout_id: Annotated[
        str | None, Query(max_length=40, description="Check only this payout.")
    ] = None,
) -> dict[str, Any]:
    # Read-only: a walk of the whole history must not hold SQLite's writer lock.
    async with runtime.db.transaction(write=False) as session:
        report = await verify_all(session, runtime.audit_key, payout_id)
    return report.as_json()
