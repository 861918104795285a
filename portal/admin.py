"""Venue admin pages under /admin: dashboard, settings, sessions, identification log, audit log.

Every /admin request passes one gate (`guard`): the socket's address must be in [admin] allow_from,
the browser must be signed in (except on the login page), and a POST must carry the CSRF token.
CSRF is checked here only: guest forms and the provider's callback live outside /admin and are
never asked for a token.

An admin of the whole chain (admin_user.venue_id NULL, every admin of a single-venue install)
sees every venue, edits the chain's settings and the venues (and a venue's own settings). An
admin of one venue sees that venue only: its sessions, its slice of the log, its settings over
the chain's, its admins and their audit entries; the provider account, the block list and the
venues are for chain admins.
"""

import ipaddress
import math
import re
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import quote, urlsplit

from flask import (Blueprint, Response, abort, current_app, flash, g, redirect, render_template,
                   request, url_for)
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError, CSRFProtect
from limits import parse
from sqlalchemy import func, or_, select, true

from . import (asset_folder, audit, auth, blocklist, guest, idlog, opennds_remote, phone,
               services, sessions, settings, venues, verification)
from .config import DEFAULTS, LANGUAGES, MAX_SESSION_DAYS, MAX_SESSION_MINUTES
from .extensions import NODE_MEMORY, hit, limiter
from .firewall import normalise_mac
from .health import PROVIDER_CHECK_SECONDS, forget_provider_status, provider_status
from .i18n import NAMES
from .provider import DESCRIPTIONS, ProviderRejected, ProviderUnavailable, describe
from .catalog import N_
from .storage import MAIN_VENUE, access_session, notification, utcnow
from .storage import verification as verification_table

# admin.css is served under /admin/static/ too, so that the pages keep their style when reached by
# the gateway's address (an ssh tunnel), where other paths are redirected to the guest portal.
bp = Blueprint("admin", __name__, url_prefix="/admin", static_folder=str(asset_folder("static")))
csrf = CSRFProtect()
DISCONNECT_WAIT_SECONDS = 3  # how long "end session" waits for a RADIUS router's answer

PAGE_SIZE = 100
MAX_PAGE = 10 ** 9       # a page number read from an address is at most this (SQLite's
                         # offset is a 64-bit number)
MAX_ID = 2 ** 31 - 1     # the largest id a table gives (PostgreSQL's integer)
SETTINGS_MAX_BYTES = 1024 * 1024  # the settings form with a logo; the logo itself is capped lower
EXTEND_CHOICES = (30, 60, 240, 1440)

END_REASONS = {
    "expired": N_("time ran out"),
    "revoked": N_("revoked"),
    "replaced": N_("replaced by a new session"),
    "device-limit": N_("too many devices for this phone"),
    "firewall-missing": N_("missing from the firewall"),
    "admin": N_("ended by an admin"),
    "blocked": N_("blocked by an admin"),
    idlog.OPEN: N_("still online"),
}
ACTIONS = {
    audit.LOGIN: N_("signed in"),
    audit.LOGIN_FAILED: N_("failed sign-in"),
    audit.LOGIN_LOCKED: N_("sign-in refused (locked out)"),
    audit.LOGOUT: N_("signed out"),
    audit.SETTINGS: N_("changed settings"),
    audit.SESSION_END: N_("ended a session"),
    audit.SESSION_EXTEND: N_("extended a session"),
    audit.EXPORT: N_("exported the identification log"),
    audit.PURGE: N_("purged old records"),
    audit.ADMIN_ADD: N_("added an admin"),
    audit.ADMIN_PASSWORD: N_("changed an admin password"),
    audit.ADMIN_REMOVE: N_("removed an admin"),
    audit.BLOCK: N_("blocked a phone or device"),
    audit.UNBLOCK: N_("unblocked a phone or device"),
    audit.VENUE_ADD: N_("added a venue"),
    audit.VENUE_CHANGE: N_("changed a venue"),
}
STATES = {"confirmed": N_("confirmed"), "expired": N_("expired"), "failed": N_("failed")}
# What portal/callback.py stores as a notification's reason (English, for the server log too),
# in words for the admin page; a reason not listed here is shown as it is.
NOTICE_REASONS = {
    "nobody with this phone is waiting for a call": N_("nobody with this phone is waiting for a call"),
    "wrong handler token": N_("wrong handler token in the address"),
    "missing or wrong md5 checksum": N_("missing or wrong checksum"),
    "missing or wrong sha1 checksum": N_("missing or wrong checksum"),
    "no usable phone field": N_("no usable phone number in the notification"),
    "no usable ts field": N_("no usable time in the notification"),
    "not a call-confirmation event": N_("not a call confirmation"),
    "the same phone and ts were already acted on": N_("this notification was already acted on"),
}
NOTICE_PATTERNS = (  # reasons with a number in them
    (re.compile(r"confirmed (\d+) verification\(s\)"), N_("confirmed verifications: %(n)s")),
    (re.compile(r"ts is (-?\d+) s away from now"),
     N_("its time is %(n)s s away from now (too old, or the clocks differ)")),
)
# Setting keys in the audit log, named as on the settings page.
SETTING_LABELS = {
    "venue.name": N_("Venue name"), "venue.logo": N_("Logo"), "venue.welcome": N_("Welcome text"),
    "venue.terms_text": N_("Terms of use"), "venue.terms_url": N_("Link to the terms (optional)"),
    "venue.require_terms": N_("Guests must accept the terms before getting a number"),
    "venue.languages": N_("Languages offered"), "venue.default_language": N_("Default language"),
    "portal.default_region": N_("Default country"),
    "portal.session_minutes": N_("Session length, minutes"),
    "portal.verification_minutes": N_("Time to call, minutes"),
    "portal.devices_per_phone": N_("Devices per phone"),
    "portal.remember_days": N_("Remember a device, days"),
    "provider.base_url": N_("Provider address"), "provider.fallback_urls": N_("Reserve addresses"),
    "provider.login": N_("Login"), "provider.password": N_("Password"),
    "provider.apikey": N_("API key (instead of login and password)"),
    "gateway.garden": N_("Addresses guests may reach before the call"),
}
VERDICTS = {"accepted": N_("accepted"), "unmatched": N_("nobody was waiting"),
            "rejected": N_("rejected"), "replay": N_("repeat, ignored"),
            "ignored": N_("not a call, ignored")}


