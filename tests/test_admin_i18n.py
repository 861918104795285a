"""The admin pages speak the guest pages' languages: every admin string has ru and uk translations."""

from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from admin_support import admin  # noqa: F401
from portal.provider import DESCRIPTIONS

ROOT = Path(__file__).resolve().parent.parent
CATALOGS = ROOT / "portal" / "translations"
METHODS = [("portal/admin.py", "python"), ("portal/settings.py", "python"),
           ("portal/provider.py", "python"), ("portal/venues.py", "python"),
           ("templates/admin/*.html", "jinja2")]


def admin_msgids():
    """Every string marked for translation in the admin's code and templates."""
    found = extract_from_dir(str(ROOT), METHODS, keywords={"_": None, "gettext": None, "N_": None})
    return {message for _file, _line, message, _comments, _context in found}


@pytest.mark.parametrize("language", ["ru", "uk"])
def test_every_admin_string_is_translated(language):
    with open(CATALOGS / language / "LC_MESSAGES" / "admin.po", "rb") as fh:
        catalog = read_po(fh, locale=language)
    translated = {m.id for m in catalog if m.id and m.string and not m.fuzzy}
    wanted = admin_msgids()
    assert len(wanted) > 150
    assert sorted(wanted - translated) == []
    # The provider's words are shown on the dashboard too.
    assert set(DESCRIPTIONS.values()) <= translated
    for message in catalog:
        if message.id and "%(" in message.id:
            names = sorted(part.split(")")[0] for part in message.id.split("%(")[1:])
            assert sorted(p.split(")")[0] for p in message.string.split("%(")[1:]) == names


def test_admin_pages_follow_the_chosen_language(admin):
    assert "Обзор" in admin.get("/admin/?lang=ru").get_data(as_text=True)
    assert "Обзор" in admin.get("/admin/").get_data(as_text=True)  # remembered
    page = admin.get("/admin/settings?lang=uk").get_data(as_text=True)
    assert "Назва закладу" in page and 'lang="uk"' in page
    assert "Venue name" in admin.get("/admin/settings?lang=en").get_data(as_text=True)
