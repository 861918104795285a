"""Captive-portal detection: OS probes and other sites' pages lead an unverified guest to the portal.

The gateway firewall sends a guest's port-80 traffic here, whatever host it was for. A request that
is a known connectivity probe (by path, by probe host, or by the prober's User-Agent), or whose Host
is not the portal's, is answered with a 302 to the portal's form (never an empty 200, never a
hang). A device that is online already gets the answer its OS expects from the probe, so its
sign-in sheet turns to "Done" and closes, in setups where probes still reach the portal.

Also here: the RFC 8908 Captive Portal API (`/api/captive`), which RFC 8910's DHCP option 114
announces, so that phones learn they are captive without any interception.
"""

from urllib.parse import urlencode, urljoin, urlsplit

from flask import Blueprint, Response, jsonify, redirect, request

from . import neighbours, services, sessions

bp = Blueprint("captive", __name__)

APPLE_SUCCESS = "<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>"
FIREFOX_CANONICAL = ('<meta http-equiv="refresh" '
                     'content="0;url=https://support.mozilla.org/kb/captive-portal"/>')

# What each kind of probe reads as "online": (body, status, mimetype). None = no probe answer:
# an online device is shown the portal's "you are online" page instead.
ONLINE_ANSWERS = {
    "apple": (APPLE_SUCCESS, 200, "text/html"),
    "android": ("", 204, "text/plain"),
    "windows": ("Microsoft Connect Test", 200, "text/plain"),
    "windows-ncsi": ("Microsoft NCSI", 200, "text/plain"),
    "windows-redirect": None,
    "firefox": ("success\n", 200, "text/plain"),
    "firefox-canonical": (FIREFOX_CANONICAL, 200, "text/html"),
}

# Probe paths, recognised under any Host (the portal's own name included).
PROBE_PATHS = {
    "/hotspot-detect.html": "apple",
    "/library/test/success.html": "apple",
    "/generate_204": "android",
    "/gen_204": "android",
    "/connecttest.txt": "windows",
    "/ncsi.txt": "windows-ncsi",
    "/redirect": "windows-redirect",
    "/success.txt": "firefox",
    "/canonical.html": "firefox-canonical",
}

# Hosts that exist only to be probed: any path on them is a probe.
PROBE_HOSTS = {
    "captive.apple.com": "apple",
    "www.appleiphonecell.com": "apple",
    "www.itools.info": "apple",
    "www.ibook.info": "apple",
    "www.airport.us": "apple",
    "www.thinkdifferent.us": "apple",
    "connectivitycheck.gstatic.com": "android",
    "connectivitycheck.android.com": "android",
    "clients1.google.com": "android",
    "clients3.google.com": "android",
    "connect.rom.miui.com": "android",
    "connectivitycheck.platform.hicloud.com": "android",
    "connectivitycheck.samsung.com": "android",
    "www.msftconnecttest.com": "windows",
    "www.msftncsi.com": "windows-ncsi",
    "detectportal.firefox.com": "firefox",
}

# Probers that say who they are. Android's probe claims to be a desktop Chrome, Firefox's is the
# browser itself: those two are known by path and host only.
PROBE_AGENTS = (
    ("CaptiveNetworkSupport", "apple"),
    ("Microsoft NCSI", "windows"),
)

# Paths answered for whatever Host: the provider's notification may arrive under any name, health
# checks and the admin pages are often reached by the gateway's address, and the API is asked for
# by the name DHCP option 114 gave.
ANY_HOST_PATHS = ("/callback/", "/healthz", "/admin", "/api/captive")

MAX_CONTINUE = 500


def host_name(host):
    """The lowercase host name of a Host header value (port and IPv6 brackets removed)."""
    try:
        return (urlsplit("//" + (host or "")).hostname or "").rstrip(".")
    except ValueError:
        return ""


def portal_host():
    """The host name guests are sent to (from portal.public_url)."""
    return host_name(urlsplit(services().config["portal"]["public_url"]).netloc)


