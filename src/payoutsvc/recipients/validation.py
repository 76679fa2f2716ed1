"""Account checks per recipient type (API.md, Recipients).

``schemas`` only checks the shape of a recipient; this module checks that the account can
actually be paid: formats, checksums, provider currencies and amount limits. It also
normalizes the recipient to the form in which it is stored and paid, and derives a stable
fingerprint of it (for the blocklist and per-recipient limits) so the account never has to
be stored in clear for those purposes.

Messages never echo the account value: they name the field and the problem only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from schwifty import BIC, IBAN
from schwifty import exceptions as schwifty_errors
from stdnum import luhn
from stdnum.us import rtn

from payoutsvc.errors import FieldError
from payoutsvc.messages import NOUNS, Message, message
from payoutsvc.recipients.schemas import (
    STRIPE_ACCOUNT_PATTERN,
    WECHAT_APP_ID_PATTERN,
    AlipayRecipient,
    BankCardCnRecipient,
    IbanRecipient,
    PaypalRecipient,
    RecipientIn,
    StripeAccountRecipient,
    UsBankRecipient,
    WechatRecipient,
)

__all__ = [
    "ALIPAY_MIN_AMOUNT_MINOR",
    "WECHAT_MIN_AMOUNT_MINOR",
    "WECHAT_NAME_ALLOWED_FROM_MINOR",
    "WECHAT_NAME_REQUIRED_FROM_MINOR",
    "RecipientCheck",
    "recipient_fingerprint",
    "validate_recipient",
]

# Provider limits, in CNY minor units (fen).
ALIPAY_MIN_AMOUNT_MINOR = 10  # 0.10 CNY
# WeChat Pay's floor for one transfer is 0.10 CNY, and a recipient name may only be sent
# from 0.30 CNY (商家转账 FAQ 4013778940).
WECHAT_MIN_AMOUNT_MINOR = 10  # 0.10 CNY
WECHAT_NAME_ALLOWED_FROM_MINOR = 30  # 0.30 CNY
WECHAT_NAME_REQUIRED_FROM_MINOR = 200_000  # 2000.00 CNY, inclusive

_ACCOUNT = "recipient.account"

_ALIPAY_USER_ID = re.compile(r"2088[0-9]{12}")
# An Alipay open id (per-app user identifier, e.g. Alipay's documentation example
# "074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5"): "0", then letters and digits with at
# least one letter (so never a phone number), 20-64 characters.
_ALIPAY_OPEN_ID = re.compile(r"0(?=[0-9]*[A-Za-z])[0-9A-Za-z]{19,63}")
_PHONE_CHARS = re.compile(r"\+?[0-9][0-9 ().\-]*")
_WECHAT_OPENID_CHARS = re.compile(r"[A-Za-z0-9_-]+")
# fullmatch with the document's patterns: "$" there is the end of the text.
_WECHAT_APP_ID = re.compile(WECHAT_APP_ID_PATTERN.removesuffix("$"))
_STRIPE_ACCOUNT = re.compile(STRIPE_ACCOUNT_PATTERN.removesuffix("$"))
# A PayPal payer id: 13 characters of PayPal's Base32 alphabet (no 0, 1, I, O), as PayPal's
# OpenAPI documents give it (``^[2-9A-HJ-NP-Z]{13}$``), with at least one letter: 13 digits
# are far likelier a phone number without its "+".
_PAYPAL_PAYER_ID = re.compile(r"(?=.*[A-Z])[2-9A-HJ-NP-Z]{13}")
_SEPARATORS = re.compile(r"[\s-]+")
_WHITESPACE = re.compile(r"\s+")
_IBAN_SHAPE = re.compile(r"[A-Z]{2}[0-9]{2}[A-Z0-9]+")

# ABA routing numbers: the first two digits are a Federal Reserve routing symbol
# (00 US government, 01-12 banks, 21-32 thrifts, 61-72 electronic, 80 traveller's cheques).
_ABA_PREFIXES = frozenset(
    [f"{n:02d}" for n in range(0, 13)]
    + [f"{n:02d}" for n in range(21, 33)]
    + [f"{n:02d}" for n in range(61, 73)]
    + ["80"]
)

_FINGERPRINT_VERSION = "rfp2"  # rfp2: keyed (HMAC)


@dataclass(frozen=True)
class RecipientCheck:
    """Outcome of :func:`validate_recipient`.

    ``errors``: any error refuses the recipient (422 ``invalid_recipient`` on payouts).
    ``warnings``: the recipient is accepted but the payout is never auto-approved.
    ``normalized``: the recipient as it will be stored and paid; same keys as the input's
    ``model_dump()`` (including ``type``). Fields that failed validation keep their input value.
    """

    errors: list[FieldError] = field(default_factory=list)
    warnings: list[FieldError] = field(default_factory=list)
    normalized: dict[str, str | None] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return not self.errors


class _Checker:
    """Collects errors/warnings and the normalized values while one recipient is checked."""

    def __init__(self, recipient: RecipientIn) -> None:
        self.errors: list[FieldError] = []
        self.warnings: list[FieldError] = []
        self.normalized: dict[str, str | None] = {
            key: None if value is None else str(value)
            for key, value in recipient.model_dump().items()
        }

    def error(self, field_path: str, code: str, text: Message) -> None:
        self.errors.append(FieldError.of(field_path, code, text))

    def warning(self, field_path: str, code: str, text: Message) -> None:
        self.warnings.append(FieldError.of(field_path, code, text))

    def set(self, key: str, value: str | None) -> None:
        self.normalized[key] = value

    def result(self) -> RecipientCheck:
        return RecipientCheck(list(self.errors), list(self.warnings), dict(self.normalized))


def validate_recipient(
    recipient: RecipientIn, amount_minor: int | None, currency: str | None
) -> RecipientCheck:
    """Check a recipient (and, when given, the payout amount/currency against provider rules).

    ``amount_minor`` is in minor units of ``currency``. When ``currency`` is ``None`` the
    currency check is skipped; amount limits are only checked when both are given (a minor
    amount means nothing without its currency).
    """
    checker = _Checker(recipient)
    cur = currency.strip().upper() if currency is not None else None
    if isinstance(recipient, AlipayRecipient):
        _check_alipay(checker, recipient, amount_minor, cur)
    elif isinstance(recipient, WechatRecipient):
        _check_wechat(checker, recipient, amount_minor, cur)
    elif isinstance(recipient, BankCardCnRecipient):
        _check_bank_card_cn(checker, recipient, cur)
    elif isinstance(recipient, IbanRecipient):
        _check_iban(checker, recipient)
    elif isinstance(recipient, UsBankRecipient):
        _check_us_bank(checker, recipient, cur)
    elif isinstance(recipient, PaypalRecipient):
        _check_paypal(checker, recipient)
    elif isinstance(recipient, StripeAccountRecipient):
        _check_stripe_account(checker, recipient)
    else:  # pragma: no cover - the union is closed; guards against a new type without rules
        checker.error("recipient.type", "unsupported_type", message("recipient.unsupported_type"))
    return checker.result()


def recipient_fingerprint(normalized: Mapping[str, str | None], key: bytes) -> str:
    """Stable HMAC-SHA256 hex identifying a recipient, from its *normalized* form.

    Covers the type and the account, plus ``routing_number`` for ``us_bank`` and ``app_id``
    for ``wechat`` (an openid is only unique within its app). Email accounts are compared
    case-insensitively. Used for the blocklist and per-recipient limits so those never need
    the account in clear. Keyed (``key``: the server's fingerprint key, see
    ``crypto.derive_fingerprint_key``) because a plain hash of an 11-digit phone number is
    reversed by trying every number.
    """
    if len(key) < 16:
        raise ValueError("A recipient fingerprint key needs at least 16 bytes.")
    rtype = normalized.get("type")
    account = normalized.get("account")
    if not rtype or not account:
        raise ValueError("A recipient fingerprint needs the normalized 'type' and 'account'.")
    if "@" in account:
        account = account.lower()
    parts: list[str] = [_FINGERPRINT_VERSION, rtype, account]
    if rtype == "us_bank":
        parts.append(normalized.get("routing_number") or "")
    elif rtype == "wechat":
        parts.append(normalized.get("app_id") or "")
    # JSON encoding keeps the parts unambiguous whatever characters they contain.
    payload = json.dumps(parts, ensure_ascii=False, separators=(",", ":"))
    return hmac.new(key, payload.encode("utf-8"), hashlib.sha256).hexdigest()


# --- shared checks ------------------------------------------------------------------------


def _label(label: str) -> dict[str, str]:
    """A label's parameters for a catalogue message: as given, and in Chinese."""
    return {"label": label, "label_zh": NOUNS.get(label.lower(), label)}


