"""Note words per locale, from the bodies the outbox stores (no database)."""

from __future__ import annotations

import json

import pytest

from payoutsvc.connectors.kinds import KINDS
from payoutsvc.connectors.notes import note_of, status_tags_of
from payoutsvc.payouts.status import PayoutStatus

BODY = {
    "type": "payout.failed",
    "timestamp": "2026-12-03T10:00:00.000Z",
    "actor": "executor",
    "data": {
        "sequence": 5,
        "payout": {
            "id": "po_1",
            "status": "failed",
            "ticket": {"system": "hc_1", "id": "4821", "url": None},
            "amount": "12.50",
            "currency": "CNY",
            "recipient": {"type": "alipay", "account_masked": "138****8000", "name": "张*"},
            "approvals": [{"operator_id": "sup-1", "decision": "approved"}],
            "failure": {"code": "recipient_account_invalid", "message": "declined"},
        },
    },
}


def test_zh_cn_note_says_what_happened_with_a_masked_recipient() -> None:
    note = note_of(json.dumps(BODY, ensure_ascii=False).encode(), "zh-CN")
    assert note.ticket_id == "4821"
    lines = note.text.split("\n")
    assert lines[0] == "付款失败"
    assert "金额: 12.50 CNY" in lines
    assert "收款人: alipay 138****8000 张*" in lines
    assert "失败原因: recipient_account_invalid declined" in lines
    assert "审批: sup-1 (approved)" in lines


def test_unknown_locale_falls_back_to_english_and_bad_bodies_are_refused() -> None:
    assert note_of(json.dumps(BODY).encode(), "fr").text.startswith("Payout failed\n")
    with pytest.raises(ValueError, match="not a connector delivery body"):
        note_of(b'{"type": "payout.failed"}', "en")


def test_freshdesk_note_body_is_escaped_html() -> None:
    body = {**BODY, "actor": "<script>x</script>"}
    request = KINDS["freshdesk"].renderer()(
        "https://acme.freshdesk.com",
        {"api_key": "k", "inbound_secret": "s"},
        {},
        json.dumps(body).encode(),
    )
    sent = json.loads(request.body)
    assert "<script>" not in sent["body"]
    assert "&lt;script&gt;" in sent["body"]
    assert request.url == "https://acme.freshdesk.com/api/v2/tickets/4821/notes"


def test_status_tags_add_this_status_and_remove_every_other() -> None:
    tags = status_tags_of(json.dumps(BODY, ensure_ascii=False).encode())
    assert tags.ticket_id == "4821"
    assert tags.add == "payout_failed"
    assert set(tags.remove) == {f"payout_{s}" for s in PayoutStatus} - {"payout_failed"}
    with pytest.raises(ValueError, match="not a connector tag delivery body"):
        status_tags_of(b'{"data": {"payout": {"ticket": {"id": "1"}, "status": "lost"}}}')