def probe_kind(host, path, user_agent=""):
    """Which OS probe a request to host+path from user_agent is ("apple", "android", …), or None.

    The User-Agent only counts for other hosts: the sign-in sheet's own browser may carry the
    prober's name while it loads the portal's pages.
    """
    if path in PROBE_PATHS:
        return PROBE_PATHS[path]
    if host == portal_host():
        return None
    if host in PROBE_HOSTS:
        return PROBE_HOSTS[host]
    for marker, kind in PROBE_AGENTS:
        if marker in user_agent:
            return kind
    return None


def device_identity():
    """(ip, mac) of the requesting device, from the socket and the neighbour table (never from
    anything the guest sends). mac is None off the LAN; demo mode gives the loopback browser a
    stand-in."""
    svc = services()
    ip = request.remote_addr or ""
    mac = neighbours.mac_for_ip(ip, svc.config["portal"]["neighbour_table"])
    if mac is None and svc.is_demo:
        mac = neighbours.stand_in_mac(ip)
    return ip, mac


def device_session():
    """The open session of the requesting device, or None."""
    _ip, mac = device_identity()
    return sessions.active_session(services().engine, mac) if mac else None


def to_portal(original=""):
    """A 302 to the portal's form, `continue` naming where the guest was going (if anywhere)."""
    url = services().config["portal"]["public_url"]
    if original and len(original) <= MAX_CONTINUE:  # a cut address would be a broken link
        url += ("&" if "?" in url else "?") + urlencode({"continue": original})
    response = redirect(url, code=302)
    response.headers["Cache-Control"] = "no-store"
    return response


def requested_url():
    """The address this request was for, as the guest's browser saw it."""
    return f"http://{request.host}{request.full_path.rstrip('?')}"


def is_any_host_path(path):
    """Whether path is answered the same under any Host (see ANY_HOST_PATHS)."""
    return any(path == prefix.rstrip("/") or path.startswith(prefix.rstrip("/") + "/")
               for prefix in ANY_HOST_PATHS)


@bp.before_app_request
def intercept():
    """Send probes and other sites' pages to the portal; answer online devices' probes."""
    if is_any_host_path(request.path):
        return None
    host = host_name(request.host)
    kind = probe_kind(host, request.path, request.headers.get("User-Agent", ""))
    if kind is None:
        # The demo is browsed at whatever address the machine has: only probes are caught there.
        if host == portal_host() or services().is_demo:
            return None
        # Another site's page: the portal (the form, or "you are online") with a link back to it.
        return to_portal(requested_url())
    answer = ONLINE_ANSWERS[kind]
    if answer is not None and device_session() is not None:
        body, status, mimetype = answer
        response = Response(body, status=status, mimetype=mimetype)
        response.headers["Cache-Control"] = "no-store"
        return response
    # A probe's own address is no page to go back to.
    return to_portal()


def continue_url(value):
    """value when it may be offered to the guest as a link back to where they were going, else "".

    Only plain http(s) addresses of other sites, never a probe's: the link is shown, never followed
    automatically, so the portal cannot be used to bounce a browser elsewhere.
    """
    if not value or len(value) > MAX_CONTINUE or any(ch.isspace() or ord(ch) < 32 for ch in value):
        return ""
    try:
        parts = urlsplit(value)
        host = (parts.hostname or "").rstrip(".")
    except ValueError:
        return ""
    if parts.scheme not in ("http", "https") or not host or parts.username or parts.password:
        return ""
    if host == portal_host() or probe_kind(host, parts.path or "/") is not None:
        return ""
    return value


@bp.get("/api/captive")
def captive_api():
    """RFC 8908 Captive Portal API for the asking device."""
    public_url = services().config["portal"]["public_url"]
    session = device_session()
    body = {
        "captive": session is None,
        "user-portal-url": public_url,
        "venue-info-url": urljoin(public_url, "venue"),
        "can-extend-session": False,
    }
    if session is not None:
        body["seconds-remaining"] = sessions.seconds_until(session.ends_at)
    response = jsonify(body)
    response.mimetype = "application/captive+json"
    response.headers["Cache-Control"] = "private, no-store"
    return response