def _require_currency(checker: _Checker, currency: str | None, expected: str, label: str) -> bool:
    """Error unless ``currency`` is ``expected``; returns whether amount limits may be applied."""
    if currency is None:
        return False
    if currency != expected:
        text = message("recipient.currency_only", expected=expected, **_label(label))
        checker.error("currency", "unsupported_currency", text)
        return False
    return True


def _normalize_email(value: str) -> str | None:
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError:
        return None


def _parse_phone(value: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    if not _PHONE_CHARS.fullmatch(value):
        return None
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None
    return number if phonenumbers.is_valid_number(number) else None


def _digits_field(
    checker: _Checker,
    value: str,
    field_path: str,
    label: str,
    min_len: int,
    max_len: int,
) -> str | None:
    """Strip spaces/dashes; error unless ``min_len``-``max_len`` digits remain."""
    compact = _SEPARATORS.sub("", value)
    if not compact.isascii() or not compact.isdigit():
        checker.error(field_path, "invalid_format", message("recipient.digits", **_label(label)))
        return None
    if not min_len <= len(compact) <= max_len:
        expected = f"{min_len}" if min_len == max_len else f"{min_len}-{max_len}"
        text = message(
            "recipient.digits_length", expected=expected, got=len(compact), **_label(label)
        )
        checker.error(field_path, "invalid_length", text)
        return None
    return compact


# --- per type -------------------------------------------------------------------------------


def _check_alipay(
    checker: _Checker, recipient: AlipayRecipient, amount_minor: int | None, currency: str | None
) -> None:
    account = recipient.account
    if _ALIPAY_OPEN_ID.fullmatch(account):
        # An open id is case-sensitive and scoped to our Alipay app id: kept as given.
        checker.set("account", account)
    elif "@" in account:
        email = _normalize_email(account)
        if email is None:
            checker.error(_ACCOUNT, "invalid_format", message("recipient.alipay_email"))
        else:
            checker.set("account", email)
    else:
        compact = _SEPARATORS.sub("", account)
        if compact.startswith("2088") and compact.isascii() and compact.isdigit():
            if _ALIPAY_USER_ID.fullmatch(compact):
                checker.set("account", compact)
            else:
                checker.error(_ACCOUNT, "invalid_length", message("recipient.alipay_user_id"))
        else:
            _check_alipay_mobile(checker, account)

    cny = _require_currency(checker, currency, "CNY", "Alipay")
    if cny and amount_minor is not None and amount_minor < ALIPAY_MIN_AMOUNT_MINOR:
        checker.error("amount", "amount_below_minimum", message("recipient.alipay_minimum"))


def _check_alipay_mobile(checker: _Checker, account: str) -> None:
    generic = message("recipient.alipay_account")
    if not _PHONE_CHARS.fullmatch(account):
        checker.error(_ACCOUNT, "invalid_format", generic)
        return
    number = _parse_phone(account, "CN")
    if number is None or phonenumbers.region_code_for_number(number) != "CN":
        checker.error(_ACCOUNT, "invalid_format", generic)
        return
    if phonenumbers.number_type(number) not in (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    ):
        checker.error(_ACCOUNT, "invalid_format", message("recipient.alipay_not_mobile"))
        return
    checker.set("account", phonenumbers.national_significant_number(number))


def _check_wechat(
    checker: _Checker, recipient: WechatRecipient, amount_minor: int | None, currency: str | None
) -> None:
    openid = recipient.account
    if not _WECHAT_OPENID_CHARS.fullmatch(openid):
        checker.error(_ACCOUNT, "invalid_format", message("recipient.wechat_openid_chars"))
    elif not 20 <= len(openid) <= 64:
        text = message("recipient.wechat_openid_length", got=len(openid))
        checker.error(_ACCOUNT, "invalid_length", text)

    if not _WECHAT_APP_ID.fullmatch(recipient.app_id):
        checker.error("recipient.app_id", "invalid_format", message("recipient.wechat_app_id"))

    if _require_currency(checker, currency, "CNY", "WeChat") and amount_minor is not None:
        if amount_minor < WECHAT_MIN_AMOUNT_MINOR:
            checker.error("amount", "amount_below_minimum", message("recipient.wechat_minimum"))
        elif amount_minor < WECHAT_NAME_ALLOWED_FROM_MINOR and recipient.name:
            text = message("recipient.wechat_name_not_allowed")
            checker.error("recipient.name", "not_allowed", text)
        if amount_minor >= WECHAT_NAME_REQUIRED_FROM_MINOR and not recipient.name:
            text = message("recipient.wechat_name_required")
            checker.error("recipient.name", "required", text)


def _check_bank_card_cn(
    checker: _Checker, recipient: BankCardCnRecipient, currency: str | None
) -> None:
    card = _digits_field(checker, recipient.account, _ACCOUNT, "The card number", 16, 19)
    if card is not None:
        checker.set("account", card)
        if not luhn.is_valid(card):
            checker.warning(_ACCOUNT, "checksum_mismatch", message("recipient.card_luhn"))
    _require_currency(checker, currency, "CNY", "Chinese bank card")


_SCHWIFTY_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (schwifty_errors.InvalidCountryCode, "invalid_country"),
    (schwifty_errors.InvalidLength, "invalid_length"),
    (schwifty_errors.InvalidChecksumDigits, "checksum_mismatch"),
)


