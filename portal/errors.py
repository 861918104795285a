"""HTTP errors in one place: friendly pages for guests, JSON under /api/."""

import logging
import math
import time

from flask import jsonify, render_template, request
from flask_babel import lazy_gettext, ngettext
from werkzeug.exceptions import BadRequest

from . import guest
from .extensions import limiter

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
    """Attach the error handlers to app, and the refusal of NUL characters."""
    for code in MESSAGES:
        app.register_error_handler(code, render_error)
    app.before_request(refuse_nul_characters)


def refuse_nul_characters():
    """400 for a NUL character anywhere in the path, the query or the form: no page wants one,
    and PostgreSQL cannot store it (SQLite can), so it is refused the same way on both."""
    fields = [*request.args.items(multi=True)]
    if request.method == "POST" and request.mimetype == "application/x-www-form-urlencoded":
        fields += request.form.items(multi=True)  # multipart (the logo) is read by its own view
    if "\x00" in request.path or any("\x00" in key or "\x00" in value for key, value in fields):
        return render_error(BadRequest())
    return None


def seconds_to_wait():
    """Seconds until the limits this request broke let it through again, or None if unknown."""
    # window[0] is the exact reset time (reset_at adds a second for its own rounding).
    resets = [limit.window[0] for limit in limiter.current_limits if limit.breached]
    return max(1, math.ceil(max(resets) - time.time())) if resets else None


def too_many():
    """429, calmly: how long to wait, in minutes rounded up; the phone form keeps the number."""
    seconds = seconds_to_wait()
    if seconds is None:
        message = str(MESSAGES[429])
    else:
        minutes = math.ceil(seconds / 60)
        message = ngettext("There have been many attempts from this device. "
                           "You can try again in %(num)s minute.",
                           "There have been many attempts from this device. "
                           "You can try again in %(num)s minutes.", minutes)
    headers = {"Retry-After": str(seconds)} if seconds else {}
    if request.path.startswith("/api/"):
        return jsonify(error=message), 429, headers
    if request.endpoint == "guest.start":
        return guest.form_page(request.form.get("phone", ""), status=429, headers=headers,
                               notice=message)
    return render_template("error.html", code=429, message=message), 429, headers


def render_error(error):
    """The error page (JSON under /api/) in the guest's language."""
    code = getattr(error, "code", 500) or 500
    if code == 429:
        return too_many()
    if code == 500:
        log.error("unhandled error on %s", request.path, exc_info=getattr(error, "original_exception", None))
    message = str(MESSAGES.get(code, MESSAGES[500]))
    if request.path.startswith("/api/"):
        return jsonify(error=message), code
    return render_template("error.html", code=code, message=message), code
