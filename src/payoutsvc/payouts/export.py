"""The payout export for the books (API.md, Finance operations): every payout the list's
filters match, masked, as CSV (UTF-8 with a BOM) or XLSX, streamed.

Memory stays flat however many payouts match: rows are read a page at a time by keyset
pagination on the id (newest first, as the list), each page is written out and dropped. CSV
is yielded page by page; XLSX goes through openpyxl's write-only workbook (rows spill to a
temporary file as they are appended) into a spooled temporary file, streamed in chunks.

The export runs in its own read transaction (the request's has committed by the time a
streamed body is produced). Cells a spreadsheet would run as a formula (text starting with
``= + - @``, a tab or a carriage return, e.g. a ticket id typed by a customer) are written
with a leading ``'``, as OWASP's CSV-injection advice says.
"""

from __future__ import annotations

import asyncio
import csv
import io
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import IO, Any, Literal

from openpyxl import Workbook

from payoutsvc.db.engine import Database
from payoutsvc.money import format_amount
from payoutsvc.payouts.repository import PayoutRepository
from payoutsvc.timestamps import rfc3339

ExportFormat = Literal["csv", "xlsx"]
PAGE_SIZE = 1000
_CHUNK = 64 * 1024
_BOM = "\ufeff"
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
MEDIA_TYPES: Mapping[str, str] = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


# The columns, in order (README, "Finance"); :func:`_cells` writes them in this order.
HEADER: tuple[str, ...] = (
    "id",
    "status",
    "created_at",
    "updated_at",
    "ticket_system",
    "ticket_id",
    "reason",
    "amount",
    "currency",
    "recipient_type",
    "recipient_account_masked",
    "recipient_name_masked",
    "recipient_bank_name",
    "requested_by",
    "approved_by",
    "release_required",
    "released_by",
    "released_at",
    "gateway",
    "gateway_reference",
    "gateway_status",
    "failure_code",
    "attempts",
    "description",
)


def _time(value: datetime | None) -> str:
    return rfc3339(value) if value is not None else ""


def _text(value: str | None) -> str:
    """Text someone typed (a ticket id, a description, a bank's reference): never a
    formula when a spreadsheet opens the file."""
    if not value:
        return ""
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def _cells(row: Any, approvers: Sequence[str]) -> list[str]:
    """One payout's cells, in HEADER order (one function, not a lambda per column: an
    export of 100,000 rows writes 2.4 million cells)."""
    public = row.recipient_public if isinstance(row.recipient_public, dict) else {}
    return [
        row.id,
        row.status,
        _time(row.created_at),
        _time(row.updated_at),
        _text(row.ticket_system),
        _text(row.ticket_id),
        row.reason,
        format_amount(row.amount_minor, row.currency),
        row.currency,
        row.recipient_type,
        _text(public.get("account_masked")),
        _text(public.get("name")),
        _text(public.get("bank_name")),
        _text(row.requested_by),
        _text(";".join(approvers)),
        "true" if row.release_required else "false",
        _text(row.released_by),
        _time(row.released_at),
        row.gateway,
        _text(row.gateway_reference),
        _text(row.gateway_status),
        _text(row.failure_code),
        str(row.attempts),
        _text(row.description),
    ]


class PayoutExport:
    def __init__(
        self, db: Database, visible_integration: str | None, filters: Mapping[str, Any]
    ) -> None:
        self.db = db
        self.visible_integration = visible_integration
        self.filters = dict(filters)

    async def rows(self) -> AsyncIterator[list[list[str]]]:
        """The matching payouts as cell values, a page at a time."""
        before: str | None = None
        async with self.db.transaction(write=False) as session:
            repo = PayoutRepository(session)
            while True:
                page = await repo.export_page(
                    integration_id=self.visible_integration,
                    limit=PAGE_SIZE,
                    before_id=before,
                    **self.filters,
                )
                if not page:
                    return
                approvers = await repo.approvers_of([row.id for row in page])
                yield [_cells(row, approvers[row.id]) for row in page]
                if len(page) < PAGE_SIZE:
                    return
                before = page[-1].id

    async def csv_chunks(self) -> AsyncIterator[bytes]:
        """UTF-8 CSV with a BOM (spreadsheet programs then show Chinese text), CRLF rows."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        buffer.write(_BOM)
        writer.writerow(HEADER)
        async for page in self.rows():
            writer.writerows(page)
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
        if buffer.tell():
            yield buffer.getvalue().encode()

    async def xlsx_chunks(self) -> AsyncIterator[bytes]:
        """An XLSX workbook (one sheet, ``payouts``) built in write-only mode."""
        workbook = Workbook(write_only=True)
        sheet = workbook.create_sheet("payouts")
        sheet.append(list(HEADER))
        async for page in self.rows():
            for cells in page:
                sheet.append(cells)
        with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as spool:
            await asyncio.to_thread(workbook.save, spool)
            spool.seek(0)
            while chunk := await asyncio.to_thread(_read, spool):
                yield chunk

    def chunks(self, fmt: ExportFormat) -> AsyncIterator[bytes]:
        return self.csv_chunks() if fmt == "csv" else self.xlsx_chunks()


def _read(file: IO[bytes]) -> bytes:
    return file.read(_CHUNK)