def _check_iban(checker: _Checker, recipient: IbanRecipient) -> None:
    compact = _WHITESPACE.sub("", recipient.account).upper()
    if not _IBAN_SHAPE.fullmatch(compact) or len(compact) > 34:
        checker.error(_ACCOUNT, "invalid_format", message("recipient.iban_shape"))
    else:
        try:
            iban = IBAN(compact)
        except schwifty_errors.SchwiftyException as exc:
            checker.error(_ACCOUNT, *_describe_iban_error(exc, compact))
        else:
            checker.set("account", str(iban.compact))

    if recipient.bic is not None:
        try:
            bic = BIC(recipient.bic)
        except schwifty_errors.SchwiftyException as exc:
            code = _code_for(exc, "invalid_format")
            checker.error("recipient.bic", code, message(f"recipient.bic.{code}"))
        else:
            checker.set("bic", str(bic.compact))


def _describe_iban_error(exc: Exception, compact: str) -> tuple[str, Message]:
    country = compact[:2]
    code = _code_for(exc, "invalid_format")
    if code == "invalid_country":
        return code, message("recipient.iban_country", country=country)
    if code == "invalid_length":
        try:
            expected = int(IBAN(compact, allow_invalid=True).spec.iban_length)
        except (schwifty_errors.SchwiftyException, AttributeError, TypeError, ValueError):
            return code, message("recipient.iban_length_unknown", country=country)
        text = message(
            "recipient.iban_length", country=country, expected=expected, got=len(compact)
        )
        return code, text
    if code == "checksum_mismatch":
        return code, message("recipient.iban_checksum")
    return code, message("recipient.iban_format", country=country)


