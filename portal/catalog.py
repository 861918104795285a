"""One marker for text that is translated where it is shown, not where it is defined.

`pybabel extract -k N_` (babel.cfg) collects every `N_("…")` into the catalogs; the text itself is
passed on unchanged and handed to gettext by the page that shows it. Imports nothing, so any module
(phone numbers, the provider client, settings) can mark its messages where they are written.
"""


def N_(text):
    """Mark text for the catalogs; returns it unchanged."""
    return text
