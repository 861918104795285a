"""Languages of the pages: Russian, Ukrainian and English through Flask-Babel's gettext catalogs.

The language of a request is, in order: `?lang=xx` (then remembered in the `lang` cookie for a
year), the `lang` cookie, the best of the browser's Accept-Language, venue.default_language. Only
the venue's offered languages (venue.languages, changeable on the admin page) are ever chosen.

Catalogs live in portal/translations/<lang>/LC_MESSAGES/: `messages` (guest pages) and `admin`
(admin pages). The .po files are the source; the .mo files are compiled at install (hatch_build.py).
"""

from pathlib import Path
from urllib.parse import quote, urlencode

from flask import g, request
from flask_babel import Babel, get_locale

from .settings import effective_venue

TRANSLATIONS = Path(__file__).resolve().parent / "translations"
# Merged in this order. Flask-Babel takes the plural rule from the last catalog it loads, and a
# missing one counts as English: "messages" exists for every language, so it goes last.
DOMAINS = ("admin", "messages")
COOKIE = "lang"
COOKIE_SECONDS = 365 * 24 * 3600
# Each language named in itself, for the switcher.
NAMES = {"ru": "Русский", "uk": "Українська", "en": "English"}


def init_app(app):
    """Bind Flask-Babel to app with callpass's catalogs, language choice and template helpers."""
    # Flask-Babel pairs the n-th domain with the n-th directory; both domains share one folder.
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES",
                          ";".join([str(TRANSLATIONS)] * len(DOMAINS)))
    app.config.setdefault("BABEL_DOMAIN", ";".join(DOMAINS))
    Babel(app, locale_selector=select_language)
    app.after_request(remember_choice)
    app.context_processor(template_helpers)


def offered_languages():
    """The venue's languages, in the venue's order, and its default language."""
    venue = effective_venue()
    offered = [code for code in venue["languages"] if code in NAMES] or ["en"]
    default = venue["default_language"] if venue["default_language"] in offered else offered[0]
    return offered, default


def select_language():
    """The language of this request (Flask-Babel's locale selector)."""
    offered, default = offered_languages()
    asked = request.args.get(COOKIE, "")
    if asked in offered:
        g.callpass_language_asked = asked
        return asked
    remembered = request.cookies.get(COOKIE, "")
    if remembered in offered:
        return remembered
    return browser_language(offered) or default


def browser_language(offered):
    """The first offered language in Accept-Language's order, matching on the primary subtag.

    (werkzeug's best_match prefers an exact match of lower quality: "en-GB, ru;q=0.8" -> ru.)
    """
    for value, quality in request.accept_languages:
        primary = value.replace("_", "-").split("-", 1)[0].lower()
        if quality > 0 and primary in offered:
            return primary
    return None


def current_language():
    """The code of the language this request is answered in."""
    return str(get_locale() or "en")


def remember_choice(response):
    """Keep a language picked with ?lang=xx in a cookie for a year."""
    asked = g.get("callpass_language_asked")
    if asked and request.cookies.get(COOKIE) != asked:
        response.set_cookie(COOKIE, asked, max_age=COOKIE_SECONDS, samesite="Lax", httponly=True,
                            secure=request.is_secure)
    if response.mimetype == "text/html":
        response.vary.add("Accept-Language")
        response.vary.add("Cookie")
    return response


def switch_url(code):
    """This page's address in language code (the same path and query, lang replaced)."""
    args = [(key, value) for key, value in request.args.items(multi=True) if key != COOKIE]
    args.append((COOKIE, code))
    return quote(request.script_root + request.path) + "?" + urlencode(args)


def template_helpers():
    """What every template may use: the current language, the switcher's entries, and this
    page's address in another language."""
    return {
        "current_language": current_language,
        "language_choices": language_choices,
        "language_url": switch_url,
    }


def language_choices():
    """[(code, name in itself, switch URL, is_current)] for the venue's languages."""
    offered, _default = offered_languages()
    current = current_language()
    return [(code, NAMES[code], switch_url(code), code == current) for code in offered]
