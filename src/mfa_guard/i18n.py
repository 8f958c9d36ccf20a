"""The kit's languages, for the app's own pages: speak the language the kit's pages speak for
the same request (``guard.page_language(scope)``: the app's choice for the user through
``MFAGuard(language=...)``, else the browser's ``Accept-Language``, among the ``languages``
setting), with its direction and its dates::

    from mfa_guard.i18n import browser_name, direction, human_date, translations

    lang = guard.page_language(request.scope)        # "fr", "ar", "pt_BR", ...
    html_lang = lang.replace("_", "-")                # <html lang="pt-BR">
    html_dir = direction(lang)                        # <html dir="rtl"> for Arabic
    message = denied.text(translations(lang))         # a refusal of the kit, in French
    when = human_date(moment, lang, with_time=True)   # "5 mars 2025, 14:07 UTC"
    browser = browser_name(entry.browser, lang)       # "Firefox sous Ubuntu" (a log entry's)

The app's own sentences live in its own catalogue (Babel's ``pybabel`` workflow: the demo's
``examples/inbox/locale`` and CONTRIBUTING.md); :func:`translations` is the kit's, whose msgids
are the kit's English messages.
"""

from __future__ import annotations

from mfa_guard.web.i18n import browser_name, direction, human_date, translations

__all__ = ["browser_name", "direction", "human_date", "translations"]
