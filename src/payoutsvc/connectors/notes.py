"""The words of a ticket note, in the connector's locale (``zh-CN`` or ``en``), and the
status tag a ticket carries after a payout event.

Built from a delivery's stored body (webhooks/outbox.py: ``connector_body`` for a payout
event, ``enqueue_note`` for a refused trigger). The recipient is the payout's public view,
masked when the payout was created: a note never carries a full account number.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from payoutsvc.payouts.status import PayoutStatus

LOCALES = ("zh-CN", "en")
REFUSED = "connector.refused"
# A payout's status as a ticket tag: ``payout_succeeded`` (API.md). Lower case, no spaces:
# a valid Zendesk tag, Jira label and Freshdesk tag alike.
STATUS_TAG_PREFIX = "payout_"

_WHAT: dict[str, dict[str, str]] = {
    "en": {
        "payout.created": "Payout requested",
        "payout.approval_recorded": "Approval recorded",
        "payout.approved": "Payout approved",
        "payout.processing": "Payout being paid",
        "payout.succeeded": "Payout paid",
        "payout.failed": "Payout failed",
        "payout.needs_review": "Payout needs review by finance",
        "payout.rejected": "Payout rejected",
        "payout.canceled": "Payout canceled",
        REFUSED: "Request refused",
    },
    "zh-CN": {
        "payout.created": "已申请付款",
        "payout.approval_recorded": "已记录审批",
        "payout.approved": "付款已批准",
        "payout.processing": "正在付款",
        "payout.succeeded": "付款成功",
        "payout.failed": "付款失败",
        "payout.needs_review": "付款需财务复核",
        "payout.rejected": "付款被拒绝",
        "payout.canceled": "付款已取消",
        REFUSED: "请求被拒绝",
    },
}
_LABELS: dict[str, dict[str, str]] = {
    "en": {
        "amount": "Amount",
        "recipient": "Recipient",
        "actor": "By",
        "status": "Status",
        "payout": "Payout",
        "failure": "Failure reason",
        "approvals": "Approvals",
        "why": "Why",
        "action": "Action",
    },
    "zh-CN": {
        "amount": "金额",
        "recipient": "收款人",
        "actor": "操作人",
        "status": "状态",
        "payout": "付款编号",
        "failure": "失败原因",
        "approvals": "审批",
        "why": "原因",
        "action": "操作",
    },
}
# What an agent should know about a refusal, by problem code (the problem's own detail follows).
# Chinese text uses full-width punctuation.
_REFUSAL_HINTS: dict[str, dict[str, str]] = {
    "en": {
        "unknown_operator": "Your helpdesk user is not mapped to an active operator; ask an "
        "admin to add it to your operator's helpdesk_users.",
        "operator_disabled": "Your operator is disabled.",
        "operator_key_required": "This connector does not vouch for its agents "
        "(trust_actor is off), so decisions must be taken with your own API key.",
        "policy_violation": "The payout policy forbids this payout.",
        "self_approval_forbidden": "You cannot approve a payout you requested.",
        "approval_limit_exceeded": "The amount is above what your role may approve.",
        "already_approved": "You have approved this payout already.",
        "invalid_status_transition": "The payout is no longer in a state that allows this.",
        "not_found": "No payout of this ticket matches.",
        "invalid_recipient": "The recipient details are not valid.",
        "validation_failed": "The trigger's fields are incomplete or invalid.",
    },
    "zh-CN": {
        "unknown_operator": "您的工单系统账号未关联任何有效的操作员，请管理员在操作员的 "  # noqa: RUF001
        "helpdesk_users 中添加。",
        "operator_disabled": "您的操作员账号已停用。",
        "operator_key_required": "此连接器不代为认证坐席（trust_actor 未开启），"  # noqa: RUF001
        "审批须使用您本人的 API 密钥。",
        "policy_violation": "付款策略不允许这笔付款。",
        "self_approval_forbidden": "不能审批自己申请的付款。",
        "approval_limit_exceeded": "金额超出您角色的审批额度。",
        "already_approved": "您已审批过这笔付款。",
        "invalid_status_transition": "付款当前状态不允许此操作。",
        "not_found": "未找到此工单对应的付款。",
        "invalid_recipient": "收款人信息无效。",
        "validation_failed": "触发器字段缺失或无效。",
    },
}


@dataclass(frozen=True, slots=True)
class Note:
    ticket_id: str
    text: str


@dataclass(frozen=True, slots=True)
class StatusTags:
    """One tag write: the ticket gets the tag of the payout's status after the event and
    loses the tags of every other status. Set operations, so writing it twice (a retry after
    a timeout) or after a later one's tags leaves the same tags: no read of the ticket's
    own tags is needed, and the agents' other tags are never touched."""

    ticket_id: str
    add: str
    remove: tuple[str, ...]


