"""Venue admin pages under /admin (placeholder: filled in by the admin issue)."""

from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/admin")


def init_app(app):
    """Register the admin pages (and, later, their CSRF protection) on app."""
    app.register_blueprint(bp)
