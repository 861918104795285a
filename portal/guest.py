"""Pages a guest sees: the phone form, the page with the number to call, its status API, and the
venue's page and logo."""

import logging
import math
from collections import namedtuple
from contextlib import contextmanager
from datetime import timezone
from urllib.parse import urlsplit

import requests
import segno
from flask import (Blueprint, Response, abort, g, jsonify, redirect, render_template, request,
                   url_for)
from markupsafe import Markup
from flask_babel import format_time, gettext, lazy_gettext, ngettext
from sqlalchemy.exc import SQLAlchemyError

from . import (blocklist, captive, opennds, opennds_remote, phone, routers, services, sessions,
               settings, venues, verification)
from .config import DEFAULTS
from .extensions import limiter, note, noted, portal_setting
from .i18n import current_language
from .provider import ProviderRejected, ProviderUnavailable
from .storage import utcnow

log = logging.getLogger(__name__)

bp = Blueprint("guest", __name__)

# What a guest is told when the provider refuses; the operator sees the code in the log. Only
# code 1 is about the number typed (shown at the field); the others are the service's trouble.
PROVIDER_MESSAGES = {
    1: (400, lazy_gettext("The phone service did not accept this number. Check it and try again.")),
    2: (503, lazy_gettext("Phone sign-in is not working on this Wi-Fi right now. "
                          "Please tell the staff.")),
    4: (503, lazy_gettext("Too many sign-in attempts on this Wi-Fi right now. "
                          "Please try again in a few minutes.")),
    9: (503, lazy_gettext("Too many attempts for this number. "
                          "Please wait a minute and try again.")),
}
UNAVAILABLE_MESSAGE = lazy_gettext("The phone service is not answering. "
                                   "Please try again in a minute.")
BUSY_MESSAGE = lazy_gettext("Many guests are signing in right now. "
                            "Please try again in a few seconds.")
PROVIDER_SLOT_WAIT_SECONDS = 0.25
RECHECK_SECONDS = 600  # a page saying "you are online" reloads at least this often
VenueText = namedtuple("VenueText", "text lang")
TERMS_MESSAGE = lazy_gettext("Please accept the terms of use to continue.")
ONLINE_ELSEWHERE_MESSAGE = lazy_gettext("This device is already online with another number. "
                                        "Please ask the staff to end that session first.")
# A blocked phone or device is told no more than this (the staff know why: see blocklist).
BLOCKED_MESSAGE = lazy_gettext("Sign-in is not available for this device or number here. "
                               "Please ask the staff.")


# Guest pages load nothing from elsewhere; the browser enforces it too.
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self'; "
                           "script-src 'self'; connect-src 'self'; form-action 'self'; "
                           "base-uri 'none'; frame-ancestors 'none'")


def venue_text(name):
    """The venue's text name ("welcome", "terms_text") for this page, with its language: the
    guest's language's text, else the venue's default language's, else none."""
    return VenueText(*settings.text_for(settings.effective_venue(), name, current_language()))


def venue_name():
    """The venue's name in the guest's language (as venue_text); the built-in default name, in
    the guest's language, when the venue has none."""
    name = venue_text("name").text
    return name if name and name != DEFAULTS["venue"]["name"] else gettext("Free Wi-Fi")


def has_logo():
    """Whether the venue has a logo to show (looked up once per request)."""
    if "callpass_has_logo" not in g:
        try:
            g.callpass_has_logo = settings.has_logo(services(), venues.current())
        except SQLAlchemyError:
            g.callpass_has_logo = False
    return g.callpass_has_logo


def terms_link():
    """venue.terms_url when it is a usable link (http(s) or a path on the portal), else ""."""
    url = settings.effective_venue()["terms_url"].strip()
    return url if url.startswith(("http://", "https://", "/")) and not url.startswith("//") else ""


