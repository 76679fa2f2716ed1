"""The one catalogue of what the API says to people, in English and Simplified Chinese.

Problems keep their machine ``code`` in every language; only ``title``, ``detail`` and the
field errors' ``message`` follow the request's ``Accept-Language`` (:func:`negotiate`).
Three tables, all here so that English and Chinese sit side by side:

- :data:`ERRORS`: per problem ``code``, the Chinese title and a generic Chinese detail (the
  English title is the error class's ``title`` in ``errors.py``, part of the API contract);
- :data:`FIELD_ERRORS`: per field-error ``code``, a generic Chinese message;
- :data:`MESSAGES`: parameterised texts (English and Chinese) for details and field messages
  that carry facts (amounts, limits, ids). A raise site passes ``message(id, **params)``
  instead of an English f-string, so every language gets the same facts.

Rendering happens at the HTTP edge (``http_errors.py``, ``middleware.py``); services stay
language-free. A code missing here falls back to English (title) or a generic Chinese text
(message); ``tests/test_messages.py`` walks every code the service can emit and fails naming
the one without a translation.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

Locale = Literal["en", "zh-CN"]
ENGLISH: Final[Locale] = "en"
CHINESE: Final[Locale] = "zh-CN"

# Language tags answered in Simplified Chinese (lower case); any "zh-hans-*" too.
_SIMPLIFIED = frozenset({"zh", "zh-cn", "zh-sg", "zh-hans", "zh-my"})


def _language(tag: str) -> Locale | None:
    """The locale a single language tag asks for, or None when we do not speak it."""
    tag = tag.lower()
    if tag in _SIMPLIFIED or tag.startswith(("zh-hans-", "zh-cn-")):
        return CHINESE
    if tag == "*" or tag == "en" or tag.startswith("en-"):
        return ENGLISH
    return None


def _quality(params: list[str]) -> float:
    for param in params:
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


def negotiate(accept_language: str | None) -> Locale:
    """The locale for an ``Accept-Language`` header (RFC 9110 section 12.5.4): the supported
    language with the highest q-value (header order breaks ties; ``q=0`` means "not this");
    English when nothing supported is asked for. Traditional Chinese (zh-TW, zh-Hant) is not
    offered and so gets English."""
    if not accept_language:
        return ENGLISH
    best: tuple[float, Locale] | None = None
    for item in accept_language.split(",")[:32]:
        tag, *params = item.strip().split(";")
        locale = _language(tag.strip())
        q = _quality(params)
        if locale is None or q <= 0.0:
            continue
        if best is None or q > best[0]:
            best = (q, locale)
    return ENGLISH if best is None else best[1]


@dataclass(frozen=True, slots=True)
class Text:
    """One text in each language; ``{name}`` placeholders are the same in both."""

    en: str
    zh: str

    def in_locale(self, locale: Locale) -> str:
        return self.zh if locale == CHINESE else self.en


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


@dataclass(frozen=True, slots=True)
class Message:
    """A catalogue text with its facts, rendered in whatever language the client reads."""

    id: str
    params: Mapping[str, str | int] = field(default_factory=dict)

    def render(self, locale: Locale = ENGLISH) -> str:
        return MESSAGES[self.id].in_locale(locale).format_map(self.params)

    def as_json(self) -> dict[str, object]:
        return {"id": self.id, "params": dict(self.params)}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Message | None:
        """The message stored by :meth:`as_json`, or None when it is not (or no longer) in the
        catalogue with these parameters."""
        ident, params = data.get("id"), data.get("params")
        if not isinstance(ident, str) or not isinstance(params, dict) or ident not in MESSAGES:
            return None
        text = MESSAGES[ident]
        if not placeholders(text.en) | placeholders(text.zh) <= set(params):
            return None
        return cls(ident, {str(k): v for k, v in params.items() if isinstance(v, str | int)})


def message(ident: str, **params: str | int) -> Message:
    """``message("not_found", what="payout", id="po_1")``; fails at once on an unknown id or a
    missing parameter, so a raise site cannot ship a text that breaks when rendered."""
    text = MESSAGES[ident]
    missing = (placeholders(text.en) | placeholders(text.zh)) - set(params)
    if missing:
        raise KeyError(f"message {ident!r} needs {sorted(missing)}")
    return Message(ident, params)


@dataclass(frozen=True, slots=True)
class ErrorText:
    """The Chinese ``title`` of a problem and its ``detail`` when the raise site gave no
    catalogue message (and the problem has no field errors to summarise)."""

    title: str
    detail: str


# -- problems, by code -------------------------------------------------------------------
ERRORS: Final[dict[str, ErrorText]] = {
    # 400
    "invalid_json": ErrorText("JSON 格式错误", "请求体（或其中的 JSON 字段）不是有效的 JSON。"),
    "idempotency_key_missing": ErrorText(
        "缺少 Idempotency-Key 请求头",
        "此请求需要 Idempotency-Key 请求头（例如每次付款尝试一个 UUID）。",
    ),
    "idempotency_key_invalid": ErrorText(
        "Idempotency-Key 无效", "Idempotency-Key 只能包含可打印字符，且不能超过长度上限。"
    ),
    "invalid_callback": ErrorText("回调格式错误", "回调的签名有效，但内容无法识别。"),
    # 401 / 403
    "unauthorized": ErrorText(
        "API 密钥缺失或无效", "请在 Authorization 请求头中提供有效的 API 密钥。"
    ),
    "invalid_signature": ErrorText("回调签名无效", "回调的签名校验失败。"),
    "insufficient_scope": ErrorText(
        "权限范围不足", "此 API 密钥缺少该操作所需的权限范围（scope）。"
    ),
    "operator_disabled": ErrorText("操作员已停用", "该操作员已被停用。"),
    "operator_key_required": ErrorText(
        "需要绑定操作员的 API 密钥",
        "按照当前策略，此决定必须使用绑定到作出决定的操作员本人的 API 密钥。",
    ),
    "operator_mismatch": ErrorText(
        "API 密钥绑定的是另一位操作员", "绑定操作员的 API 密钥只能以该操作员本人的身份操作。"
    ),
    "self_approval_forbidden": ErrorText("禁止审批自己的付款", "付款的申请人不能审批这笔付款。"),
    "approval_limit_exceeded": ErrorText("超出审批限额", "付款金额超出了审批人角色的审批限额。"),
    "forbidden": ErrorText("禁止访问", "不允许此请求。"),
    # 404 / 405 / 415
    "not_found": ErrorText("未找到", "未找到请求的资源。"),
    "method_not_allowed": ErrorText(
        "不允许的请求方法", "此路径不支持该 HTTP 方法，请查看 Allow 响应头。"
    ),
    "unsupported_media_type": ErrorText("不支持的媒体类型", "不支持此请求体的 Content-Type。"),
    # 409
    "invalid_status_transition": ErrorText(
        "当前状态下不允许此操作", "该对象当前的状态不允许此操作。"
    ),
    # finance operations (release, offline payment, reveal, batch bank files)
    "connector_disabled": ErrorText(
        "连接器已停用", "该服务台连接器已停用（enabled: false），不接受触发请求。"
    ),
    "self_release_forbidden": ErrorText(
        "不能放行自己申请的打款", "打款的申请人不能放行这笔打款（放行同样需要四眼原则）。"
    ),
    "release_not_allowed": ErrorText(
        "该操作员无权放行打款", "该操作员的角色在当前策略中没有放行（can_release）权限。"
    ),
    "payout_in_flight": ErrorText(
        "该打款正在发送中", "执行器正在向网关发送这笔打款，请稍后几秒再试。"
    ),
    "nothing_to_export": ErrorText(
        "没有可导出的打款", "该批次中没有可按此格式导出、等待线下打款的打款。"
    ),
    "sepa_debtor_not_configured": ErrorText(
        "未配置 SEPA 付款账户",
        "pain.001 文件需要付款账户：请设置 PAYOUTSVC_SEPA_DEBTOR_NAME 和 "
        "PAYOUTSVC_SEPA_DEBTOR_IBAN（以及 PAYOUTSVC_SEPA_DEBTOR_BIC）并重启服务。",
    ),
    "idempotency_key_in_use": ErrorText(
        "幂等键正在使用中", "使用此 Idempotency-Key 的请求仍在处理中，请稍后重试。"
    ),
    "already_approved": ErrorText("该操作员已审批过", "该操作员已经审批过这笔付款。"),
    "integration_exists": ErrorText("集成已存在", "已存在同一标识的集成。"),
    "operator_exists": ErrorText("操作员已存在", "已存在同一标识的操作员。"),
    "policy_version_conflict": ErrorText(
        "策略版本冲突", "付款策略已被修改，请读取当前版本后再提交。"
    ),
    "endpoint_disabled": ErrorText("Webhook 端点已停用", "该 Webhook 端点已停用。"),
    "recipient_already_blocked": ErrorText("收款人已在黑名单中", "该收款人已在黑名单中。"),
    # 413
    "payload_too_large": ErrorText("请求体过大", "请求体超过了此接口允许的大小。"),
    # 422
    "validation_failed": ErrorText("请求校验失败", "请求中有字段未通过校验，详见 errors。"),
    "idempotency_key_reused": ErrorText(
        "幂等键被用于不同的请求",
        "此 Idempotency-Key 已用于另一个不同的请求体；新的付款请使用新的键。",
    ),
    "invalid_recipient": ErrorText("收款人无效", "收款人信息未通过校验，详见 errors。"),
    "policy_violation": ErrorText("付款被策略禁止", "付款策略禁止这笔付款，详见 errors。"),
    "unknown_operator": ErrorText("未知的操作员", "没有这位操作员。"),
    "invalid_cursor": ErrorText("游标无效", "该游标不是本 API 返回的游标。"),
    "webhook_url_refused": ErrorText(
        "Webhook URL 被拒绝", "此 Webhook URL 不能使用，详见 errors。"
    ),
    "too_many_endpoints": ErrorText("Webhook 端点过多", "此集成的 Webhook 端点数量已达上限。"),
    # 429
    "rate_limited": ErrorText(
        "请求过于频繁", "超出了请求频率限制，请在 Retry-After 所示的秒数后重试。"
    ),
    # 500 / 503
    "internal_error": ErrorText(
        "服务器内部错误", "服务出现内部错误。报告问题时请附上 X-Request-Id。"
    ),
    "policy_changing": ErrorText("付款策略正在变更", "付款策略正在变更，请稍后重试。"),
    "gateway_unavailable": ErrorText("支付网关未配置", "此收款方式的支付网关尚未配置。"),
    "http_error": ErrorText("HTTP 错误", "无法处理此请求。"),
}

# -- field errors, by code ---------------------------------------------------------------
FIELD_FALLBACK: Final = "该字段的值无效。"
FIELD_ERRORS: Final[dict[str, str]] = {
    # request shape (pydantic, mapped in http_errors.py and policy/document.py)
    "required": "此字段为必填项。",
    "unknown_field": "未知字段。",
    "invalid_type": "类型不正确。",
    "invalid_choice": "不是允许的取值。",
    "invalid_format": "格式不正确。",
    "too_long": "长度超出上限。",
    "too_short": "长度不足。",
    "out_of_range": "超出允许的范围。",
    "invalid_json": "不是有效的 JSON。",
    "invalid": "值无效。",
    "null_not_allowed": "不能为 null。",
    "control_character": "不能包含 NUL 或其他控制字符。",
    "invalid_key": "metadata 的键必须为 1 到 40 个字符。",
    "too_many_keys": "metadata 最多允许 50 个键。",
    "value_too_long": "metadata 的值最多 500 个字符。",
    "invalid_event_filter": "事件过滤条件无效。",
    "invalid_cursor": "不是本 API 返回的游标。",
    # money (money.py)
    "amount_not_string": '金额必须是十进制字符串，例如 "12.50"。',
    "invalid_amount": '金额必须是普通的正十进制数，例如 "12.50"（不带符号、指数或分隔符）。',
    "too_many_decimals": "小数位数超过了该币种允许的位数。",
    "amount_not_positive": "金额必须大于零。",
    "amount_too_large": "金额超出上限。",
    "amount_below_minimum": "金额低于该收款方式的最低金额。",
    "invalid_currency": "币种必须是 ISO 4217 代码字符串。",
    "unknown_currency": "不是 ISO 4217 币种。",
    "unsupported_currency": "不支持此币种。",
    "currency_required": "金额必须同时给出币种。",
    # policy documents (policy/document.py)
    "currency_not_listed": "此处使用的币种未在 currencies 中列出。",
    "duplicate_currency": "币种重复列出。",
    "duplicate_reason": "原因重复列出。",
    "invalid_role_name": "角色名无效：请使用 1 到 40 个 a-z、0-9、'_' 或 '-' 字符，并以字母开头。",
    "invalid_timezone": "不是有效的时区。",
    "policy_version_conflict": "不是当前的策略版本。",
    # recipients (recipients/validation.py, recipients/service.py)
    "unsupported_type": "不支持此收款人类型。",
    "not_allowed": "此收款人不允许使用该值。",
    "invalid_length": "长度不正确。",
    "checksum_mismatch": "校验位不匹配，请仔细核对。",
    "invalid_country": "国家代码无效。",
    # operators and keys
    "unknown_operator": "不是在职的操作员。",
    "operator_disabled": "操作员已停用。",
    "operator_mismatch": "不是此 API 密钥绑定的操作员。",
    # webhook URLs (webhooks/ssrf.py REFUSAL_CODES)
    "invalid_url": "URL 无效。",
    "https_required": "Webhook URL 必须使用 https。",
    "unsupported_scheme": "Webhook URL 必须使用 https 或 http。",
    "credentials_in_url": "URL 中不能包含用户名或密码。",
    "non_canonical_ip": "IP 地址必须使用标准写法。",
    "private_address": "主机是（或解析到）非公网地址。",
    "unresolvable_host": "主机名无法解析。",
    # policy rules (policy/rules.py; the code of a policy_violation field error is the rule)
    "operator_active": "申请人不是在职的操作员。",
    "reason_allowed": "申请人的角色不允许使用此付款原因。",
    "currency_allowed": "不允许使用此币种。",
    "request_max": "金额超出单笔限额。",
    # batches (batches/parsing.py)
    "invalid_encoding": "CSV 文件必须是 UTF-8 编码。",
    "invalid_csv": "CSV 文件格式无效。",
    "duplicate": "该值在批次中重复出现。",
    # operators, policy
    "helpdesk_user_taken": "该服务台用户已关联到另一个操作员。",
    "unknown_connector": "没有这个 ID 的服务台连接器。",
    "invalid_time": "不是有效的时间（格式如 09:00）。",
    "manual_over_without_manual_mode": "只有在 mode 为 manual 时才能设置 manual_over。",
    # reconciliation (reconciliation/service.py, statement.py)
    "invalid_period": "对账期间无效：开始时间必须早于结束时间。",
    "unknown_gateway": "未知的网关。",
    "statement_required": "该网关无法查询，需要上传 CSV 对账单。",
    "invalid_reference": "参考号无效。",
    "invalid_status": "状态无效。",
    "missing_column": "CSV 对账单缺少必需的列。",
    # review (policy rule OpenAnomaly)
    "open_anomaly": "申请人或收款人是一项未处理异常的对象，不能自动批准。",
    "per_ticket_max": "这笔付款会使该工单的总额超出单工单限额。",
    "daily_request_total": "这笔付款会使申请人今天的总额超出每日限额。",
    "per_recipient_daily_count": "该收款人今天的付款笔数已达上限。",
    "per_recipient_daily_amount": "这笔付款会使该收款人今天的总额超出每日限额。",
    "recipient_blocked": "收款人在黑名单中。",
    "duplicate_suspected": "近期已有相同工单、收款人和金额的付款申请。",
    "recipient_warnings": "收款人校验产生了警告。",
    "requester_unverified": "API 密钥未绑定到申请人，需要操作员审批。",
    "role_auto_approve_limit": "金额超出自动审批限额。",
    "dual_approval_over": "金额超出双人审批阈值，需要两人审批。",
}

# The objects a 404 names ("No payout 'po_1'."); English is the raise site's word.
NOUNS: Final[dict[str, str]] = {
    "api key": "API 密钥",
    "integration": "集成",
    "operator": "操作员",
    "payout": "付款",
    "policy version": "策略版本",
    "recipient block": "收款人黑名单记录",
    "webhook delivery": "Webhook 投递",
    "webhook endpoint": "Webhook 端点",
    # recipients/validation.py labels
    "the card number": "卡号",
    "the routing number": "路由号码",
    "the account number": "账号",
    "alipay": "支付宝",
    "wechat": "微信",
    "chinese bank card": "中国银行卡",
    "us bank": "美国银行账户",
}

# -- texts with facts, by id -------------------------------------------------------------
MESSAGES: Final[dict[str, Text]] = {
    "list_separator": Text("; ", "；"),
    "and_more": Text(" (and {n} more)", "（另有 {n} 项）"),
    "not_found": Text("No {what} {id!r}.", "未找到{what_zh} {id}。"),  # what_zh: NOUNS
    "invalid_status_transition": Text(
        "Cannot {action} {id}: its status is {status!r}.",
        "无法对 {id} 执行 {action}：它当前的状态是 {status}。",
    ),
    "payload_too_large": Text(
        "The request body is larger than {limit} bytes.", "请求体超过了 {limit} 字节的上限。"
    ),
    "rate_limited_address": Text(
        "Too many requests from this address; see Retry-After.",
        "来自此地址的请求过多，请在 Retry-After 所示的秒数后重试。",
    ),
    "insufficient_scope": Text(
        "This call needs one of the scopes: {scopes}.", "此调用需要以下权限范围之一：{scopes}。"
    ),
    "policy_version_conflict": Text(
        "This document was based on version {expected}, but the current version is {current}. "
        "GET /v1/policy, re-apply the change and PUT again.",
        "此文档基于版本 {expected}，但当前版本是 {current}。"
        "请先 GET /v1/policy，重新修改后再 PUT。",
    ),
    "policy_version_current": Text("Current version: {current}.", "当前版本：{current}。"),
    "too_many_endpoints": Text(
        "This integration has {cap} webhook endpoints, the most it may have "
        "(PAYOUTSVC_WEBHOOK_MAX_ENDPOINTS); delete one first.",
        "此集成已有 {cap} 个 Webhook 端点，已达上限（PAYOUTSVC_WEBHOOK_MAX_ENDPOINTS），"
        "请先删除一个。",
    ),
    "already_approved": Text(
        "{operator} has already approved this payout; one operator counts once, so another "
        "approver is needed ({required} required).",
        "{operator} 已经审批过这笔付款；同一操作员只计一次，"
        "还需要其他审批人（共需 {required} 人）。",
    ),
    "self_approval_forbidden": Text(
        "{operator} requested this payout and cannot approve it; another operator must.",
        "{operator} 是这笔付款的申请人，不能审批它；必须由其他操作员审批。",
    ),
    "approval_limit_hidden": Text(
        "{operator} may not approve this payout's amount.", "{operator} 不能审批这笔付款的金额。"
    ),
    "approval_limit": Text(
        "{operator} ({role}) has an approval limit of {limit} under policy version {version}; "
        "this payout is {amount}.",
        "根据策略版本 {version}，{operator}（{role}）的审批限额是 {limit}；这笔付款是 {amount}。",
    ),
    "approver_rights_none": Text(
        "{operator} ({role}) has no approval rights under policy version {version}.",
        "根据策略版本 {version}，{operator}（{role}）没有审批权限。",
    ),
    "approver_rights_hidden": Text(
        "{operator} may not approve payouts.", "{operator} 不能审批付款。"
    ),
    "approval_rights_none": Text(
        "{operator} ({role}) has no approval rights under policy version {version}; this "
        "payout is {amount}.",
        "根据策略版本 {version}，{operator}（{role}）没有审批权限；这笔付款是 {amount}。",
    ),
    # pydantic's length and range errors (http_errors._BOUNDS); English is pydantic's own
    "field.max_length": Text(
        "String should have at most {limit} characters", "最多 {limit} 个字符。"
    ),
    "field.min_length": Text(
        "String should have at least {limit} characters", "至少 {limit} 个字符。"
    ),
    "field.max_items": Text("Should have at most {limit} items", "最多 {limit} 项。"),
    "field.min_items": Text("Should have at least {limit} items", "至少 {limit} 项。"),
    "field.ge": Text(
        "Input should be greater than or equal to {limit}", "必须大于或等于 {limit}。"
    ),
    "field.le": Text("Input should be less than or equal to {limit}", "必须小于或等于 {limit}。"),
    # recipients (recipients/validation.py)
    "recipient.unsupported_type": Text(
        "This recipient type is not supported.", "不支持此收款人类型。"
    ),
    "recipient.currency_only": Text(
        "{label} payouts can only be made in {expected}.", "{label_zh}付款只能使用 {expected}。"
    ),
    "recipient.digits": Text("{label} must contain digits only.", "{label_zh}只能包含数字。"),
    "recipient.digits_length": Text(
        "{label} must be {expected} digits long (got {got}).",
        "{label_zh}必须是 {expected} 位数字（实际 {got} 位）。",
    ),
    "recipient.alipay_email": Text(
        "The Alipay account is not a valid email.", "支付宝账号不是有效的邮箱地址。"
    ),
    "recipient.alipay_user_id": Text(
        "An Alipay user id must be 16 digits starting with 2088.",
        "支付宝用户 ID 必须是以 2088 开头的 16 位数字。",
    ),
    "recipient.alipay_minimum": Text(
        "Alipay payouts must be at least 0.10 CNY.", "支付宝付款金额至少为 0.10 CNY。"
    ),
    "recipient.alipay_account": Text(
        "The Alipay account must be a mainland China mobile number, an email, "
        "a 16-digit user id starting with 2088 or an open id starting with 0.",
        "支付宝账号必须是中国大陆手机号、邮箱、以 2088 开头的 16 位用户 ID 或以 0 开头的 open id。",
    ),
    "recipient.alipay_not_mobile": Text(
        "The Alipay account is a phone number but not a mainland China mobile number.",
        "支付宝账号是电话号码，但不是中国大陆手机号。",
    ),
    "recipient.wechat_openid_chars": Text(
        "The WeChat openid may only contain letters, digits, '_' and '-'.",
        "微信 openid 只能包含字母、数字、'_' 和 '-'。",
    ),
    "recipient.wechat_openid_length": Text(
        "The WeChat openid must be 20-64 characters long (got {got}).",
        "微信 openid 必须为 20 到 64 个字符（实际 {got} 个）。",
    ),
    "recipient.wechat_app_id": Text(
        "The WeChat app id must be 'wx' followed by 16 letters or digits.",
        "微信 app id 必须是 'wx' 加 16 个字母或数字。",
    ),
    "recipient.wechat_minimum": Text(
        "WeChat payouts must be at least 0.10 CNY.", "微信付款金额至少为 0.10 CNY。"
    ),
    "recipient.wechat_name_not_allowed": Text(
        "WeChat Pay takes the recipient's name only from 0.30 CNY; leave it out below.",
        "微信支付在金额达到 0.30 CNY 时才接受收款人姓名；低于此金额请不要填写。",
    ),
    "recipient.wechat_name_required": Text(
        "The recipient's real name is required for WeChat payouts from 2000.00 CNY.",
        "微信付款金额达到 2000.00 CNY 时必须提供收款人的真实姓名。",
    ),
    "recipient.card_luhn": Text(
        "The card number fails the Luhn check; please double-check it.",
        "卡号未通过 Luhn 校验，请仔细核对。",
    ),
    "recipient.iban_shape": Text(
        "The IBAN must be a 2-letter country code, 2 check digits and up to 30 letters or digits.",
        "IBAN 必须由 2 个字母的国家代码、2 位校验位和最多 30 个字母或数字组成。",
    ),
    "recipient.iban_country": Text(
        "'{country}' is not a country that uses IBANs.", "'{country}' 不是使用 IBAN 的国家。"
    ),
    "recipient.iban_length_unknown": Text(
        "The IBAN has the wrong length for {country}.", "IBAN 的长度不符合 {country} 的要求。"
    ),
    "recipient.iban_length": Text(
        "A {country} IBAN must be {expected} characters long (got {got}).",
        "{country} 的 IBAN 必须为 {expected} 个字符（实际 {got} 个）。",
    ),
    "recipient.iban_checksum": Text(
        "The IBAN check digits do not match; please double-check it.",
        "IBAN 校验位不匹配，请仔细核对。",
    ),
    "recipient.iban_format": Text(
        "The IBAN does not match the account format of {country}.",
        "IBAN 不符合 {country} 的账号格式。",
    ),
    "recipient.bic.invalid_country": Text(
        "The BIC is not valid (unknown country).", "BIC 无效（国家未知）。"
    ),
    "recipient.bic.invalid_length": Text(
        "The BIC is not valid (it must be 8 or 11 characters).",
        "BIC 无效（必须为 8 或 11 个字符）。",
    ),
    "recipient.bic.checksum_mismatch": Text(
        "The BIC is not valid (checksum mismatch).", "BIC 无效（校验不匹配）。"
    ),
    "recipient.bic.invalid_format": Text(
        "The BIC is not valid (wrong format).", "BIC 无效（格式错误）。"
    ),
    "recipient.routing_symbol": Text(
        "The routing number does not start with a valid Federal Reserve routing symbol.",
        "路由号码的开头不是有效的美联储路由符号。",
    ),
    "recipient.routing_checksum": Text(
        "The routing number fails the ABA checksum; please double-check it.",
        "路由号码未通过 ABA 校验，请仔细核对。",
    ),
    "recipient.paypal_email": Text(
        "The PayPal account is not a valid email.", "PayPal 账号不是有效的邮箱地址。"
    ),
    "recipient.paypal_account": Text(
        "The PayPal account must be an email, an E.164 phone number starting with '+' "
        "or a PayPal payer id (13 letters and digits).",
        "PayPal 账号必须是邮箱、以 '+' 开头的 E.164 电话号码"
        "或 PayPal payer id（13 个字母和数字）。",
    ),
    "recipient.paypal_phone": Text(
        "The PayPal account is not a valid phone number.", "PayPal 账号不是有效的电话号码。"
    ),
    "recipient.stripe_account": Text(
        "The Stripe account must be a connected account id such as 'acct_…'.",
        "Stripe 账号必须是 connected account id，例如 'acct_…'。",
    ),
    "not_found_control_character": Text(
        "No resource has a control character in its path.", "路径中含有控制字符，不存在这样的资源。"
    ),
    "internal_error": Text(
        "Something went wrong on our side. Quote the X-Request-Id when you report it.",
        "服务出现内部错误。报告问题时请附上 X-Request-Id。",
    ),
    # policy rules: the reasons stored on a payout are the English rendering
    "rule.not_active": Text("{who!r} is not an active operator.", "{who} 不是在职的操作员。"),
    "rule.unknown_operator": Text(
        "Operator {who!r} is not a known operator.", "操作员 {who} 不是已知的操作员。"
    ),
    "rule.operator_disabled": Text("Operator {who!r} is disabled.", "操作员 {who} 已停用。"),
    "rule.role_undefined": Text(
        "Operator {who!r} has role {role!r}, which policy version {version} does not define.",
        "操作员 {who} 的角色 {role} 在策略版本 {version} 中没有定义。",
    ),
    "rule.reason_not_allowed": Text(
        "Reason {reason!r} is not allowed for the requester.",
        "申请人不能使用付款原因 {reason}。",
    ),
    "rule.reason_not_allowed_role": Text(
        "Reason {reason!r} is not allowed for the {role} role (allowed: {allowed}).",
        "{role} 角色不能使用付款原因 {reason}（允许的原因：{allowed}）。",
    ),
    "rule.currency_not_allowed": Text(
        "{currency} is not an allowed currency (allowed: {allowed}).",
        "{currency} 不是允许的币种（允许的币种：{allowed}）。",
    ),
    "rule.currency_not_for_role": Text(
        "The {role} role cannot request payouts in {currency}.",
        "{role} 角色不能申请 {currency} 付款。",
    ),
    "rule.currency_not_for_requester": Text(
        "The requester's role cannot request payouts in {currency}.",
        "申请人的角色不能申请 {currency} 付款。",
    ),
    "rule.request_max": Text(
        "{amount} exceeds the {role} request limit of {limit}.",
        "{amount} 超出了 {role} 角色的单笔限额 {limit}。",
    ),
    "rule.request_max_hidden": Text(
        "{amount} exceeds the requester's request limit.", "{amount} 超出了申请人的单笔限额。"
    ),
    "rule.per_ticket_max": Text(
        "This payout would bring the ticket's total to {total} (already {already}), over the "
        "per-ticket limit of {limit}.",
        "这笔付款会使该工单的总额达到 {total}（已有 {already}），超出单工单限额 {limit}。",
    ),
    "rule.per_ticket_max_hidden": Text(
        "This payout would bring the ticket's total over the per-ticket limit of {limit}.",
        "这笔付款会使该工单的总额超出单工单限额 {limit}。",
    ),
    "rule.daily_request_total": Text(
        "This payout would bring {who}'s total for today to {total} (already {already}), over "
        "the {role} daily limit of {limit}.",
        "这笔付款会使 {who} 今天的总额达到 {total}（已有 {already}），"
        "超出 {role} 角色的每日限额 {limit}。",
    ),
    "rule.daily_request_total_no_totals": Text(
        "This payout would bring {who}'s total for today over the {role} daily limit of {limit}.",
        "这笔付款会使 {who} 今天的总额超出 {role} 角色的每日限额 {limit}。",
    ),
    "rule.daily_request_total_no_role": Text(
        "This payout would bring {who}'s total for today to {total} (already {already}), over "
        "the requester's daily limit.",
        "这笔付款会使 {who} 今天的总额达到 {total}（已有 {already}），超出申请人的每日限额。",
    ),
    "rule.daily_request_total_hidden": Text(
        "This payout would bring {who}'s total for today over the requester's daily limit.",
        "这笔付款会使 {who} 今天的总额超出申请人的每日限额。",
    ),
    "rule.per_recipient_daily_count": Text(
        "The recipient already has {count} payout(s) today; the limit is {limit} per recipient "
        "per day.",
        "该收款人今天已有 {count} 笔付款；每个收款人每天最多 {limit} 笔。",
    ),
    "rule.per_recipient_daily_count_hidden": Text(
        "The recipient has reached the limit of {limit} payout(s) per recipient per day.",
        "该收款人已达到每天 {limit} 笔付款的上限。",
    ),
    "rule.per_recipient_daily_amount": Text(
        "This payout would bring the recipient's total for today to {total} (already "
        "{already}), over the per-recipient daily limit of {limit}.",
        "这笔付款会使该收款人今天的总额达到 {total}（已有 {already}），"
        "超出每个收款人的每日限额 {limit}。",
    ),
    "rule.per_recipient_daily_amount_hidden": Text(
        "This payout would bring the recipient's total for today over the per-recipient daily "
        "limit of {limit}.",
        "这笔付款会使该收款人今天的总额超出每个收款人的每日限额 {limit}。",
    ),
    "rule.recipient_blocked": Text("The recipient is on the blocklist.", "收款人在黑名单中。"),
}
