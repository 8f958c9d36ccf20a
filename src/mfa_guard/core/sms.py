"""SMS codes and phone numbers: pure rules (no sending here).

A code has 6 digits from the CSPRNG; only a keyed hash of it, bound to the session that asked for
it, is stored (NIST SP 800-63B 5.1.3.2, ASVS 2.7.x).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Collection

import phonenumbers

from mfa_guard.errors import Denied, Reason

CODE_DIGITS = 6
MAX_PHONE_LENGTH = 32
_MOBILE = frozenset(
    {phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE}
)


def new_code() -> str:
    return str(secrets.randbelow(10**CODE_DIGITS)).zfill(CODE_DIGITS)


def code_hash(key: bytes, code: str, binding: str) -> str:
    """A keyed hash of the code and the session binding: useless to whoever reads the store."""
    message = f"{binding}\x00{code}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def binding_of(key: bytes, session_nonce: str) -> str:
    return hmac.new(key, b"sms binding\x00" + session_nonce.encode(), hashlib.sha256).hexdigest()[
        :32
    ]


# What people type in a phone number: ASCII digits and separators. libphonenumber would also read
# full-width or Arabic-Indic digits and drop a NUL; the kit refuses them rather than guess.
_PHONE_CHARACTERS = frozenset("0123456789+-.() \t")


def normalise_phone(raw: str, allowed_regions: Collection[str]) -> str | Denied:
    """The number in E.164 if it is a valid mobile number of an allowed country or territory
    (its ISO 3166 region, not its calling code: +1 876 is Jamaica, not the United States)."""
    if (
        len(raw) > MAX_PHONE_LENGTH
        or not raw.strip().startswith(("+", "00"))
        or not set(raw) <= _PHONE_CHARACTERS
    ):
        return Denied(Reason.PHONE_NOT_INTERNATIONAL)
    text = raw.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_valid_number(number):
        return Denied(Reason.INVALID_PHONE)
    if phonenumbers.number_type(number) not in _MOBILE:
        return Denied(Reason.NOT_A_MOBILE)
    region = phonenumbers.region_code_for_number(number)
    if region not in allowed_regions:
        return Denied(Reason.PHONE_COUNTRY_NOT_ALLOWED, params={"region": str(region)})
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def calling_code(e164: str) -> int:
    return int(phonenumbers.parse(e164, None).country_code or 0)


def mask_phone(e164: str) -> str:
    """``+33 •••• ••12``: enough for the user to recognise the number, not to learn it."""
    country = calling_code(e164)
    return f"+{country} •••• ••{e164[-2:]}"
