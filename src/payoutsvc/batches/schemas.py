"""Request and response bodies of /v1/payout-batches (API.md, Finance operations)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from payoutsvc.payouts.schemas import EXAMPLE_REQUEST, PayoutCreate
from payoutsvc.schemas_common import StrictModel

# One request creates at most this many payouts (and a CSV upload is at most 10 MiB).
MAX_BATCH_ITEMS = 1000
MAX_BATCH_BYTES = 10 * 1024 * 1024
ITEM_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"

EXAMPLE_BATCH: dict[str, Any] = {
    "description": "Refunds for the March price error",
    "items": [
        {"item_key": "row-1", **EXAMPLE_REQUEST},
        {
            "item_key": "row-2",
            **EXAMPLE_REQUEST,
            "ticket": {"system": "zendesk", "id": "48214"},
            "amount": "8.00",
            "recipient": {"type": "alipay", "account": "13900139000", "name": "李四"},
        },
    ],
}


class BatchItem(PayoutCreate):
    """One payout of a batch: the POST /v1/payouts body plus the caller's key for the row."""

    item_key: str = Field(
        min_length=1,
        max_length=64,
        pattern=ITEM_KEY_PATTERN,
        examples=["row-1"],
        description="Unique within the batch; with the batch's Idempotency-Key it makes the "
        "payout's own idempotency key, so a replayed batch creates nothing twice.",
    )

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"item_key": "row-1", **EXAMPLE_REQUEST}]}
    )

    def payout_body(self) -> PayoutCreate:
        """The item as the POST /v1/payouts body it stands for (already validated: the
        fields, nested models included, are taken as they are)."""
        fields = {name: getattr(self, name) for name in PayoutCreate.model_fields}
        return PayoutCreate.model_construct(self.model_fields_set - {"item_key"}, **fields)


class BatchEnvelope(StrictModel):
    """The JSON body around the items; each item is checked on its own (``items[3]…``)."""

    description: str | None = Field(default=None, max_length=1000)
    items: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


class BatchCreate(StrictModel):
    """What the OpenAPI document shows for a JSON batch."""

    description: str | None = Field(default=None, max_length=1000)
    items: list[BatchItem] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_BATCH]})


class BatchItemOut(BaseModel):
    item_key: str = Field(examples=["row-1"])
    payout_id: str = Field(examples=["po_01jd5x0z3q8m4k2n7p9r6s5t4v"])
    status: str | None = Field(
        default=None, description="The payout's status (as created, in the create answer)."
    )


class BatchOut(BaseModel):
    id: str = Field(examples=["pb_01jd5x0z3q8m4k2n7p9r6s5t4v"])
    status: Literal["open", "completed"] = Field(
        description="`completed` once every payout of the batch is in a terminal status."
    )
    description: str | None
    source: Literal["json", "csv"]
    item_count: int
    counts: dict[str, int] = Field(
        description="How many of the batch's payouts are in each status.",
        examples=[{"approved": 1, "pending_approval": 1}],
    )
    total_minor: dict[str, int] = Field(
        description="The sum of the batch's amounts in minor units, per currency.",
        examples=[{"CNY": 2050}],
    )
    items: list[BatchItemOut] | None = Field(
        default=None, description="Every item (not in lists, where it is null)."
    )
    created_at: datetime


class BatchActionError(BaseModel):
    code: str = Field(examples=["self_approval_forbidden"])
    title: str
    detail: str


class BatchActionResult(BaseModel):
    item_key: str
    payout_id: str
    outcome: Literal["approved", "approval_recorded", "released", "refused", "skipped"] = Field(
        description="`approved`/`released`: done; `approval_recorded`: approved by this "
        "operator, more approvals needed; `refused`: this payout said no (see `error`), the "
        "others are not affected; `skipped`: not in the status the action starts from."
    )
    status: str = Field(description="The payout's status after the action.")
    error: BatchActionError | None = None


class BatchActionOut(BaseModel):
    id: str
    action: Literal["approve", "release"]
    outcomes: dict[str, int] = Field(examples=[{"approved": 2, "skipped": 1}])
    results: list[BatchActionResult]
