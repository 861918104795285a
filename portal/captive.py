"""Captive-portal detection: OS probes and other sites' pages lead an unverified guest to the portal.

The gateway firewall sends a guest's port-80 traffic here, whatever host it was for. A request that
is a known connectivity probe (by path, by probe host, or by the prober's User-Agent), or whose Host
is not the portal's, is answered with a 302 to the portal's form (never an empty 200, never a
hang). A device that is online already gets the answer its OS expects from the probe, so its
sign-in sheet turns to "Done" and closes, in setups where probes still reach the portal.

Also here: the RFC 8908 Captive Portal API (`/api/captive`), which RFC 8910's DHCP option 114
announces, so that phones learn they are captive without any interception.
"""

from html import escape
from urllib.parse import quote, urlencode, urljoin, urlsplit

from flask import Blueprint, g, jsonify, request

from . import neighbours, routers, services, sessions

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
ANY_HOST_PATHS = ("/callback/", "/radius/", "/healthz", "/admin", "/api/captive", "/mikrotik",
                  "/guest/s/", "/opennds/")

MAX_CONTINUE = 500


def host_name(host):
    """The lowercase host name of a Host header value (port and IPv6 brackets removed)."""
    try:
        return (urlsplit("//" + (host or "")).hostname or "").rstrip(".")
    except ValueError:
        return ""


def portal_host(svc=None):
    """The host name guests are sent to (from portal.public_url)."""
    svc = svc or services()
    return host_name(urlsplit(svc.config["portal"]["public_url"]).netloc)


def probe_kind(host, path, user_agent="", portal=None):
    """Which OS probe a request to host+path from user_agent is ("apple", "android", …), or None.

    The User-Agent only counts for other hosts: the sign-in sheet's own browser may carry the
    prober's name while it loads the portal's pages.
    """
    if path in PROBE_PATHS:
        return PROBE_PATHS[path]
    if host == (portal if portal is not None else portal_host()):
        return None
    if host in PROBE_HOSTS:
        return PROBE_HOSTS[host]
    for marker, kind in PROBE_AGENTS:
        if marker in user_agent:
            return kind
    return None


def identify(svc, ip):
    """(ip, mac) of the device at ip, from the neighbour table (never from anything the guest
    sends). mac is None off the LAN; demo mode gives the loopback browser a stand-in."""
    mac = neighbours.mac_for_ip(ip, svc.config["gateway"]["lan"],
                                svc.config["portal"]["neighbour_table"])
    if mac is None and svc.is_demo:
        mac = neighbours.stand_in_mac(ip)
    return ip, mac


def device_identity():
    """(ip, mac) of the requesting device, looked up once per request: what its router said
    where the router keeps the guests (routers.identity), else the socket's address and the
    neighbour table."""
    if "callpass_device" not in g:
        g.callpass_device = routers.identity() or identify(services(), request.remote_addr or "")
    return g.callpass_device


def online_session():
    """The requesting device's session that the firewall already lets through, or None."""
    _ip, mac = device_identity()
    session = sessions.active_session(services().engine, mac) if mac else None
    return session if sessions.is_online(session) else None


def is_any_host_path(path):
    """Whether path is answered the same under any Host (see ANY_HOST_PATHS)."""
    return any(path == prefix.rstrip("/") or path.startswith(prefix.rstrip("/") + "/")
               for prefix in ANY_HOST_PATHS)


class CaptiveGate:
    """WSGI middleware in front of Flask: sends probes and other sites' pages to the portal, and
    answers online devices' probes.

    Every device on the LAN sends probes, often and all at once when it joins, so they are
    answered here, before Flask builds a request (`make bench` compares the rate with a minimal
    Flask app). Everything else — the portal's own pages — goes on to Flask.
    """

    def __init__(self, flask_app):
        self.svc = flask_app.extensions["callpass"]
        self.flask_wsgi = flask_app.wsgi_app
        self.portal = portal_host(self.svc)
        self.neighbours = neighbours.RecentNeighbours(self.svc.config["portal"]["neighbour_table"],
                                                      self.svc.config["gateway"]["lan"])

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO") or "/"
        if is_any_host_path(path):
            return self.flask_wsgi(environ, start_response)
        raw_host = environ.get("HTTP_HOST", "")
        host = host_name(raw_host)
        kind = probe_kind(host, path, environ.get("HTTP_USER_AGENT", ""), self.portal)
        if kind is None:
            # The demo is browsed at whatever address the machine has: only probes are caught there.
            if host == self.portal or self.svc.is_demo:
                return self.flask_wsgi(environ, start_response)
            # Another site's page: the portal (the form, or "you are online") with a link back.
            return self.to_portal(start_response, requested_url(raw_host, path, environ))
        answer = ONLINE_ANSWERS[kind]
        if answer is not None and self.is_online(environ.get("REMOTE_ADDR") or ""):
            body, status, mimetype = answer
            return respond(start_response, status, body, mimetype)
        # A probe's own address is no page to go back to.
        return self.to_portal(start_response)

    def is_online(self, ip):
        """Whether the device at ip is online (answers up to a second old: probes come in
        bursts)."""
        mac = self.neighbours.mac_for_ip(ip)
        if mac is None and self.svc.is_demo:
            mac = neighbours.stand_in_mac(ip)
        return mac is not None and self.svc.online.online_session(mac) is not None

    def to_portal(self, start_response, original=""):
        """A 302 to the portal's form, `continue` naming where the guest was going (if anywhere)."""
        url = self.svc.config["portal"]["public_url"]
        if original and len(original) <= MAX_CONTINUE:  # a cut address would be a broken link
            url += ("&" if "?" in url else "?") + urlencode({"continue": original})
        body = f'<!doctype html>\n<title>Sign in to the Wi-Fi</title>\n<a href="{escape(url)}">' \
               f"{escape(url)}</a>\n"
        return respond(start_response, 302, body, "text/html", [("Location", url)])


STATUS_LINES = {200: "200 OK", 204: "204 No Content", 302: "302 Found"}


def respond(start_response, status, body, mimetype, extra=()):
    """Send a small, never-cached answer."""
    data = body.encode("utf-8")
    content_type = f"{mimetype}; charset=utf-8" if mimetype.startswith("text/") else mimetype
    start_response(STATUS_LINES[status], [("Content-Type", content_type),
                                          ("Content-Length", str(len(data))),
                                          ("Cache-Control", "no-store"), *extra])
    return [data] if status != 204 else []


def requested_url(raw_host, path, environ):
    """The address this request was for, as the guest's browser saw it."""
    # WSGI gives the path decoded as latin-1; quote it back as the browser sent it.
    quoted = quote(path.encode("latin-1"), safe="/:@!$&'()*+,;=-._~%")
    query = environ.get("QUERY_STRING", "")
    return f"http://{raw_host}{quoted}" + (f"?{query}" if query else "")


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
    session = online_session()
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
