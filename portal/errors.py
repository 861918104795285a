"""HTTP errors in one place: friendly pages for guests, JSON under /api/."""

import logging

from flask import jsonify, render_template, request
from flask_babel import lazy_gettext

log = logging.getLogger(__name__)

MESSAGES = {
    400: lazy_gettext("The request could not be understood."),
    403: lazy_gettext("This is not allowed."),
    404: lazy_gettext("This page does not exist. It may have expired."),
    405: lazy_gettext("This page cannot be used that way."),
    413: lazy_gettext("What you sent is too large."),
    429: lazy_gettext("Too many attempts. Please wait a few minutes and try again."),
    500: lazy_gettext("Something went wrong on our side. Please try again."),
}


def register(app):
    """Attach the error handlers to app."""
    for code in MESSAGES:
        app.register_error_handler(code, render_error)


def render_error(error):
    """The error page (JSON under /api/) in the guest's language."""
    code = getattr(error, "code", 500) or 500
    if code == 500:
        log.error("unhandled error on %s", request.path, exc_info=getattr(error, "original_exception", None))
    message = str(MESSAGES.get(code, MESSAGES[500]))
    if request.path.startswith("/api/"):
        return jsonify(error=message), code
    return render_template("error.html", code=code, message=message), code