def status_tags_of(delivery_body: bytes) -> StatusTags:
    """The tag write of a tag delivery (webhooks/outbox.py ``TAGS_WRITE``); ValueError when
    the body is not one."""
    try:
        payout = json.loads(delivery_body)["data"]["payout"]
        ticket_id, status = str(payout["ticket"]["id"]), PayoutStatus(payout["status"])
    except (KeyError, TypeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"not a connector tag delivery body: {exc!r}") from None
    others = tuple(STATUS_TAG_PREFIX + s for s in PayoutStatus if s != status)
    return StatusTags(ticket_id, STATUS_TAG_PREFIX + status, others)


def _recipient(recipient: Mapping[str, Any] | None) -> str:
    if not recipient:
        return "-"
    parts = [str(recipient.get(k)) for k in ("type", "account_masked", "name") if recipient.get(k)]
    return " ".join(parts) or "-"


def _payout_lines(locale: str, body: Mapping[str, Any]) -> tuple[str, list[str]]:
    labels = _LABELS[locale]
    payout: Mapping[str, Any] = body["data"]["payout"]
    lines = [
        f"{labels['amount']}: {payout['amount']} {payout['currency']}",
        f"{labels['recipient']}: {_recipient(payout.get('recipient'))}",
        f"{labels['actor']}: {body.get('actor') or '-'}",
        f"{labels['status']}: {payout['status']}",
        f"{labels['payout']}: {payout['id']}",
    ]
    approvals = payout.get("approvals") or []
    if approvals:
        names = ", ".join(f"{a['operator_id']} ({a['decision']})" for a in approvals)
        lines.append(f"{labels['approvals']}: {names}")
    failure = payout.get("failure")
    if failure:
        lines.append(f"{labels['failure']}: {failure.get('code')} {failure.get('message') or ''}")
    return str(payout["ticket"]["id"]), lines


def _refusal_lines(locale: str, body: Mapping[str, Any]) -> list[str]:
    labels = _LABELS[locale]
    problem: Mapping[str, Any] = body.get("problem") or {}
    code = str(problem.get("code") or "")
    hint = _REFUSAL_HINTS[locale].get(code, "")
    lines = [
        f"{labels['action']}: {body.get('action')}",
        f"{labels['actor']}: {body.get('actor') or '-'}",
        f"{labels['why']}: {hint} ({code}) {problem.get('detail') or ''}".strip(),
    ]
    if body.get("payout_id"):
        lines.append(f"{labels['payout']}: {body['payout_id']}")
    return lines


def note_of(delivery_body: bytes, locale: str) -> Note:
    """The note for one delivery; ValueError when the body is not one the outbox writes."""
    locale = locale if locale in LOCALES else "en"
    try:
        body = json.loads(delivery_body)
        kind = str(body["type"])
        heading = _WHAT[locale].get(kind, kind)
        if kind == REFUSED:
            lines = _refusal_lines(locale, body)
            return Note(str(body["ticket"]["id"]), "\n".join([heading, *lines]))
        ticket_id, lines = _payout_lines(locale, body)
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a connector delivery body: {exc!r}") from None
    return Note(ticket_id, "\n".join([heading, *lines]))
