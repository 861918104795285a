"""Venue admin pages under /admin (placeholder: filled in by the admin issue)."""

from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/admin")
