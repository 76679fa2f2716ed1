"""A batch request's body (JSON or CSV) into items, every item checked before anything is
created: all the problems come back at once as one 422, each field named
``items[3].recipient.account`` (API.md, Finance operations)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from payoutsvc.batches.schemas import MAX_BATCH_ITEMS, BatchEnvelope, BatchItem
from payoutsvc.errors import FieldError, InvalidJson, ValidationFailed, validation_failed
from payoutsvc.http_errors import field_errors_from_pydantic
from payoutsvc.payouts.schemas import PayoutCreate

# Every item may be wrong: a 1,000-item answer must be able to say so, item by item, but
# one item's list of problems stays short.
MAX_ERRORS_PER_ITEM = 5
MAX_BATCH_ERRORS = MAX_BATCH_ITEMS * MAX_ERRORS_PER_ITEM

_ITEM = TypeAdapter(BatchItem)
# CSV columns with one level of nesting (``ticket.id``) or a map (``metadata.order_id``).
_NESTED = ("ticket", "recipient")
_MAP = "metadata"


@dataclass(frozen=True, slots=True)
class CheckedItems:
    """The items that passed the schema, (index, item_key, body) each, and the problems of
    those that did not: the service still runs the others, so one answer names every bad
    item, including those only the recipient check or the policy refuses."""

    valid: list[tuple[int, str, PayoutCreate]]
    errors: list[FieldError]
    bad: int
    total: int


@dataclass(frozen=True, slots=True)
class ParsedBatch:
    description: str | None
    source: Literal["json", "csv"]
    items: CheckedItems

    def fingerprint_content(self) -> dict[str, Any]:
        """What a replay must repeat exactly to get the stored answer."""
        return {
            "description": self.description,
            "items": [[key, body.model_dump(mode="json")] for _, key, body in self.items.valid],
        }


def item_errors(index: int, errors: list[FieldError]) -> list[FieldError]:
    """``errors`` of one item, named under ``items[index]`` (at most a few)."""
    return [
        FieldError(f"items[{index}].{e.field}" if e.field else f"items[{index}]", e.code, e.message)
        for e in errors[:MAX_ERRORS_PER_ITEM]
    ]


def batch_invalid(errors: list[FieldError], bad_items: int, total: int) -> ValidationFailed:
    failure = validation_failed(
        errors,
        f"{bad_items} of {total} item(s) cannot be created, so nothing was created: "
        + "; ".join(f"{e.field}: {e.message}" for e in errors[:3]),
    )
    failure.error_limit = MAX_BATCH_ERRORS
    return failure


def parse_json(raw: bytes) -> ParsedBatch:
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise InvalidJson("The request body is not valid JSON.") from None
    try:
        envelope = BatchEnvelope.model_validate(document)
    except ValidationError as exc:
        raise validation_failed(field_errors_from_pydantic(exc.errors())) from None
    return ParsedBatch(envelope.description, "json", _checked_items(envelope.items))


def parse_csv(raw: bytes, description: str | None) -> ParsedBatch:
    """One row per item; the header names the body's fields with dots (``ticket.id``,
    ``recipient.account``, ``metadata.order_id``); an empty cell is an absent field."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise validation_failed(
            [FieldError("body", "invalid_encoding", "A CSV upload must be UTF-8.")]
        ) from None
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    rows: list[dict[str, Any]] = []
    try:
        for row in reader:
            if len(rows) == MAX_BATCH_ITEMS:
                raise validation_failed(
                    [FieldError("items", "too_long", f"At most {MAX_BATCH_ITEMS} rows.")]
                )
            rows.append(_nested(row))
    except csv.Error as exc:
        raise validation_failed(
            [FieldError("body", "invalid_csv", f"Line {reader.line_num}: {exc}.")]
        ) from None
    if not rows:
        raise validation_failed(
            [FieldError("items", "too_short", "The CSV has a header but no rows.")]
        )
    return ParsedBatch(description, "csv", _checked_items(rows))


def _nested(row: dict[str | None, Any]) -> dict[str, Any]:
    """A CSV row as the JSON item it stands for. A row with more cells than the header is
    kept under the key ``None`` by DictReader: reported as an unknown field."""
    item: dict[str, Any] = {}
    for column, value in row.items():
        if column is None:
            item["extra_cells"] = value
            continue
        if value is None or value == "":
            continue
        head, dot, tail = column.strip().partition(".")
        if dot and head in (*_NESTED, _MAP) and tail:
            item.setdefault(head, {})[tail] = value
        else:
            item[column.strip()] = value
    return item


def _checked_items(raw_items: list[Any]) -> CheckedItems:
    items: list[tuple[int, str, PayoutCreate]] = []
    errors: list[FieldError] = []
    bad: set[int] = set()
    first_index: dict[str, int] = {}
    for index, raw in enumerate(raw_items):
        try:
            item = _ITEM.validate_python(raw)
        except ValidationError as exc:
            errors += item_errors(index, field_errors_from_pydantic(exc.errors()))
            bad.add(index)
            continue
        if item.item_key in first_index:
            message = f"item_key {item.item_key!r} is also item {first_index[item.item_key]}'s."
            errors += item_errors(index, [FieldError("item_key", "duplicate", message)])
            bad.add(index)
            continue
        first_index[item.item_key] = index
        items.append((index, item.item_key, item.payout_body()))
    return CheckedItems(items, errors, len(bad), len(raw_items))
