"""HTTP errors in one place: friendly pages for guests, JSON under /api/."""

import logging

from flask import jsonify, render_template, request

log = logging.getLogger(__name__)

MESSAGES = {
    400: "The request could not be understood.",
    403: "This is not allowed.",
    404: "This page does not exist. It may have expired.",
    405: "This page cannot be used that way.",
    413: "What you sent is too large.",
    429: "Too many attempts. Please wait a few minutes and try again.",
    500: "Something went wrong on our side. Please try again.",
}


def register(app):
    """Attach the error handlers to app."""
    for code in MESSAGES:
        app.register_error_handler(code, render_error)


def render_error(error):
    code = getattr(error, "code", 500) or 500
    if code == 500:
        log.error("unhandled error on %s", request.path, exc_info=getattr(error, "original_exception", None))
    message = MESSAGES.get(code, MESSAGES[500])
    if request.path.startswith("/api/"):
        return jsonify(error=message), code
    return render_template("error.html", code=code, message=message), code
