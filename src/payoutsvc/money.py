"""Money at the API edge: decimal strings in major units <-> integer minor units.

Inside the service money is always ``int`` minor units plus an ISO 4217 code; decimal strings
exist only in request and response bodies.
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import cache

from iso4217 import Currency

# Plain decimal notation only: no sign, no exponent, no thousands separators, no whitespace.
AMOUNT_SHAPE = r"(0|[1-9][0-9]{0,17})(\.[0-9]{1,18})?"
_AMOUNT_PATTERN = re.compile(rf"^{AMOUNT_SHAPE}$")

# The largest amount accepted, in minor units of any currency. Amounts are stored as 64-bit
# integers and daily totals add them up in SQL: a cap far below 2**63 keeps every sum exact
# (an unchecked 18-digit amount overflowed the column and answered 500).
MAX_AMOUNT_MINOR = 10**15


class MoneyError(ValueError):
    """A malformed amount or currency; ``code`` is the stable machine code for the field error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@cache
def payable_currencies() -> tuple[str, ...]:
    """Every code :func:`currency_exponent` accepts, sorted (the OpenAPI ``enum`` of currency
    fields, so the document allows exactly what the validation does)."""
    return tuple(sorted({c.code for c in Currency if c.exponent is not None}))


@cache
def currency_exponent(code: str) -> int:
    """Number of minor-unit digits for an active ISO 4217 currency; raises for unknown codes.

    Funds and precious-metal codes (XAU, XDR, …) have no minor unit and are not payable.
    """
    if not re.fullmatch(r"[A-Z]{3}", code):
        raise MoneyError("invalid_currency", f"{code!r} is not an ISO 4217 currency code.")
    try:
        currency = Currency(code)
    except ValueError:
        raise MoneyError("unknown_currency", f"{code!r} is not an ISO 4217 currency.") from None
    exponent = currency.exponent
    if exponent is None:
        raise MoneyError("unsupported_currency", f"{code} has no minor unit and cannot be paid.")
    return int(exponent)


def is_known_currency(code: str) -> bool:
    try:
        currency_exponent(code)
    except MoneyError:
        return False
    return True


def parse_amount(amount: object, currency: str, *, allow_zero: bool = False) -> int:
    """Parse a decimal string in major units into minor units, strictly.

    Rejects numbers (JSON floats/ints lose precision or hide intent), exponents, signs, zero
    (unless ``allow_zero``) and more decimals than the currency allows.
    """
    if not isinstance(amount, str):
        raise MoneyError("amount_not_string", 'Amount must be a decimal string such as "12.50".')
    exponent = currency_exponent(currency)
    if not _AMOUNT_PATTERN.fullmatch(amount):
        raise MoneyError(
            "invalid_amount",
            f'{amount!r} is not a plain positive decimal such as "12.50" '
            "(no sign, exponent or separators).",
        )
    _, _, fraction = amount.partition(".")
    if len(fraction) > exponent:
        raise MoneyError(
            "too_many_decimals",
            f"{currency} allows {exponent} decimal place(s); {amount!r} has {len(fraction)}.",
        )
    minor = int(Decimal(amount).scaleb(exponent))
    if minor == 0 and not allow_zero:
        raise MoneyError("amount_not_positive", "Amount must be greater than zero.")
    if minor > MAX_AMOUNT_MINOR:
        raise MoneyError(
            "amount_too_large",
            f"Amount must be at most {format_amount(MAX_AMOUNT_MINOR, currency)} {currency}.",
        )
    return minor


def format_amount(minor: int, currency: str) -> str:
    """Minor units to the canonical decimal string, e.g. ``1250, "CNY"`` -> ``"12.50"``."""
    exponent = currency_exponent(currency)
    if exponent == 0:
        return str(minor)
    sign = "-" if minor < 0 else ""
    whole, fraction = divmod(abs(minor), 10**exponent)
    return f"{sign}{whole}.{fraction:0{exponent}d}"


def format_money(minor: int, currency: str) -> str:
    """``1250, "CNY"`` -> ``"12.50 CNY"``; never raises, even for an unknown currency."""
    try:
        return f"{format_amount(minor, currency)} {currency}"
    except MoneyError:
        return f"{minor} minor units of {currency}"
