"""Languages of the pages (Russian, Ukrainian, English). Placeholder until Flask-Babel is wired in."""


def init_app(app):
    """Bind translations to app."""
    app.jinja_env.globals.setdefault("_", lambda text, **kw: text % kw if kw else text)