def _code_for(exc: Exception, default: str) -> str:
    for exc_type, code in _SCHWIFTY_ERRORS:
        if isinstance(exc, exc_type):
            return code
    return default


def _check_us_bank(checker: _Checker, recipient: UsBankRecipient, currency: str | None) -> None:
    routing_field = "recipient.routing_number"
    routing = _digits_field(
        checker, recipient.routing_number, routing_field, "The routing number", 9, 9
    )
    if routing is not None:
        if routing[:2] not in _ABA_PREFIXES or routing == "000000000":
            checker.error(routing_field, "invalid_format", message("recipient.routing_symbol"))
        elif not rtn.is_valid(routing):
            text = message("recipient.routing_checksum")
            checker.error(routing_field, "checksum_mismatch", text)
        else:
            checker.set("routing_number", routing)

    account = _digits_field(checker, recipient.account, _ACCOUNT, "The account number", 4, 17)
    if account is not None:
        checker.set("account", account)

    _require_currency(checker, currency, "USD", "US bank")


def _check_paypal(checker: _Checker, recipient: PaypalRecipient) -> None:
    account = recipient.account
    if "@" in account:
        email = _normalize_email(account)
        if email is None:
            checker.error(_ACCOUNT, "invalid_format", message("recipient.paypal_email"))
        else:
            checker.set("account", email)
        return
    if not account.startswith("+"):
        payer_id = account.strip().upper()
        if _PAYPAL_PAYER_ID.fullmatch(payer_id):
            checker.set("account", payer_id)
            return
        checker.error(_ACCOUNT, "invalid_format", message("recipient.paypal_account"))
        return
    number = _parse_phone(account, None)
    if number is None:
        checker.error(_ACCOUNT, "invalid_format", message("recipient.paypal_phone"))
        return
    checker.set("account", phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def _check_stripe_account(checker: _Checker, recipient: StripeAccountRecipient) -> None:
    if not _STRIPE_ACCOUNT.fullmatch(recipient.account):
        checker.error(_ACCOUNT, "invalid_format", message("recipient.stripe_account"))
