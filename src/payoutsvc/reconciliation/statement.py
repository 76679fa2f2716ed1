"""A bank statement uploaded as CSV (``Content-Type: text/csv``), for the ``manual`` gateway
or a bank: one row per transfer the bank made, columns (header row required, any order,
UTF-8 with or without a BOM):

==========  ===========================================================================
reference   the bank's reference for the transfer (what finance recorded with
            record-payment), or our payout id / idempotency key put in the remark
amount      decimal string in major units, ``12.50``
currency    ISO 4217 code, ``CNY``
status      ``succeeded``, ``failed`` or ``pending``
date        ``YYYY-MM-DD`` (or an RFC 3339 timestamp): shown with the items, not matched on
==========  ===========================================================================

All or nothing: any bad row is a 422 naming each (``rows[3].amount``; rows count from 1
after the header) and nothing is recorded.
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime

from payoutsvc.errors import FieldError, ValidationFailed
from payoutsvc.money import MoneyError, parse_amount
from payoutsvc.reconciliation.compare import StatementRow

COLUMNS = ("reference", "amount", "currency", "status", "date")
STATUSES = ("succeeded", "failed", "pending")
MAX_ROWS = 10_000
MAX_REFERENCE_CHARS = 128
MAX_ERRORS = 100


def parse_statement(body: bytes) -> list[StatementRow]:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationFailed(
            "The statement is not UTF-8 text.",
            errors=[FieldError("body", "invalid_encoding", "Send the CSV as UTF-8.")],
        ) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [name.strip() for name in reader.fieldnames or []]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise ValidationFailed(
            f"The statement's header lacks: {', '.join(missing)}.",
            errors=[
                FieldError(f"columns.{c}", "missing_column", f"Column {c!r} is required.")
                for c in missing
            ],
        )
    reader.fieldnames = header
    rows: list[StatementRow] = []
    errors: list[FieldError] = []
    seen: set[str] = set()
    for number, raw in enumerate(reader, start=1):
        if number > MAX_ROWS:
            raise ValidationFailed(f"A statement has at most {MAX_ROWS} rows.")
        row, row_errors = _row(number, {k: (v or "").strip() for k, v in raw.items() if k})
        if row is not None and row.reference in seen:
            row_errors.append(FieldError(f"rows[{number}].reference", "duplicate", "Listed twice."))
        errors.extend(row_errors)
        if row is not None and not row_errors:
            seen.add(row.reference)
            rows.append(row)
    if errors:
        raise ValidationFailed(
            f"{len(errors)} problem(s) in the statement; nothing was recorded.",
            errors=errors[:MAX_ERRORS],
        )
    return rows


def _row(number: int, raw: dict[str, str]) -> tuple[StatementRow | None, list[FieldError]]:
    where = f"rows[{number}]"
    errors: list[FieldError] = []
    reference, currency, status = raw["reference"], raw["currency"], raw["status"].lower()
    if not reference or len(reference) > MAX_REFERENCE_CHARS:
        errors.append(
            FieldError(
                f"{where}.reference",
                "invalid_reference",
                f"Required, at most {MAX_REFERENCE_CHARS} characters.",
            )
        )
    amount = 0
    try:
        amount = parse_amount(raw["amount"], currency)
    except MoneyError as exc:
        field = "currency" if exc.code.endswith("_currency") else "amount"
        errors.append(FieldError(f"{where}.{field}", exc.code, exc.message))
    if status not in STATUSES:
        errors.append(
            FieldError(f"{where}.status", "invalid_status", f"One of {', '.join(STATUSES)}.")
        )
    if not _is_date(raw["date"]):
        errors.append(
            FieldError(f"{where}.date", "invalid_format", "YYYY-MM-DD or an RFC 3339 timestamp.")
        )
    if errors:
        return None, errors
    return StatementRow(reference, amount, currency, status, raw["date"]), []


def _is_date(value: str) -> bool:
    for parse in (date.fromisoformat, datetime.fromisoformat):
        try:
            parse(value)
        except ValueError:
            continue
        return True
    return False
