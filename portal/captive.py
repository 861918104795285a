"""Captive-portal detection: OS probes and foreign hosts lead an unverified guest to the portal.

The gateway firewall redirects a guest's port-80 traffic here, whatever host it was for. A request
whose Host is not the portal's, or that asks for a known probe path, is answered with a redirect to
the portal (never an empty 200, never a hang). A device that is already online gets the answer its
OS expects, so its sign-in sheet closes.
"""

from urllib.parse import urlencode, urlsplit

from flask import Blueprint, Response, jsonify, redirect, request

from . import neighbours, services, sessions

bp = Blueprint("captive", __name__)

# Probe path -> the body/status that OS reads as "online".
PROBES = {
    "/hotspot-detect.html": ("<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>",
                             200, "text/html"),
    "/library/test/success.html": (
        "<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>", 200, "text/html"),
    "/generate_204": ("", 204, "text/plain"),
    "/gen_204": ("", 204, "text/plain"),
    "/connecttest.txt": ("Microsoft Connect Test", 200, "text/plain"),
    "/ncsi.txt": ("Microsoft NCSI", 200, "text/plain"),
    "/success.txt": ("success\n", 200, "text/plain"),
    "/canonical.html": ("<meta http-equiv=\"refresh\" content=\"0;url=https://support.mozilla.org/kb/captive-portal\"/>",
                        200, "text/html"),
}

# Paths answered for whatever Host: the provider's notification may arrive under any name.
ANY_HOST_PREFIXES = ("/callback/", "/healthz")


def portal_host():
    """The host name guests are sent to (from portal.public_url)."""
    return urlsplit(services().config["portal"]["public_url"]).hostname or ""


def is_foreign_host():
    """Whether this request was meant for some other site (so the firewall redirected it here)."""
    host = (request.host or "").rsplit(":", 1)[0].strip("[]").lower()
    return host != portal_host().lower()


def device_session():
    """The open session of the requesting device, or None."""
    svc = services()
    mac = neighbours.mac_for_ip(request.remote_addr or "", svc.config["portal"]["neighbour_table"])
    if mac is None and svc.is_demo:
        mac = neighbours.stand_in_mac(request.remote_addr or "")
    return sessions.active_session(svc.engine, mac) if mac else None


def to_portal():
    """A redirect to the portal's form, keeping where the guest was going."""
    url = services().config["portal"]["public_url"]
    original = f"http://{request.host}{request.full_path.rstrip('?')}"
    return redirect(url + "?" + urlencode({"continue": original[:500]}), code=302)


@bp.before_app_request
def intercept():
    """Send probes and other sites' requests to the portal, or answer 'online' for known devices."""
    if services().is_demo or request.path.startswith(ANY_HOST_PREFIXES):
        return None
    probe = PROBES.get(request.path)
    if probe is None and not is_foreign_host():
        return None
    if device_session() is not None:
        if probe is not None:
            body, status, mimetype = probe
            return Response(body, status=status, mimetype=mimetype)
        return None  # online but asked the portal for a foreign host: show the portal pages
    return to_portal()


@bp.get("/api/captive")
def captive_api():
    """RFC 8908 Captive Portal API for the asking device."""
    session = device_session()
    body = {"captive": session is None,
            "user-portal-url": services().config["portal"]["public_url"]}
    if session is not None:
        body["seconds-remaining"] = sessions.seconds_until(session.ends_at)
    response = jsonify(body)
    response.mimetype = "application/captive+json"
    response.headers["Cache-Control"] = "private, no-store"
    return response
