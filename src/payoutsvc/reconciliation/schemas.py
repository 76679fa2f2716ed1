"""Request and response shapes of /v1/reconciliations."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, Field

from payoutsvc.schemas_common import StrictModel

PERIOD_DOC = (
    "A day `YYYY-MM-DD` in the policy timezone (`to` inclusive: `from=2026-12-01&"
    "to=2026-12-01` is that whole day), or an RFC 3339 timestamp with offset (`to` "
    "exclusive). At most 31 days."
)


def _day_or_moment(value: object) -> object:
    """``YYYY-MM-DD`` is a day, anything longer a timestamp (pydantic alone would read
    ``2026-12-01T00:00:00`` as a day too, dropping the missing offset unnoticed)."""
    if not isinstance(value, str):
        return value
    try:
        return date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("expected YYYY-MM-DD or an RFC 3339 timestamp") from None


DayOrMoment = Annotated[date | datetime, BeforeValidator(_day_or_moment)]


class ReconciliationCreate(StrictModel):
    gateway: str = Field(min_length=1, max_length=32, examples=["sandbox"])
    from_: DayOrMoment = Field(alias="from", description=PERIOD_DOC, examples=["2026-12-01"])
    to: DayOrMoment = Field(description=PERIOD_DOC, examples=["2026-12-01"])


class ReconciliationStarted(BaseModel):
    id: str = Field(examples=["rc_01jd5x0z3q8m4k2n7p9r6s5t4v"])
    status: str = Field(examples=["running"])


class Summary(BaseModel):
    matched: int
    status_mismatch: int
    amount_mismatch: int
    missing_at_gateway: int
    unknown_to_us: int
    unknown: int = Field(
        description="Payouts the gateway gave no certain answer about (timeout, 5xx): no "
        "verdict either way; run the reconciliation again later."
    )


class Side(BaseModel):
    status: str | None
    amount: str | None
    currency: str | None


class ReconciliationItemOut(BaseModel):
    kind: str = Field(
        description="`status_mismatch`, `amount_mismatch`, `missing_at_gateway`, "
        "`unknown_to_us` or `unknown` (no certain answer). Matches are only counted."
    )
    payout_id: str | None
    gateway_reference: str | None
    ours: Side
    theirs: Side
    detail: str | None


class ReconciliationOut(BaseModel):
    id: str
    gateway: str
    source: str = Field(description="`gateway` (asked) or `statement` (uploaded CSV).")
    period: dict[str, str] = Field(examples=[{"from": "2026-12-01T00:00:00.000Z"}])
    status: str = Field(description="`running`, `completed` or `failed`.")
    requested_by: str
    daily: bool = Field(description="Recorded by the worker's daily run.")
    summary: Summary | None = Field(description="Null while running.")
    payouts_checked: int
    gateway_calls: int
    error: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None


class ReconciliationDetail(ReconciliationOut):
    items: list[ReconciliationItemOut] = Field(description="The first 1,000 findings.")
    items_total: int
