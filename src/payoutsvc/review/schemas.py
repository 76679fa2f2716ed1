"""The periodic review's request and response bodies (API.md "Periodic review")."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from payoutsvc.schemas_common import StrictModel

AnomalyKind = Literal[
    "threshold_splitting",
    "recipient_many_tickets",
    "requester_velocity",
    "approver_concentration",
    "off_hours",
]


class ReviewIn(StrictModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"outcome": "dismissed", "comment": "Known partner, agreed with finance."},
                {"operator_id": "fin-1", "outcome": "confirmed", "comment": "Escalated."},
            ]
        },
    )

    operator_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="The reviewing operator; may be omitted with an operator-bound key.",
    )
    outcome: Literal["dismissed", "confirmed"]
    comment: str | None = Field(default=None, max_length=1000)


class AnomalyReviewOut(BaseModel):
    operator_id: str
    outcome: Literal["dismissed", "confirmed"]
    comment: str | None
    reviewed_at: str


class AnomalyOut(BaseModel):
    id: str = Field(examples=["an_01jd5x0z3q8m4k2n7p9r6s5t4v"])
    kind: AnomalyKind
    severity: Literal["low", "medium", "high"]
    status: Literal["open", "dismissed", "confirmed"]
    subjects: dict[str, Any] = Field(
        description="Who it is about: `requester`, `approver`, `recipient_masked` (never the "
        "full account) and context such as `currency` and `day`.",
        examples=[{"requester": "agent-7", "currency": "CNY", "day": "2026-12-03"}],
    )
    payout_ids: list[str] = Field(description="The payouts it is about (at most 200, newest).")
    explanation: str
    window_start: str
    window_end: str
    detected_at: str
    updated_at: str
    review: AnomalyReviewOut | None


class AnomalyEventOut(BaseModel):
    id: str
    sequence: int
    type: str
    actor: str
    at: str
    data: dict[str, Any]
    hash: str


class AnomalyEventList(BaseModel):
    data: list[AnomalyEventOut]