@bp.app_context_processor
def branding():
    """Venue name, logo, texts and terms for every page."""
    return {"venue": settings.effective_venue, "venue_name": venue_name, "venue_text": venue_text,
            "has_logo": has_logo, "terms_link": terms_link}


@bp.after_request
def guest_headers(response):
    """Pages and answers that depend on the device: never cached, no referrer to other sites."""
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers["Referrer-Policy"] = "no-referrer"
    if response.mimetype == "text/html":
        policy = CONTENT_SECURITY_POLICY
        if g.get("callpass_form_target"):  # the wait page's login form to the guest's router
            policy = policy.replace("form-action 'self'",
                                    f"form-action 'self' {g.callpass_form_target}")
        response.headers["Content-Security-Policy"] = policy
    return response


def typed_phone():
    """(what was typed, the number in E.164 or the InvalidPhone), parsed once per request."""
    if "callpass_phone" not in g:
        typed = request.form.get("phone", "")
        try:
            parsed = phone.normalise(typed, settings.current()["portal"]["default_region"])
        except phone.InvalidPhone as exc:
            parsed = exc
        g.callpass_phone = (typed, parsed)
    return g.callpass_phone


def device_key():
    """Rate-limit key of the device: its MAC, which it cannot multiply the way it can take more
    addresses (the address only for a device off the LAN, which is refused anyway)."""
    ip, mac = captive.device_identity()
    return "device:" + (mac or ip)


def phone_key():
    """Rate-limit key of the phone number this device asks for, normalised so formatting cannot
    dodge it. Per device: someone else's attempts never use up the number owner's allowance
    (the provider is protected by one device waiting per phone, see `verification`)."""
    typed, parsed = typed_phone()
    if isinstance(parsed, phone.InvalidPhone):
        parsed = "invalid:" + phone.digits_of(typed)[:20]
    return f"phone:{parsed}:{device_key()}"


def going_to():
    """Where the guest was going before the portal caught them, when it is safe to link to (as
    the captive redirect kept it, or as the guest's router said)."""
    return captive.continue_url(request.values.get("continue", "") or routers.continue_url())


def time_left(ends_at):
    """How long a session still runs, as people say it: "until 16:02, about 4 more hours" rather
    than "239 minutes". Rounded up, so it never shows less than is left; the clock time is the
    venue's (venue.timezone)."""
    seconds = sessions.seconds_until(ends_at)
    minutes = max(1, math.ceil(seconds / 60))
    if minutes >= 48 * 60:
        days = math.ceil(minutes / (24 * 60))
        return ngettext("This device is online for about %(num)s more day.",
                        "This device is online for about %(num)s more days.", days)
    zone = settings.venue_zone(settings.effective_venue())
    until = format_time(ends_at.replace(tzinfo=timezone.utc).astimezone(zone).replace(tzinfo=None),
                        "HH:mm", rebase=False)
    if minutes <= 90:
        return ngettext("This device is online until %(time)s, %(num)s more minute.",
                        "This device is online until %(time)s, %(num)s more minutes.", minutes,
                        time=until)
    hours = math.ceil(minutes / 60)
    return ngettext("This device is online until %(time)s, about %(num)s more hour.",
                    "This device is online until %(time)s, about %(num)s more hours.", hours,
                    time=until)


def recheck_seconds(ends_at):
    """When a page saying "you are online" reloads itself (a meta refresh, no script): just after
    the session's end, so a window left open says it is over; and at least every RECHECK_SECONDS,
    so it also learns of an end an admin or a newer device brought forward."""
    return min(sessions.seconds_until(ends_at) + 1, RECHECK_SECONDS)


def online_page(session, continue_url=""):
    """The 'you are online' page for a device with an open session."""
    return render_template("online.html", session=session,
                           continue_url=continue_url or going_to(),
                           time_left=time_left(session.ends_at),
                           recheck_seconds=recheck_seconds(session.ends_at))


