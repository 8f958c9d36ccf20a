"""What the kit says about SMS codes, in one place: the text message's body, a code's lifetime
and the wait before another text. The page after a send and the text itself say the lifetime
with the same sentence, from the same number (``sms.code_ttl_seconds``).

Each sentence is a gettext message (extracted by ``python -m mfa_guard.web.i18n``): the pages
pass their language's translations, the text message and the JSON API use English.
"""

from __future__ import annotations

import gettext
import math

ENGLISH = gettext.NullTranslations()
MINUTE = 60
HOUR = 3600


def lifetime(seconds: int, translations: gettext.NullTranslations = ENGLISH) -> str:
    """The lifetime sentence ("It expires in 10 minutes."): whole minutes, else seconds (a
    lifetime is never rounded)."""
    if seconds % MINUTE == 0:
        minutes = seconds // MINUTE
        text = translations.ngettext(
            "It expires in %(num)d minute.", "It expires in %(num)d minutes.", minutes
        )
        return text % {"num": minutes}
    text = translations.ngettext(
        "It expires in %(num)d second.", "It expires in %(num)d seconds.", seconds
    )
    return text % {"num": seconds}


def text_body(code: str, issuer: str, ttl_seconds: int) -> str:
    """The text message: the code first (phones show it in the notification), then its
    lifetime, worded as the page says it."""
    return f"{code} is your {issuer} verification code. {lifetime(ttl_seconds)}"


# Sentences ending so are followed by the next with no space (Japanese, Chinese).
_FULL_WIDTH_ENDS = ("\u3002", "\uff01", "\uff1f")  # ideographic full stop, full-width ! and ?


def sentences(first: str, second: str) -> str:
    """Two translated sentences as one text: a space between them, except after a full-width
    full stop (Japanese and Chinese write none)."""
    return first + second if first.endswith(_FULL_WIDTH_ENDS) else f"{first} {second}"


def sent(masked_phone: str, ttl_seconds: int, translations: gettext.NullTranslations) -> str:
    """The page's notice after a send."""
    first = translations.gettext("We sent a code to %(number)s.") % {"number": masked_phone}
    return sentences(first, lifetime(ttl_seconds, translations))


def wait_seconds(seconds: float) -> int:
    """A wait as the ``Retry-After`` header says it: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(seconds))


def wait(seconds: float, translations: gettext.NullTranslations = ENGLISH) -> str:
    """The wait sentence ("Wait 23 seconds before asking for a new code."): seconds under a
    minute, else minutes under an hour, else hours, always rounded up, so that asking again
    after the wait that was said is never refused for the same limit."""
    left = wait_seconds(seconds)
    if left < MINUTE:
        text = translations.ngettext(
            "Wait %(num)d second before asking for a new code.",
            "Wait %(num)d seconds before asking for a new code.",
            left,
        )
        return text % {"num": left}
    if left < HOUR:
        minutes = math.ceil(left / MINUTE)
        text = translations.ngettext(
            "Wait %(num)d minute before asking for a new code.",
            "Wait %(num)d minutes before asking for a new code.",
            minutes,
        )
        return text % {"num": minutes}
    hours = math.ceil(left / HOUR)
    text = translations.ngettext(
        "Wait %(num)d hour before asking for a new code.",
        "Wait %(num)d hours before asking for a new code.",
        hours,
    )
    return text % {"num": hours}


def countdown(seconds: float, translations: gettext.NullTranslations) -> list[str]:
    """What the page's countdown script shows, second by second: :func:`wait`'s sentence for
    each number of seconds left, 1 first, up to ``seconds`` (each in its language's plural
    form, so the script need not know the language's plural rules; under a minute, this is at
    most 59 short sentences); empty for a wait of a minute or more, which the page does not
    count down."""
    left = wait_seconds(seconds)
    if left >= MINUTE:
        return []
    return [wait(second, translations) for second in range(1, left + 1)]


def ready(translations: gettext.NullTranslations) -> str:
    """What the countdown says once the wait is over."""
    return translations.gettext("You can ask for a new code now.")