def notice_reason(reason):
    """A notification's stored reason in the admin's language."""
    if reason in NOTICE_REASONS:
        return _(NOTICE_REASONS[reason])
    for pattern, msgid in NOTICE_PATTERNS:
        found = pattern.fullmatch(reason or "")
        if found:
            return _(msgid, n=found.group(1))
    return reason


def audit_detail(row):
    """An audit entry's detail in the admin's language (plain-text details as they are)."""
    data = audit.data_of(row)
    if data is None:
        return row.detail
    if row.action == audit.SETTINGS:
        changed = ", ".join(_(SETTING_LABELS[key]) if key in SETTING_LABELS else key
                            for key in data["changed"])
        if data.get("venue"):  # a chain admin changed one venue's own settings
            return _("venue %(slug)s: %(changed)s", slug=data["venue"], changed=changed)
        return changed
    if row.action == audit.SESSION_END:
        return _("session %(id)s: %(mac)s, %(phone)s", id=data["session"], mac=data["mac"],
                 phone=data["phone"])
    if row.action == audit.SESSION_EXTEND:
        return _("session %(id)s: %(mac)s, %(minutes)s minutes more", id=data["session"],
                 mac=data["mac"], minutes=data["minutes"])
    if row.action in (audit.BLOCK, audit.UNBLOCK):
        return _("%(value)s: %(reason)s", value=data["value"], reason=data["reason"])
    if row.action in (audit.VENUE_ADD, audit.VENUE_CHANGE):
        return ", ".join(f"{key}: {value}" for key, value in data.items())
    if row.action == audit.EXPORT:
        return _("sessions started from %(start)s to %(end)s",
                 start=data["from"] or _("the first record"), end=data["to"] or _("now"))
    if row.action == audit.LOGIN_LOCKED:
        words = (_("this address is locked out until %(time)s") if data["locked"] == "address"
                 else _("this account is locked out until %(time)s"))
        return words % {"time": format_time(datetime.fromisoformat(data["retry_at"]), True)}
    if row.action == audit.PURGE:
        return _("older than %(time)s: %(sessions)s sessions, %(verifications)s verifications, "
                 "%(notifications)s notifications",
                 time=format_time(datetime.fromisoformat(data["cutoff"])),
                 sessions=data["sessions"], verifications=data["verifications"],
                 notifications=data["notifications"])
    return row.detail


DEFAULT_VENUE_NAME = N_("Free Wi-Fi")


def init_app(app):
    """Register the admin pages and their CSRF protection on app."""
    # Flask-WTF checks only where `guard` asks it to: never the guest pages or the callback.
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # valid while the admin session lasts
    csrf.init_app(app)
    app.register_blueprint(bp)


# --- The gate -----------------------------------------------------------------------------------

@bp.before_request
def guard():
    """Allowed network, then signed in, then body size, then the CSRF token."""
    svc = services()
    if not auth.is_allowed_address(request.remote_addr, svc.config["admin"]["allow_from"]):
        abort(403)
    admin = auth.signed_in_admin(svc.engine)
    g.admin = admin.name if admin else None
    g.admin_venue = admin.venue_id if admin else None
    g.callpass_venue = g.admin_venue or MAIN_VENUE  # whose settings the pages read
    if g.admin is None and request.endpoint not in ("admin.login", "admin.logout", "admin.static"):
        return redirect(url_for("admin.login", next=request.full_path.rstrip("?")),
                        code=303)
    if g.admin_venue is not None and request.endpoint in CHAIN_ONLY:
        return render_template("admin/message.html", title=_("For the chain's admins"),
                               message=_("This page belongs to the admins of the whole chain; "
                                         "ask one of them.")), 403
    if request.endpoint == "admin.settings_page":
        request.max_content_length = SETTINGS_MAX_BYTES
    if current_app.config.get("WTF_CSRF_ENABLED", True):
        csrf.protect()
    return None


# Pages only an admin of the whole chain may open.
CHAIN_ONLY = ("admin.blocked_page", "admin.block", "admin.unblock", "admin.venues_page",
              "admin.venue_page", "admin.save_venue")


def in_scope(column):
    """A condition keeping the rows of the admin's venue (every row for a chain admin)."""
    venue_id = g.get("admin_venue")
    return column == venue_id if venue_id is not None else true()


@bp.errorhandler(403)
def refused(_error):
    return render_template("admin/message.html", title=_("Not available from here"),
                           message=_("The admin pages can only be opened from the networks "
                                     "listed in the portal's settings (admin.allow_from). "
                                     "Your address is %(address)s.",
                                     address=request.remote_addr or "?")), 403


@bp.errorhandler(404)
def not_found(_error):
    return render_template("admin/message.html", title=_("Not found"),
                           message=_("This page or record does not exist (any more).")), 404


@bp.errorhandler(CSRFError)
def csrf_failed(_error):
    return render_template("admin/message.html", title=_("The form has expired"),
                           message=_("The form was sent without its security token, or the token "
                                     "is from an older sign-in. Nothing was changed. Go back, "
                                     "reload the page and try again.")), 400