def form_page(typed="", errors=None, status=200, headers=None, notice=""):
    """The phone form, keeping what was typed and showing each field's error next to it; notice
    is a message about the service (busy, provider trouble, too many attempts), not the fields."""
    region = settings.current()["portal"]["default_region"]
    page = render_template("index.html", phone=typed[:phone.MAX_INPUT_LENGTH], errors=errors or {},
                           notice=notice, example=phone.example(region), continue_url=going_to())
    return page, status, headers or {}


@bp.get("/")
def index():
    """The phone form, or the 'you are online' page for a device that already has a session.

    Also openNDS's FAS entry point (`?fas=`, see `opennds`)."""
    opennds.note_arrival()
    session = captive.online_session()
    if session is not None:
        return online_page(session, opennds.origin_after_auth())
    return form_page()


def reached_provider(_response):
    """Only attempts that got as far as the provider, or let a remembered device in, count
    against the limits: typos, a device off the LAN and "busy, try again" do not."""
    return g.get("callpass_counted", False)


@bp.post("/")
@limiter.limit(portal_setting("limit_per_device"), key_func=device_key, methods=["POST"],
               deduct_when=reached_provider)
@limiter.limit(portal_setting("limit_per_phone"), key_func=phone_key, methods=["POST"],
               deduct_when=reached_provider)
def start():
    """Start a verification: validate, identify the device, ask the provider, go to the wait page.

    A device that verified this phone recently (portal.remember_days) is let in at once.
    """
    svc = services()
    effective = settings.current()
    portal = effective["portal"]
    typed, number = typed_phone()
    errors = {}
    if isinstance(number, phone.InvalidPhone):
        errors["phone"] = gettext(str(number), **number.params)
    if effective["venue"]["require_terms"] and request.form.get("accept_terms") != "yes":
        errors["terms"] = str(TERMS_MESSAGE)
    if errors:
        return form_page(typed, errors, 400)
    ip, mac = captive.device_identity()
    if mac is None:
        return render_template("not_on_lan.html", ip=ip), 403
    if blocklist.is_blocked(svc.engine, number, mac):
        log.info("refused a blocked phone or device: %s %s", number, mac)
        return form_page(typed, status=403, notice=str(BLOCKED_MESSAGE))
    if routers.identity() is not None:
        refused = online_under_another_number(svc, typed, number, mac)
        if refused is not None:
            return refused
    venue_id = venues.current()
    gateway_token = opennds_remote.gateway_token()
    row = verification.remember_device(
        svc.engine, number, mac, ip, portal["remember_days"],
        portal["session_minutes"], portal["devices_per_phone"], venue_id, gateway_token)
    if row is not None:
        g.callpass_counted = True  # each one is a session in the log
        svc.firewall_worker.wake()
        return redirect(wait_url(row.token), code=303)
    refused = one_device_per_phone(svc, typed, number, mac)
    if refused is not None:
        return refused
    client = settings.provider()
    try:
        with svc.asking.hold(mac, client.longest_call_seconds) as waited:
            # This device's other request (a double tap's first) has just asked the provider:
            # its wait page may be the one for this number.
            if waited:
                refused = one_device_per_phone(svc, typed, number, mac)
                if refused is not None:
                    return refused
            with provider_slot(svc):
                g.callpass_counted = True
                row = verification.start_verification(
                    svc.engine, client, number, mac, ip, portal["verification_minutes"],
                    venue_id, gateway_token)
    except (verification.StillAsking, ProviderBusy):
        return form_page(typed, status=503, notice=str(BUSY_MESSAGE))
    except ProviderRejected as exc:
        log.warning("provider refused wait_call: code %s (%s)", exc.code, exc.text)
        status, message = PROVIDER_MESSAGES.get(exc.code, (503, UNAVAILABLE_MESSAGE))
        if exc.code == 1:
            return form_page(typed, {"phone": str(message)}, status)
        return form_page(typed, status=status, notice=str(message))
    except ProviderUnavailable as exc:
        log.warning("provider unavailable: %s", exc)
        return form_page(typed, status=503, notice=str(UNAVAILABLE_MESSAGE))
    except verification.PhoneWaiting as exc:  # another device got there while we asked
        if exc.row.mac == mac:  # this device's own double tap, through another serve
            return redirect(wait_url(exc.row.token), code=303)
        return phone_busy(typed, exc.row)
    return redirect(wait_url(row.token), code=303)


