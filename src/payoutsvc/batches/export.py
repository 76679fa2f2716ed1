"""The bank files a batch is paid with offline: pure functions from payouts (with their
decrypted recipients) to bytes. What gets exported, and the audit events, is the service's.

* ``csv``: for the bulk-transfer ("批量转账"/"批量支付") upload of Chinese corporate bank
  portals, one row per ``bank_card_cn`` payout in CNY. Columns follow the fields of ICBC's
  corporate online-banking batch-payment template (批量支付.xls: 收款账号开户行, 收款账号,
  收款账号名称, 金额, 汇款用途, 备注), the template most portals' imports mirror; see the
  README ("Batches") for the list and how to map it to another bank's template.
* ``pain.001``: an ISO 20022 ``pain.001.001.09`` SEPA credit transfer (the version the EPC
  rulebooks and most European banks now require) for ``iban`` payouts in EUR, written by
  the maintained ``sepaxml`` library.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from sepaxml import SepaTransfer

from payoutsvc.money import format_amount

CSV_COLUMNS = (
    "序号",
    "收款账号",
    "收款账号名称",
    "收款账号开户行",
    "金额",
    "币种",
    "汇款用途",
    "备注",
)
# What the reason of a payout is called on a Chinese bank transfer (汇款用途).
PURPOSES = {
    "refund": "退款",
    "compensation": "赔偿",
    "reimbursement": "报销",
    "partner_payment": "合作方付款",
    "other": "其他",
}
PAIN_001_SCHEMA = "pain.001.001.09"
# A spreadsheet program runs a cell that starts with one of these as a formula (OWASP
# "CSV injection"); finance opens these files before uploading them.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True, slots=True)
class ExportRow:
    """One payout to pay offline, with its full recipient (decrypted for this file only)."""

    payout_id: str
    item_key: str
    reason: str
    amount_minor: int
    currency: str
    recipient: Mapping[str, str | None]


@dataclass(frozen=True, slots=True)
class Debtor:
    """The account a SEPA file pays from (PAYOUTSVC_SEPA_DEBTOR_*)."""

    name: str
    iban: str
    bic: str | None


def cn_bank_csv(rows: Sequence[ExportRow]) -> bytes:
    """UTF-8 with a BOM (so spreadsheet programs show the Chinese text), CRLF lines."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for number, row in enumerate(rows, start=1):
        writer.writerow(
            [
                number,
                _cell(row.recipient.get("account")),
                _cell(row.recipient.get("name")),
                _cell(row.recipient.get("bank_name")),
                format_amount(row.amount_minor, row.currency),
                row.currency,
                PURPOSES.get(row.reason, PURPOSES["other"]),
                row.payout_id,
            ]
        )
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def _cell(value: str | None) -> str:
    text = value or ""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def sepa_credit_transfer(rows: Sequence[ExportRow], debtor: Debtor, execution: date) -> bytes:
    """One batch-booked payment information block paying every row on ``execution``; each
    transaction's end-to-end id is the payout id, so the bank statement names the payout."""
    config: dict[str, object] = {
        "name": debtor.name,
        "IBAN": debtor.iban,
        "batch": True,
        "currency": "EUR",
    }
    if debtor.bic:
        config["BIC"] = debtor.bic
    transfer = SepaTransfer(config, schema=PAIN_001_SCHEMA, clean=True)
    for row in rows:
        payment: dict[str, object] = {
            "name": row.recipient.get("name") or "",
            "IBAN": row.recipient.get("account") or "",
            "amount": row.amount_minor,
            "execution_date": execution,
            "description": f"{PURPOSES_EN.get(row.reason, 'Payout')} {row.payout_id}",
            "endtoend_id": row.payout_id,
        }
        if row.recipient.get("bic"):
            payment["BIC"] = row.recipient["bic"]
        transfer.add_payment(payment)
    out: bytes = transfer.export(validate=False)
    return out


PURPOSES_EN = {
    "refund": "Refund",
    "compensation": "Compensation",
    "reimbursement": "Reimbursement",
    "partner_payment": "Partner payment",
    "other": "Payout",
}
