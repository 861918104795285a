"""Pages a guest sees: the phone form, the page with the number to call, and its status API."""

import logging

import requests
from flask import Blueprint, abort, jsonify, redirect, render_template, request, url_for

from . import neighbours, phone, services, sessions, settings, verification
from .extensions import limiter, portal_setting
from .provider import ProviderRejected, ProviderUnavailable

log = logging.getLogger(__name__)

bp = Blueprint("guest", __name__)

# What a guest is told when the provider refuses; the operator sees the code in the log.
PROVIDER_MESSAGES = {
    1: (400, "The phone service did not accept this number. Check it and try again."),
    2: (503, "Phone sign-in is not working on this Wi-Fi right now. Please tell the staff."),
    4: (503, "Too many sign-in attempts on this Wi-Fi right now. Please try again in a few minutes."),
    9: (503, "Too many attempts for this number. Please wait a minute and try again."),
}
UNAVAILABLE_MESSAGE = "The phone service is not answering. Please try again in a minute."


def phone_key():
    """Rate-limit key of the phone number being verified, normalised so formatting cannot dodge it."""
    typed = request.form.get("phone", "")
    try:
        return "phone:" + phone.normalise(typed, settings.current()["portal"]["default_region"])
    except phone.InvalidPhone:
        return "phone-invalid:" + "".join(ch for ch in typed if ch.isdigit())[:20]


def client_identity():
    """(ip, mac) of the device sending this request, from the socket and the neighbour table."""
    svc = services()
    ip = request.remote_addr or ""
    mac = neighbours.mac_for_ip(ip, svc.config["portal"]["neighbour_table"])
    if mac is None and svc.is_demo:
        mac = neighbours.stand_in_mac(ip)
    return ip, mac


@bp.get("/")
def index():
    """The phone form, or the 'you are online' page for a device that already has a session."""
    svc = services()
    _ip, mac = client_identity()
    session = sessions.active_session(svc.engine, mac) if mac else None
    if session is not None:
        return render_template("online.html", session=session,
                               minutes_left=sessions.seconds_until(session.ends_at) // 60)
    return render_template("index.html", phone="", error=None)


def reached_provider(response):
    """Only attempts that got as far as the provider count against the limits; typos do not."""
    return response.status_code not in (400, 403) or response.headers.get("X-Provider-Code") == "1"


@bp.post("/")
@limiter.limit(portal_setting("limit_per_device"), methods=["POST"], deduct_when=reached_provider)
@limiter.limit(portal_setting("limit_per_phone"), key_func=phone_key, methods=["POST"],
               deduct_when=reached_provider)
def start():
    """Start a verification: validate, identify the device, ask the provider, go to the wait page."""
    svc = services()
    effective = settings.current()
    typed = request.form.get("phone", "")
    try:
        number = phone.normalise(typed, effective["portal"]["default_region"])
    except phone.InvalidPhone as exc:
        return render_template("index.html", phone=typed[:40], error=str(exc)), 400
    ip, mac = client_identity()
    if mac is None:
        return render_template("not_on_lan.html", ip=ip), 403
    try:
        row = verification.start_verification(
            svc.engine, settings.provider(), number, mac, ip,
            effective["portal"]["verification_minutes"])
    except ProviderRejected as exc:
        log.warning("provider refused wait_call: code %s (%s)", exc.code, exc.text)
        status, message = PROVIDER_MESSAGES.get(exc.code, (503, UNAVAILABLE_MESSAGE))
        page = render_template("index.html", phone=typed[:40], error=message)
        return page, status, {"X-Provider-Code": str(exc.code)}
    except ProviderUnavailable as exc:
        log.warning("provider unavailable: %s", exc)
        return render_template("index.html", phone=typed[:40], error=UNAVAILABLE_MESSAGE), 503
    return redirect(url_for("guest.wait", token=row.token), code=303)


@bp.get("/wait/<token>")
def wait(token):
    """The number to call, with its countdown and status; or the outcome once there is one."""
    row = verification.find(services().engine, token)
    if row is None:
        abort(404)
    return render_template("wait.html", v=row, call_number=phone.for_dialling(row.call_number),
                           seconds_left=verification.seconds_left(row),
                           is_demo=services().is_demo)


@bp.get("/api/verifications/<token>")
def status(token):
    """The state of a verification, for the wait page's polling."""
    row = verification.find(services().engine, token)
    if row is None:
        return jsonify(error="no such verification"), 404
    return jsonify(state=row.state, call_number=row.call_number,
                   expires_in=verification.seconds_left(row))


@bp.post("/wait/<token>/simulate")
def simulate_call(token):
    """Demo mode only: ask the built-in simulator to place the guest's call."""
    svc = services()
    if not svc.is_demo or not svc.simulator_url:
        abort(404)
    row = verification.find(svc.engine, token)
    if row is None:
        abort(404)
    try:
        requests.post(svc.simulator_url + "/sim/call",
                      data={"phone": row.phone.lstrip("+"), "to": row.call_number.lstrip("+")},
                      timeout=(2, 15))
    except requests.RequestException as exc:
        log.warning("demo: the simulator did not answer: %s", exc)
    return redirect(url_for("guest.wait", token=token), code=303)