class ProviderBusy(Exception):
    """All provider slots stayed taken for PROVIDER_SLOT_WAIT_SECONDS."""


@contextmanager
def provider_slot(svc):
    """Hold one of the provider.max_concurrent slots while asking the provider. A slow provider
    holds a thread per request: beyond max_concurrent, say so at once (a fast provider frees a
    slot within milliseconds, so wait that long), raising ProviderBusy."""
    if not svc.provider_slots.acquire(timeout=PROVIDER_SLOT_WAIT_SECONDS):
        log.warning("provider busy: %s requests in flight", svc.config["provider"]["max_concurrent"])
        raise ProviderBusy
    try:
        yield
    finally:
        svc.provider_slots.release()


def online_under_another_number(svc, typed, number, mac):
    """None, or 409 when the device is online under another number.

    For a device its router named (MikroTik, UniFi): the guest's browser brings that name back,
    and a guest can change it. Without this, a guest naming someone else's MAC would end that
    device's session (a device has one) and put it under the guest's own number in the log.
    """
    session = sessions.active_session(svc.engine, mac)
    if session is None or session.phone == number:
        return None
    log.info("refused a sign-in for a device online under another number: %s", mac)
    return form_page(typed, {"phone": str(ONLINE_ELSEWHERE_MESSAGE)}, 409)


def one_device_per_phone(svc, typed, number, mac):
    """None when this device may ask for a call from number; else the page to show.

    The device already waiting for that call is sent back to its wait page. Any other device is
    told the number is taken and until when. A device whose wait ran out without a call, while
    another device asked for the number, steps aside for one window: a guest who typed someone
    else's number cannot keep the owner out by asking again every time their window closes.
    """
    with svc.engine.connect() as conn:
        waiting = verification.waiting_for(conn, number)
        last = verification.last_attempt(conn, number, mac) if waiting is None else None
    if waiting is not None and waiting.mac == mac:
        return redirect(wait_url(waiting.token), code=303)
    if waiting is not None:
        return phone_busy(typed, waiting)
    if last is None or verification.state_of(last) != verification.EXPIRED:
        return None
    free_at = last.expires_at + (last.expires_at - last.created_at)
    if free_at <= utcnow() or not noted(contested_key(last)):
        return None
    minutes = math.ceil(sessions.seconds_until(free_at) / 60)
    message = ngettext("Another device asked for this number while this one waited for a call. "
                       "This device can ask for it again in %(num)s minute.",
                       "Another device asked for this number while this one waited for a call. "
                       "This device can ask for it again in %(num)s minutes.", minutes)
    return form_page(typed, {"phone": message}, 429)


def contested_key(row):
    """Where it is noted that another device asked for row's phone while row waited."""
    return f"callpass-contested:{row.id}"


def phone_busy(typed, waiting):
    """409: another device is waiting for a call from this number; note that someone asked."""
    window = (waiting.expires_at - waiting.created_at).total_seconds()
    note(contested_key(waiting), int(2 * window) + 60)
    minutes = math.ceil(sessions.seconds_until(waiting.expires_at) / 60)
    message = ngettext("This number is already waiting for a call on another device, for "
                       "%(num)s more minute. Try again then.",
                       "This number is already waiting for a call on another device, for "
                       "%(num)s more minutes. Try again then.", minutes)
    return form_page(typed, {"phone": message}, 409)


