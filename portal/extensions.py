"""Flask extensions, created unbound here and bound to the app in create_app()."""

from flask import current_app, request
from flask_limiter import Limiter


def device_key():
    """Rate-limit key of a guest device: the socket's address (never a forwarded header)."""
    return request.remote_addr or "unknown"


limiter = Limiter(device_key)


def portal_setting(key):
    """A callable reading [portal] key at request time, for limits that live in the config."""
    return lambda: current_app.extensions["callpass"].config["portal"][key]