@bp.errorhandler(413)
def too_large(_error):
    return render_template("admin/message.html", title=_("Too large"),
                           message=_("What you sent is too large. A logo may have at most "
                                     "%(kb)s KB.", kb=settings.LOGO_MAX_BYTES // 1024)), 413


def venue_zone():
    """The venue's time zone (settings: venue.timezone) for this request."""
    if "venue_zone" not in g:
        g.venue_zone = settings.venue_zone(settings.current()["venue"])
    return g.venue_zone


def venue_today():
    """Today's date in the venue's time zone."""
    return utcnow().astimezone(venue_zone()).date()


@bp.app_template_filter("venue_time")
def format_time(moment, seconds=False):
    """A stored (UTC) time in the venue's time zone: "2024-05-01 17:03 MSK"."""
    if moment is None:
        return ""
    return moment.astimezone(venue_zone()).strftime(
        "%Y-%m-%d %H:%M:%S %Z" if seconds else "%Y-%m-%d %H:%M %Z")


@bp.context_processor
def page_globals():
    venue = settings.current()["venue"]
    name = settings.text_for(venue, "name", str(get_locale() or "en"))[0]
    if not name or name == DEFAULTS["venue"]["name"]:
        name = _(DEFAULT_VENUE_NAME)  # the default name in the admin's language
    return {"admin_lang": str(get_locale() or "en"), "admin_tr": _, "admin_venue": name,
            "admin_zone": venue_zone().key, "venue_admin": g.get("admin_venue") is not None}


def note(action, detail=""):
    """Record an admin action of this request in the audit log (detail: a dict, see audit)."""
    audit.record(services().engine, g.get("admin"), auth.remote_address(), action, detail,
                 g.get("admin_venue"))


# --- Signing in ---------------------------------------------------------------------------------

# The two counts of password guesses held to admin.login_limit (see claim_guess).
ADDRESS_GUESSES = "admin-login"               # sign-ins from one source address
PASSWORD_GUESSES = "admin-current-password"   # the current password of one account, on /admins


def login_limit():
    """admin.login_limit ("5 per 15 minutes") as a limit."""
    return parse(services().config["admin"]["login_limit"])


def claim_guess(scope, key):
    """Count a password guess against admin.login_limit before the password is checked: scope
    ADDRESS_GUESSES for a sign-in from address key, PASSWORD_GUESSES for the current password
    of account key on the change-password form.

    Returns None when the guess may go ahead, else the time (UTC) from which guesses are taken
    again. A guess that was right, or never checked, is given back (give_back_guess), so only
    wrong ones count. Counting first, one atomic increment in the limiter's storage, holds
    guesses sent all at once to the limit: checking first and counting failures afterwards let
    every guess that arrived during the 0.1 s password check through.
    """
    limit = login_limit()
    if hit(limit, scope, key):
        return None
    try:
        reset = limiter.limiter.get_window_stats(limit, scope, key).reset_time
    except Exception:  # the shared storage does not answer: hit() counted in this node's memory
        reset = NODE_MEMORY.get_window_stats(limit, scope, key).reset_time
    return datetime.fromtimestamp(reset, timezone.utc)


def give_back_guess(scope, key):
    """Take back a guess claim_guess counted: the password was right, or it was not checked."""
    limit = login_limit()
    try:
        limiter.limiter.hit(limit, scope, key, cost=-1)
    except Exception:  # the shared storage does not answer: hit() counted in this node's memory
        NODE_MEMORY.hit(limit, scope, key, cost=-1)


LOCK_MESSAGES = {
    "address": N_("Too many failed sign-ins from your address. Try again after %(time)s "
                  "(in %(minutes)s min)."),
    "account": N_("Too many failed sign-ins to this account. Try again after %(time)s "
                  "(in %(minutes)s min). A browser that has signed in to this account before "
                  "can sign in now."),
}


def locked_out_page(what, retry_at):
    """A 429 sign-in page saying when the address or account takes attempts again (also in
    Retry-After); the refused attempt goes to the audit log."""
    seconds = max(1, math.ceil((retry_at - utcnow()).total_seconds()))
    audit.record(services().engine, request.form.get("name", "").strip()[:64] or "-",
                 auth.remote_address(), audit.LOGIN_LOCKED,
                 {"locked": what, "retry_at": retry_at.isoformat(timespec="seconds")})
    message = _(LOCK_MESSAGES[what], time=format_time(retry_at, seconds=True),
                minutes=(seconds + 59) // 60)
    page = render_template("admin/login.html", error=message, name="", next_url="",
                           locked=True)
    return Response(page, status=429, headers={"Retry-After": str(seconds)})


def safe_next(target):
    """Only a path inside /admin may be the page shown after signing in; never one with a
    space or a control character (a line break would end the Location header)."""
    if target and target.startswith("/admin") and not urlsplit(target).netloc \
            and "\\" not in target \
            and all(char.isprintable() and not char.isspace() for char in target):
        return target
    return url_for("admin.dashboard")


@bp.route("/login", methods=["GET", "POST"])
def login():
    """The sign-in form. Failures count against the address (admin.login_limit, claim_guess)
    and, from a browser the account does not know, against the account (auth.claim_attempt)."""
    next_url = request.values.get("next", "")
    if request.method == "GET":
        if g.admin:
            return redirect(safe_next(next_url))
        return render_template("admin/login.html", error=None, name="", next_url=next_url)
    svc = services()
    name = request.form.get("name", "").strip()[:64]
    address = auth.remote_address()
    retry_at = claim_guess(ADDRESS_GUESSES, address)
    if retry_at is not None:
        return locked_out_page("address", retry_at)
    is_known = auth.is_known_device(svc.engine, name)
    if not is_known:
        retry_at = auth.claim_attempt(svc.engine, name)
        if retry_at is not None:
            give_back_guess(ADDRESS_GUESSES, address)  # refused unchecked: not a failed sign-in
            return locked_out_page("account", retry_at)
    row = auth.authenticate(svc.engine, name, request.form.get("password", ""))
    if row is None:
        audit.record(svc.engine, name or "-", address, audit.LOGIN_FAILED)
        return render_template("admin/login.html", error=_("Wrong name or password."),
                               name=name, next_url=next_url), 401
    give_back_guess(ADDRESS_GUESSES, address)
    if not is_known:
        auth.forget_failures(svc.engine, row.name)
    auth.sign_in(row)
    g.admin, g.admin_venue = row.name, row.venue_id  # the entry below is her venue's too
    note(audit.LOGIN)
    response = redirect(safe_next(next_url), code=303)
    auth.remember_device(response, row)
    return response


@bp.post("/logout")
def logout():
    """Sign out this browser and every other browser signed in as the same admin."""
    if g.admin:
        note(audit.LOGOUT)
    auth.sign_out(services().engine, g.admin)
    flash(_("You are signed out, here and on every other browser signed in as you."), "ok")
    return redirect(url_for("admin.login"), code=303)


# --- Dashboard ----------------------------------------------------------------------------------

# SMSC error 4: after 5 wrong logins within 30 minutes it blocks the sender's IP address for
# 30 minutes; for a venue that means nobody can get online until it lifts.
IP_BLOCKED = 4
IP_BLOCK_MINUTES = 30


def handler_url(config):
    """The handler URL for the SMSC account settings: callback.public_url (else
    portal.public_url) + callback/smsc/<token>, and `?md5=<secret>` (or sha1) when
    notifications are to be signed."""
    base = config["callback"]["public_url"] or config["portal"]["public_url"]
    url = base.rstrip("/") + "/callback/smsc/" + config["callback"]["token"]
    kind = config["callback"]["signature"]
    if kind != "none":
        url += f"?{kind}={quote(config['callback']['secret'], safe='')}"
    return url


LOCAL_SUFFIXES = (".local", ".lan", ".home", ".internal", ".localdomain", ".home.arpa")


def is_private_url(url):
    """Whether the provider's servers on the internet cannot reach url's host: a private,
    loopback or link-local address, or a name without a public domain (localhost, *.lan, …)."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "." not in host or host.endswith(LOCAL_SUFFIXES)
    return not address.is_global


def explain_failure(code, text):
    """A provider failure in words, in the admin's language: by the provider's error code when
    it answered one, else the reason it could not be reached."""
    if code is not None:
        words = describe(ProviderRejected(code, text or ""))
    else:
        words = describe(ProviderUnavailable(text or ""))
    return _(words) if words in DESCRIPTIONS.values() else words


def fresh_provider_status(svc, failure):
    """The provider status, asked again when the last failure may be newer than the cached
    answer (it is up to PROVIDER_CHECK_SECONDS old), so that the card never says "answers"
    beside a newer error. At most one extra request per failure."""
    if failure is not None and utcnow() - failure.created_at \
            < timedelta(seconds=PROVIDER_CHECK_SECONDS) \
            and svc.cache.get("admin_provider_checked_after") != failure.id:
        forget_provider_status(svc)
        svc.cache["admin_provider_checked_after"] = failure.id
    return provider_status(svc)


def overview(svc):
    """The dashboard's figures."""
    now = utcnow()
    today = idlog.start_of(venue_today(), venue_zone())
    v, s, n = verification_table, access_session, notification
    state = verification.state_as_of(now)
    with svc.engine.connect() as conn:
        online = conn.execute(select(func.count()).where(
            sessions.is_open(now), in_scope(s.c.venue_id))).scalar()
        waiting = conn.execute(select(func.count()).where(
            v.c.state == verification.PENDING, v.c.expires_at > now,
            in_scope(v.c.venue_id))).scalar()
        by_state = dict(conn.execute(select(state, func.count())
                                     .where(v.c.created_at >= today, in_scope(v.c.venue_id))
                                     .group_by(state)).all())
        failure = conn.execute(select(v.c.id, v.c.failure, v.c.failure_code, v.c.created_at)
                               .where(v.c.state == verification.FAILED)
                               .order_by(v.c.id.desc()).limit(1)).first()
        last_notice = conn.execute(select(n).order_by(n.c.id.desc()).limit(1)).first()
    provider = fresh_provider_status(svc, failure)
    blocked_recently = failure is not None and failure.failure_code == IP_BLOCKED \
        and now - failure.created_at < timedelta(minutes=IP_BLOCK_MINUTES)
    return {
        "online": online, "waiting": waiting,
        "today": {state: by_state.get(state, 0) for state in STATES},
        "last_failure": failure and {"at": failure.created_at,
                                     "text": failure.failure,
                                     "meaning": explain_failure(failure.failure_code,
                                                                failure.failure)},
        "last_notice": last_notice,
        "provider": provider,
        "provider_blocked": blocked_recently or provider.get("code") == IP_BLOCKED,
        "firewall": svc.firewall_worker.status(),
        "firewall_name": svc.firewall.name,
        "handler_url": handler_url(svc.config),
        "handler_is_private": is_private_url(handler_url(svc.config)),
        "has_callback_url": bool(svc.config["callback"]["public_url"]),
        "signature": svc.config["callback"]["signature"],
    }


CHART_DAYS = 30


def daily_figures(svc, days=CHART_DAYS):
    """[{"day", "guests", "confirmed", "expired"}] for the last days venue days, oldest first:
    guests are the different phones whose sessions started that day, confirmed and expired the
    verifications started that day."""
    zone = venue_zone()
    first = venue_today() - timedelta(days=days - 1)
    since = idlog.start_of(first, zone)
    v, s = verification_table, access_session
    state = verification.state_as_of(utcnow())
    with svc.engine.connect() as conn:
        calls = conn.execute(select(v.c.created_at, state).where(
            v.c.created_at >= since, in_scope(v.c.venue_id),
            state.in_((verification.CONFIRMED, verification.EXPIRED)))).all()
        visits = conn.execute(select(s.c.started_at, s.c.phone).where(
            s.c.started_at >= since, in_scope(s.c.venue_id))).all()
    figures = {first + timedelta(days=n): {"confirmed": 0, "expired": 0, "phones": set()}
               for n in range(days)}
    for created_at, state in calls:
        day = figures.get(created_at.astimezone(zone).date())
        if day is not None:
            day[state] += 1
    for started_at, phone_number in visits:
        day = figures.get(started_at.astimezone(zone).date())
        if day is not None:
            day["phones"].add(phone_number)
    return [{"day": day, "guests": len(f["phones"]), "confirmed": f["confirmed"],
             "expired": f["expired"]} for day, f in figures.items()]


def chart(figures, width=600, height=150):
    """The geometry of the dashboard's chart (drawn as inline SVG by the template): two bars a
    day (calls confirmed, expired) and a line of guests, on one scale."""
    top = max([1] + [max(f["guests"], f["confirmed"], f["expired"]) for f in figures])
    slot = width / len(figures)
    scale = (height - 10) / top

    def y(value):
        return round(height - value * scale, 1)

    bars = []
    for n, f in enumerate(figures):
        x = n * slot
        bars.append({**f, "x": round(x + 1, 1), "width": round(slot / 2 - 1.5, 1),
                     "x2": round(x + slot / 2, 1),
                     "confirmed_y": y(f["confirmed"]), "expired_y": y(f["expired"]),
                     "mid": round(x + slot / 2, 1)})
    line = " ".join(f"{b['mid']},{y(b['guests'])}" for b in bars)
    return {"width": width, "height": height, "top": top, "bars": bars, "line": line}


@bp.get("/")
def dashboard():
    svc = services()
    info = overview(svc)
    if not info["provider"].get("ok"):
        info["provider_meaning"] = explain_failure(info["provider"].get("code"),
                                                   info["provider"].get("error", ""))
    return render_template("admin/dashboard.html", info=info, states=STATES, verdicts=VERDICTS,
                           notice_reason=notice_reason, chart=chart(daily_figures(svc)))


# --- Settings -----------------------------------------------------------------------------------

@bp.route("/settings", methods=["GET", "POST"])
def settings_page():
    svc = services()
    if g.admin_venue is None and request.args.get("venue"):  # a chain admin edits one venue
        chosen = venues.by_slug(svc.engine, request.args["venue"][:40])
        if chosen is None:
            abort(404)
        g.callpass_venue = chosen.id
    venue_id = g.callpass_venue
    effective = settings.load(svc, venue_id)
    if request.method == "GET":
        return render_settings(effective, {})
    changes, errors = settings.parse_form(request.form, effective, editable_keys(venue_id))
    upload = request.files.get("logo")
    logo_data = logo_type = None
    if upload is not None and upload.filename:
        logo_data = upload.read(settings.LOGO_MAX_BYTES + 1)
        try:
            logo_type = settings.check_logo(logo_data)
        except settings.Invalid as exc:
            errors["logo"] = exc
    if errors:
        return render_settings(effective, errors), 400
    settings.save(svc, changes, g.admin, venue_id)
    changed = sorted(changes)
    if logo_type:
        settings.save_logo(svc, logo_data, logo_type, venue_id)
        changed.append("venue.logo")
    elif request.form.get("logo.remove"):
        settings.remove_logo(svc, venue_id)
        changed.append("venue.logo")
    if any(key.startswith("provider.") for key in changes):
        forget_provider_status(svc)  # the balance shown must be the new account's
    if "gateway.garden" in changes:
        failures = settings.push_garden(svc.firewall, effective["gateway"]["garden"],
                                        changes["gateway.garden"])
        if failures:
            flash(_("Saved, but the firewall did not take the walled garden: %(why)s",
                    why="; ".join(failures)), "error")
    if changed:
        slug = request.args.get("venue") if g.admin_venue is None else None
        note(audit.SETTINGS, {"changed": changed, **({"venue": slug} if slug else {})})
        flash(_("Saved. Guests see the change from their next page."), "ok")
    else:
        flash(_("Nothing was changed."), "ok")
    return redirect(url_for("admin.settings_page", venue=request.args.get("venue") or None),
                    code=303)


def editable_keys(venue_id):
    """The keys on the settings form: all of the chain's; a venue's own for its admin, and its
    provider account too for a chain admin (the handler URL's secret stays with chain admins)."""
    if g.admin_venue is not None:
        return settings.VENUE_KEYS
    return settings.EDITABLE if venue_id == MAIN_VENUE else settings.VENUE_CHAIN_KEYS


def render_settings(effective, errors):
    """The settings form: what was typed after a failed save, else the effective values."""
    typed = request.method == "POST"

    def value(key):
        section, _sep, name = key.partition(".")
        name, _sep, lang = name.partition(".")
        if lang and not typed:  # one language's field of a venue text (venue.name.uk)
            return settings.as_texts(effective[section][name],
                                     effective["venue"]["default_language"]).get(lang, "")
        if typed:
            if key in settings.SECRETS:
                return ""  # a secret is never sent back, not even what was just typed
            return request.form.get(key, "")
        section, _sep, name = key.partition(".")
        current = effective[section][name]
        return "\n".join(current) if isinstance(current, list) else current

    def checked(key):
        return bool(request.form.get(key)) if typed else bool(value(key))

    def chosen(key):
        if typed:
            return request.form.getlist(key)
        section, _sep, name = key.partition(".")
        return effective[section][name]

    # One field per offered language for the venue's texts (and for the default language, so
    # that its required name has a field even while the form offers another set).
    default_language = value("venue.default_language")
    text_languages = [lang for lang in LANGUAGES
                      if lang in chosen("venue.languages") or lang == default_language]
    messages = {key: _(exc.msgid, **exc.params) for key, exc in errors.items()}
    has_logo = settings.has_logo(services(), g.callpass_venue)
    provider = effective["provider"]
    return render_template(
        "admin/settings.html", value=value, checked=checked, chosen=chosen, errors=messages,
        has_password=bool(provider["password"]), has_apikey=bool(provider["apikey"]),
        has_logo=has_logo, logo_kb=settings.LOGO_MAX_BYTES // 1024,
        rules=settings.RULES, system_zone=settings.system_timezone(),
        text_languages=text_languages, language_names=NAMES,
        zone_names=sorted(settings.zone_names()),
        venue_slug=None if g.callpass_venue == MAIN_VENUE
        else venues.by_id(services().engine, g.callpass_venue).slug)


# The settings page's preview: the guest view, under /admin so it answers by any host name.
bp.add_url_rule("/logo", "logo", guest.venue_logo)


# --- Sessions -----------------------------------------------------------------------------------

def session_filter(text):
    """A condition matching sessions by (part of) a phone number or a MAC."""
    text = text.strip()
    try:
        return access_session.c.mac == normalise_mac(text)
    except ValueError:
        pass
    conditions = []
    try:  # a whole number in any form the guest form accepts ("8 916 123-45-67")
        conditions.append(access_session.c.phone == phone.normalise(
            text, settings.current()["portal"]["default_region"]))
    except phone.InvalidPhone:
        pass
    digits = phone.digits_of(text)
    if digits:
        conditions.append(access_session.c.phone.contains(digits, autoescape=True))
    partial_mac = text.lower().replace("-", ":")
    if re.fullmatch(r"[0-9a-f:]{2,17}", partial_mac):
        conditions.append(access_session.c.mac.contains(partial_mac, autoescape=True))
    return or_(*conditions) if conditions else access_session.c.id < 0


@bp.get("/sessions")
def sessions_page():
    svc = services()
    query_text = request.args.get("q", "")[:40]
    condition = session_filter(query_text) if query_text.strip() else None
    s, now = access_session, utcnow()
    live = (select(s).where(sessions.is_open(now), in_scope(s.c.venue_id))
            .order_by(s.c.started_at.desc()))
    # The newest ended ones as they read now: those whose time ran out since the maintenance
    # thread's last round (a minute's worth at most) are among them already. Two queries, each
    # on its index, rather than one sorting every session of the log by a computed end.
    columns = [c for c in s.c if c.name not in ("ended_at", "end_reason")]
    recorded = (select(s).where(s.c.ended_at.is_not(None), in_scope(s.c.venue_id))
                .order_by(s.c.ended_at.desc(), s.c.id.desc()).limit(PAGE_SIZE))
    ran_out = (select(*columns, sessions.ended_as_of(now), sessions.end_reason_as_of(now))
               .where(sessions.ran_out_unrecorded(now), in_scope(s.c.venue_id))
               .order_by(s.c.ends_at.desc(), s.c.id.desc()).limit(PAGE_SIZE))
    if condition is not None:
        live, recorded, ran_out = (q.where(condition) for q in (live, recorded, ran_out))
    with svc.engine.connect() as conn:
        live_rows = conn.execute(live).all()
        ended_rows = sorted(conn.execute(recorded).all() + conn.execute(ran_out).all(),
                            key=lambda row: (row.ended_at, row.id), reverse=True)[:PAGE_SIZE]
    return render_template("admin/sessions.html", live=live_rows, ended=ended_rows,
                           q=query_text, reasons=END_REASONS, extend_choices=EXTEND_CHOICES)


def open_session(session_id):
    """The open session with this id, or a 404."""
    with services().engine.connect() as conn:
        row = conn.execute(select(access_session).where(
            access_session.c.id == session_id, sessions.is_open(utcnow()),
            in_scope(access_session.c.venue_id))).first()
    if row is None:
        abort(404)
    return row


def back_to_sessions():
    return redirect(url_for("admin.sessions_page", q=request.form.get("q") or None), code=303)


@bp.get("/sessions/<int:session_id>/end")
def confirm_end(session_id):
    """The second step of "End now": which device and phone, and a button that ends it (a page,
    not a script dialog, so that it works without JavaScript)."""
    return render_template("admin/end_session.html", s=open_session(session_id),
                           q=request.args.get("q", "")[:40])


@bp.post("/sessions/<int:session_id>/end")
def end_session(session_id):
    svc = services()
    row = open_session(session_id)
    if not sessions.end_session(svc.engine, session_id, "admin"):
        return session_moved_on(row)
    svc.firewall_worker.wake()
    note(audit.SESSION_END, {"session": session_id, "mac": row.mac, "phone": row.phone})
    if svc.firewall.name == "radius":
        flash_disconnect(svc, session_id, row)
    else:
        flash(_("Session of %(mac)s (%(phone)s) ended; the device is offline.",
                mac=row.mac, phone=row.phone), "ok")
    return back_to_sessions()


def session_moved_on(row):
    """The session ended between the page's check and the change (its time ran out, the device
    signed in anew, another admin): say so and change nothing."""
    flash(_("The session of %(mac)s (%(phone)s) had already ended; nothing was changed.",
            mac=row.mac, phone=row.phone), "error")
    return back_to_sessions()


def flash_disconnect(svc, session_id, row):
    """A RADIUS router is told by a Disconnect-Message: wait a little for its answer and say it."""
    deadline = time.monotonic() + DISCONNECT_WAIT_SECONDS
    result = None
    while result is None and time.monotonic() < deadline:
        time.sleep(0.1)
        with svc.engine.connect() as conn:
            result = conn.execute(select(access_session.c.disconnect_result)
                                  .where(access_session.c.id == session_id)).scalar()
    if result == "disconnected by the router":
        flash(_("Session of %(mac)s (%(phone)s) ended; the router disconnected the device.",
                mac=row.mac, phone=row.phone), "ok")
    else:
        flash(_("Session of %(mac)s (%(phone)s) ended, but the router did not confirm the "
                "disconnect (%(result)s). The device stays online until its router asks again "
                "(at most its Session-Timeout); callpass will refuse it then.",
                mac=row.mac, phone=row.phone, result=result or _("no answer yet")), "error")


@bp.post("/sessions/<int:session_id>/extend")
def extend_session(session_id):
    svc = services()
    row = open_session(session_id)
    try:
        minutes = int(request.form.get("minutes", ""))
    except ValueError:
        minutes = 0
    longest = MAX_SESSION_MINUTES
    # The range first: the new end of a session extended by billions of minutes is past year 9999.
    if not 1 <= minutes <= longest or \
            max(row.ends_at, utcnow()) + timedelta(minutes=minutes) - utcnow() \
            > timedelta(minutes=longest):
        flash(_("A session can run at most %(days)s days from now.", days=MAX_SESSION_DAYS),
              "error")
        return back_to_sessions()
    new_end = sessions.extend_session(svc.engine, session_id, minutes)
    if new_end is None:
        return session_moved_on(row)
    svc.firewall_worker.wake()
    flash(_("Session of %(mac)s extended until %(time)s.", mac=row.mac,
            time=format_time(new_end)), "ok")
    note(audit.SESSION_EXTEND, {"session": session_id, "mac": row.mac, "minutes": minutes})
    return back_to_sessions()


# --- Blocked phones and devices ----------------------------------------------------------------

def blocked_target(text):
    """(kind, value) of what the admin typed: a MAC, else a phone number in any form the guest
    form accepts; None when it is neither."""
    try:
        return blocklist.MAC, normalise_mac(text.strip())
    except ValueError:
        pass
    region = settings.current()["portal"]["default_region"]
    try:
        return blocklist.PHONE, phone.normalise(text, region)
    except phone.InvalidPhone:
        return None


def render_blocked(errors=None, typed=None, status=200):
    return render_template("admin/blocked.html", rows=blocklist.entries(services().engine),
                           errors=errors or {}, typed=typed or {},
                           max_reason=blocklist.MAX_REASON), status


@bp.get("/blocked")
def blocked_page():
    """Blocked phones and devices: block one (with a reason), unblock one."""
    return render_blocked(typed={"target": request.args.get("target", "")[:40]})


@bp.post("/blocked")
def block():
    svc = services()
    typed = {"target": request.form.get("target", "")[:40],
             "reason": request.form.get("reason", "").strip()[:blocklist.MAX_REASON]}
    errors = {}
    target = blocked_target(typed["target"])
    if target is None:
        errors["target"] = _("Enter a phone number (+7 916 123-45-67) or a MAC address "
                             "(aa:bb:cc:dd:ee:ff).")
    if not typed["reason"]:
        errors["reason"] = _("Say why: the audit log keeps it.")
    if not errors:
        try:
            ended = blocklist.block(svc.engine, *target, typed["reason"], g.admin)
        except blocklist.AlreadyBlocked:
            errors["target"] = _("%(value)s is blocked already.", value=target[1])
    if errors:
        return render_blocked(errors, typed, 400)
    if ended:
        svc.firewall_worker.wake()
    note(audit.BLOCK, {"kind": target[0], "value": target[1], "reason": typed["reason"]})
    flash(_("%(value)s is blocked; sessions ended: %(n)s.", value=target[1], n=ended), "ok")
    return redirect(url_for("admin.blocked_page"), code=303)


@bp.post("/blocked/<int:block_id>/remove")
def unblock(block_id):
    row = blocklist.unblock(services().engine, block_id)
    if row is None:
        abort(404)
    note(audit.UNBLOCK, {"kind": row.kind, "value": row.value, "reason": row.reason})
    flash(_("%(value)s is no longer blocked.", value=row.value), "ok")
    return redirect(url_for("admin.blocked_page"), code=303)


# --- Identification log and audit log ----------------------------------------------------------

FIRST_YEAR, LAST_YEAR = 2000, 2100  # the days the log's filters take


def date_range():
    """(from, to, error) from the query string; days in the venue's time zone, of the years
    FIRST_YEAR to LAST_YEAR (a day near year 1 or 9999 has no midnight in every time zone)."""
    try:
        date_from = idlog.parse_day(request.args.get("from"))
        date_to = idlog.parse_day(request.args.get("to"))
    except ValueError:
        return None, None, _("Enter dates as YYYY-MM-DD.")
    if any(day and not FIRST_YEAR <= day.year <= LAST_YEAR for day in (date_from, date_to)):
        return None, None, _("Enter days of the years %(first)s to %(last)s.", first=FIRST_YEAR,
                             last=LAST_YEAR)
    if date_from and date_to and date_from > date_to:
        return date_from, date_to, _("The first day is after the last day.")
    return date_from, date_to, None


@bp.get("/log")
def log_page():
    svc = services()
    date_from, date_to, error = date_range()
    try:
        page_number = min(max(1, int(request.args.get("page", "1"))), MAX_PAGE)
    except ValueError:
        page_number = 1
    rows, total = [], 0
    if not error:
        rows, total = log_rows(date_from, date_to, page_number)
        last_page = max(1, math.ceil(total / PAGE_SIZE))
        if page_number > last_page:  # a page past the end (a typed address): the last one
            page_number = last_page
            rows, total = log_rows(date_from, date_to, page_number)
    return render_template(
        "admin/log.html", rows=rows, total=total, page=page_number, page_size=PAGE_SIZE,
        error=error, date_from=request.args.get("from", ""), date_to=request.args.get("to", ""),
        reasons=END_REASONS, end_reason=idlog.end_reason, verified_by=idlog.verified_by,
        retention_days=svc.config["admin"]["retention_days"]), 400 if error else 200


def log_rows(date_from, date_to, page_number):
    """(rows, total) of one page of the log this admin sees; a page past the end has no rows."""
    return idlog.page(services().engine, date_from, date_to, limit=PAGE_SIZE,
                      offset=(page_number - 1) * PAGE_SIZE, zone=venue_zone(),
                      venue_id=g.admin_venue)


# The export's column titles in the admin's language (the columns of idlog.CSV_HEADER).
CSV_TITLES = (N_("Phone"), N_("Device (MAC)"), N_("IP"), N_("Verified by"), N_("Verified at"),
              N_("Session start"), N_("Session end"), N_("Why it ended"),
              N_("Bytes from the device"), N_("Bytes to the device"))
TIMED_COLUMNS = (4, 5, 6)  # their titles name the time zone


def export_format():
    """The admin's export: titles and words in the admin's language, times in the venue's zone,
    phone numbers as spreadsheets keep them (text with their +)."""
    zone = venue_zone()
    header = [_(title) + (f" ({zone.key})" if column in TIMED_COLUMNS else "")
              for column, title in enumerate(CSV_TITLES)]
    words = {code: _(msgid) for code, msgid in END_REASONS.items()}
    words.update({idlog.BY_CALL: _("call"), idlog.BY_MEMORY: _("remembered device")})
    # A chain admin's export of a chain names each row's venue (a single venue's stays as it was).
    with_venue = g.admin_venue is None and venues.is_chain(services().engine)
    return idlog.Export(header=header, words=words, zone=zone, phone_text=True,
                        venue_column=_("Venue") if with_venue else None)


def export_name(svc, date_from, date_to):
    """identifications_<first day>_<last day>.csv (venue days; without a range, from the first
    session's day to today)."""
    if date_from is None:
        with svc.engine.connect() as conn:
            first = conn.execute(select(func.min(access_session.c.started_at))
                                 .where(in_scope(access_session.c.venue_id))).scalar()
        date_from = first.astimezone(venue_zone()).date() if first else venue_today()
    return f"identifications_{date_from}_{date_to or venue_today()}.csv"


@bp.get("/log.csv")
def export():
    """The log as CSV, streamed: UTF-8 with BOM, header row, times in the venue's zone."""
    svc = services()
    date_from, date_to, error = date_range()
    if error:
        flash(error, "error")
        return redirect(url_for("admin.log_page"), code=303)
    delimiter = ";" if request.args.get("sep") == "semicolon" else ","
    name = export_name(svc, date_from, date_to)
    note(audit.EXPORT, {"from": date_from and date_from.isoformat(),
                        "to": date_to and date_to.isoformat()})
    return Response(
        idlog.csv_chunks(svc.engine, date_from, date_to, delimiter=delimiter,
                         export=export_format(), venue_id=g.admin_venue),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"',
                 "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})


# --- Venues of a chain (chain admins only) -----------------------------------------------------

@bp.get("/venues")
def venues_page():
    """Every venue with its live counts."""
    engine = services().engine
    return render_template("admin/venues.html", rows=venues.listing(engine),
                           nodes=opennds_remote.nodes(engine))


@bp.get("/venues/new", endpoint="venue_page")
@bp.get("/venues/<int:venue_id>", endpoint="venue_page")
def venue_page(venue_id=None):
    """Add a venue, or change one's name and the router names that identify it."""
    row = venue_or_404(venue_id)
    typed = {name: getattr(row, name) for name in venues.FIELDS} if row else {}
    return render_venue(venue_id, row, typed, {})


def venue_or_404(venue_id):
    """The venue row of a page about venue_id (None: a new venue); 404 when there is none."""
    if venue_id is None:
        return None
    row = venues.by_id(services().engine, venue_id)
    if row is None:
        abort(404)
    return row


def render_venue(venue_id, row, typed, errors, status=200):
    messages = {key: _(msgid, **params) for key, (msgid, params) in errors.items()}
    return render_template("admin/venue.html", venue_id=venue_id, typed=typed, errors=messages,
                           is_main=venue_id == MAIN_VENUE,
                           has_faskey=bool(row and row.opennds_faskey),
                           faspath=url_for("opennds_remote.arrival",
                                           slug=typed.get("slug") or "SLUG")), status


@bp.post("/venues/new", endpoint="save_venue")
@bp.post("/venues/<int:venue_id>", endpoint="save_venue")
def save_venue(venue_id=None):
    svc = services()
    row = venue_or_404(venue_id)
    typed = {name: request.form.get(name, "")[:200] for name in venues.FIELDS}
    try:
        values = venues.read_form(request.form, is_main=venue_id == MAIN_VENUE,
                                  has_faskey=bool(row and row.opennds_faskey))
        saved_id = venues.save(svc.engine, values, venue_id)
    except venues.Invalid as exc:
        return render_venue(venue_id, row, typed, exc.errors, 400)
    note(audit.VENUE_ADD if venue_id is None else audit.VENUE_CHANGE, venues.filled(values))
    flash(_("Venue %(slug)s saved.", slug=values["slug"]), "ok")
    return redirect(url_for("admin.venue_page", venue_id=saved_id), code=303)


# --- Admin accounts -----------------------------------------------------------------------------

def account_problem(name, password, repeated):
    """Why name/password cannot be an account, in the admin's language (None when they can).
    The rules are auth's (check_name, check_password); the message covers each of them."""
    try:
        auth.check_name(name)
    except auth.AccountError:
        return "name", _("A name is 1–64 letters, digits, “.”, “_”, “@” or “-”, starting with a "
                         "letter or digit.")
    try:
        auth.check_password(name, password)
    except auth.AccountError:
        return "password", _("The password must have %(low)s to %(high)s characters and must not "
                             "be the admin name.", low=auth.MIN_PASSWORD_LENGTH,
                             high=auth.MAX_PASSWORD_LENGTH)
    if password != repeated:
        return "repeated", _("The two passwords differ.")
    return None


def visible_admins(engine):
    """The admin accounts this admin may see: all for a chain admin, else its venue's."""
    rows = auth.list_admins(engine)
    if g.admin_venue is None:
        return rows
    return [row for row in rows if row.venue_id == g.admin_venue]


def sole_chain_admin(engine):
    """The name of the only admin of the whole chain (who cannot be removed), else None."""
    chain_admins = [row.name for row in auth.list_admins(engine) if row.venue_id is None]
    return chain_admins[0] if len(chain_admins) == 1 else None


def render_admins(errors=None, typed_name="", status=200):
    engine = services().engine
    slugs = venues.slugs(engine) if g.admin_venue is None else {}
    return render_template("admin/admins.html", rows=visible_admins(engine), errors=errors or {},
                           typed_name=typed_name, venue_slugs=slugs, is_chain=len(slugs) > 1,
                           sole_admin=sole_chain_admin(engine)), status


@bp.get("/admins")
def admins_page():
    """The admin accounts: add one, remove one (never the last), change one's own password."""
    return render_admins()


@bp.post("/admins/add")
def add_admin():
    svc = services()
    name = request.form.get("name", "").strip()
    problem = account_problem(name, request.form.get("password", ""),
                              request.form.get("repeated", ""))
    if problem is None and any(row.name == name for row in auth.list_admins(svc.engine)):
        problem = "name", _("An admin with this name already exists.")
    venue_id = g.admin_venue  # a venue's admin adds admins of that venue only
    typed_venue = request.form.get("venue", "").strip()
    if problem is None and venue_id is None and typed_venue:
        chosen = venues.by_slug(svc.engine, typed_venue)
        if chosen is None or chosen.id == MAIN_VENUE:  # the main venue's admins are the chain's
            problem = "venue", _("There is no venue %(slug)s.", slug=typed_venue[:40])
        else:
            venue_id = chosen.id
    if problem is None:
        try:
            auth.add_admin(svc.engine, name, request.form["password"], venue_id)
        except auth.AccountError:  # taken meanwhile by another admin's request
            problem = "name", _("An admin with this name already exists.")
    if problem is not None:
        return render_admins({problem[0]: problem[1]}, typed_name=name[:64], status=400)
    note(audit.ADMIN_ADD, name)
    flash(_("Admin %(name)s added.", name=name), "ok")
    return redirect(url_for("admin.admins_page"), code=303)


@bp.post("/admins/<name>/remove")
def remove_admin(name):
    svc = services()
    if name not in [row.name for row in visible_admins(svc.engine)]:
        abort(404)
    try:
        auth.remove_admin(svc.engine, name, keep_a_chain_admin=True)
    except auth.LastChainAdmin:
        flash(_("The last admin cannot be removed: add another admin first."), "error")
        return redirect(url_for("admin.admins_page"), code=303)
    except auth.AccountError:  # removed meanwhile by another admin's request
        abort(404)
    note(audit.ADMIN_REMOVE, name)
    flash(_("Admin %(name)s removed; their browsers are signed out.", name=name), "ok")
    return redirect(url_for("admin.admins_page"), code=303)


@bp.post("/admins/password")
def change_password():
    """Change the signed-in admin's own password (the current one first); every other browser
    signed in as this admin is signed out, this one stays signed in and known to the account.

    Wrong current passwords count against the account as failed sign-ins count against an
    address (admin.login_limit): a stolen session cannot guess its way to the password."""
    svc = services()
    retry_at = claim_guess(PASSWORD_GUESSES, g.admin)
    if retry_at is not None:
        seconds = max(1, math.ceil((retry_at - utcnow()).total_seconds()))
        page, status = render_admins({"current": _(
            "Too many wrong current passwords. Try again after %(time)s (in %(minutes)s min).",
            time=format_time(retry_at, seconds=True), minutes=(seconds + 59) // 60)}, status=429)
        return page, status, {"Retry-After": str(seconds)}
    if auth.authenticate(svc.engine, g.admin, request.form.get("current", "")) is None:
        return render_admins({"current": _("This is not your current password.")}, status=400)
    give_back_guess(PASSWORD_GUESSES, g.admin)
    password = request.form.get("password", "")
    problem = account_problem(g.admin, password, request.form.get("repeated", ""))
    if problem is not None:
        key = {"password": "new", "repeated": "new_repeated"}.get(problem[0], problem[0])
        return render_admins({key: problem[1]}, status=400)
    auth.set_password(svc.engine, g.admin, password)
    row = auth.authenticate(svc.engine, g.admin, password)
    auth.sign_in(row)
    note(audit.ADMIN_PASSWORD, g.admin)
    flash(_("Your password is changed; your other browsers are signed out."), "ok")
    response = redirect(url_for("admin.admins_page"), code=303)
    # The new password made every browser unknown to the account: this one is known again, so
    # guesses elsewhere cannot lock its own admin out of it.
    auth.remember_device(response, row)
    return response


@bp.get("/audit")
def audit_page():
    try:
        before = int(request.args["before"]) if request.args.get("before") else None
    except ValueError:
        before = None
    if before is not None:  # beyond any id: every entry is older than a larger one, none than 0
        before = None if before > MAX_ID else max(before, 0)
    rows = audit.entries(services().engine, limit=PAGE_SIZE, before_id=before,
                         venue_id=g.admin_venue)
    older = rows[-1].id if len(rows) == PAGE_SIZE else None
    return render_template("admin/audit.html", rows=rows, older=older, actions=ACTIONS,
                           detail=audit_detail)