def device_kind():
    """The kind of device asking, from its User-Agent: "iphone", "android", "phone" (another) or
    "computer". It picks the wait page's hints: the iPhone sheet's quirks to iPhones, a QR code to
    computers."""
    agent = request.user_agent.string
    if any(word in agent for word in ("iPhone", "iPad", "iPod")):
        return "iphone"
    if "Android" in agent:
        return "android"
    return "phone" if "Mobi" in agent else "computer"


def dial_code(e164):
    """A QR code opening the dialler at e164 (`tel:` URI), as inline SVG: nothing to load."""
    code = segno.make(f"tel:{e164}", error="m")
    return Markup(code.svg_inline(scale=5, border=2, svgclass="qr", lineclass=None,
                                  title=f"tel:{e164}"))


def wait_url(token):
    """The wait page's address, carrying where the guest was going."""
    kept = going_to()
    return url_for("guest.wait", token=token, **({"continue": kept} if kept else {}))


@bp.get("/wait/<token>")
def wait(token):
    """The number to call, with its countdown and status; or the outcome once there is one."""
    row = verification.find(services().engine, token)
    if row is None:
        abort(404)
    stage, session = stage_of(row)
    router_login = routers.router_login(session) if stage == "online" else None
    if router_login:
        parts = urlsplit(router_login["action"])
        g.callpass_form_target = f"{parts.scheme}://{parts.netloc}"
    device = device_kind()
    return render_template("wait.html", v=row, stage=stage, router_login=router_login,
                           device=device,
                           dial_code=dial_code(row.call_number)
                           if stage == "pending" and device == "computer" else None,
                           call_number=phone.for_dialling(row.call_number),
                           caller=phone.for_dialling(row.phone),
                           seconds_left=verification.seconds_left(row),
                           is_remembered=verification.is_remembered(row),
                           continue_url=going_to(), is_demo=services().is_demo,
                           needs_terms=settings.current()["venue"]["require_terms"],
                           time_left=time_left(session.ends_at) if stage == "online" else None,
                           recheck_seconds=recheck_seconds(session.ends_at)
                           if stage == "online" else None,
                           opennds_next=opennds.next_url(row) or opennds_remote.next_url(row)
                           if stage == "online" else None)


@bp.get("/api/verifications/<token>")
def status(token):
    """The state of a verification, for the wait page's polling."""
    row = verification.find(services().engine, token)
    if row is None:
        return jsonify(error="no such verification"), 404
    return jsonify(state=verification.state_of(row), access=access_of(row),
                   call_number=row.call_number, expires_in=verification.seconds_left(row))


def access_of(row):
    """For a confirmed verification: "connecting" until the firewall lets its device through,
    "online" then, "ended" after its session; None before a confirmation."""
    if row.state != verification.CONFIRMED:
        return None
    return session_access(verification.session_of(services().engine, row))


def session_access(session):
    """ "connecting", "online" or "ended" for a confirmed verification's session (None: none)."""
    if session is None or session.ended_at is not None or session.ends_at <= utcnow():
        return "ended"
    return "online" if session.firewall_at is not None else "connecting"


def stage_of(row):
    """(stage, session) for the wait page. The stage: pending, connecting, online, ended (the
    session is over: ended by an admin, by time or by a newer device; or never let through),
    expired or failed. The session: the confirmed verification's, else None."""
    state = verification.state_of(row)
    if state != verification.CONFIRMED:
        return state, None
    session = verification.session_of(services().engine, row)
    return session_access(session), session


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
    return redirect(wait_url(token), code=303)


@bp.get("/venue")
def venue_page():
    """About this Wi-Fi: the venue, its welcome text and terms (RFC 8908's venue-info-url)."""
    return render_template("venue.html")


@bp.get("/venue/logo")
def venue_logo():
    """The venue's logo (uploaded on the admin page, else venue.logo), 404 when there is none."""
    found = settings.logo(services(), venues.current())
    if found is None:
        abort(404)
    data, content_type = found
    response = Response(data, mimetype=content_type)
    response.headers["Cache-Control"] = "no-cache"
    response.add_etag()
    return response.make_conditional(request)
