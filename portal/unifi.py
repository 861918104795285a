"""UniFi: the controller lets a guest through (`[gateway] firewall = "unifi"`).

With a UniFi network the access points hold the guests, and the UniFi Network controller decides
who passes. callpass is the WLAN's external portal; after the call it asks the controller to
authorise the guest's MAC for the session's minutes, and to unauthorise it when the session ends:

    POST <url>/api/s/<site>/cmd/stamgr  {"cmd": "authorize-guest", "mac": …, "minutes": N}
    POST <url>/api/s/<site>/cmd/stamgr  {"cmd": "unauthorize-guest", "mac": …}

after logging in (a classic controller: POST /api/login and a session cookie; a UniFi OS console
— UDM, Cloud Key gen2, UX — POST /api/auth/login, paths under /proxy/network and an
X-CSRF-Token header). Success is `meta.rc == "ok"`. Tested against a stand-in built from this
documented protocol (tests/unifi_standin.py), not against a real controller.
"""

import logging
import math
import threading

import requests

from .firewall import Backend, FirewallError

log = logging.getLogger(__name__)

CONNECT_SECONDS, READ_SECONDS = 3, 10


class UniFiBackend(Backend):
    """authorize-guest / unauthorize-guest on a UniFi Network controller."""

    name = "unifi"

    @classmethod
    def from_config(cls, config, engine=None):
        unifi = config["unifi"]
        return cls(unifi["url"], unifi["username"], unifi["password"], unifi["site"],
                   verify=unifi["ca_file"] or unifi["verify_tls"])

    def __init__(self, url, username, password, site="default", verify=True, session=None):
        self.url = url.rstrip("/")
        self.username, self.password, self.site = username, password, site
        self.http = session if session is not None else requests.Session()
        self.http.verify = verify
        self.prefix = None  # "" (classic) or "/proxy/network" (UniFi OS), known after login
        self._lock = threading.Lock()

    def apply(self, changes):
        with self._lock:
            for change in changes:
                if change[0] == "allow":
                    # The controller counts minutes; round up so no guest is cut off early. A
                    # session without an end gets the controller's longest, a year.
                    seconds = change[2]
                    minutes = math.ceil(seconds / 60) if seconds else 525_600
                    self._command({"cmd": "authorize-guest", "mac": change[1], "minutes": minutes})
                else:
                    self._command({"cmd": "unauthorize-guest", "mac": change[1]})

    def is_healthy(self):
        try:
            with self._lock:
                self._login()
            return True
        except FirewallError:
            return False

    def _command(self, body):
        """One stamgr command; logs in first, and once more when the controller forgot us."""
        if self.prefix is None:
            self._login()
        answer = self._post(f"{self.prefix}/api/s/{self.site}/cmd/stamgr", body)
        if answer.status_code == 401:
            self._login()
            answer = self._post(f"{self.prefix}/api/s/{self.site}/cmd/stamgr", body)
        self._check(answer, body["cmd"])

    def _login(self):
        """Log in: UniFi OS first, the classic controller when the console path does not exist."""
        credentials = {"username": self.username, "password": self.password}
        answer = self._post("/api/auth/login", credentials)
        if answer.status_code == 200:
            self.prefix = "/proxy/network"
            token = answer.headers.get("X-CSRF-Token") or answer.headers.get("X-Updated-Csrf-Token")
            if token:
                self.http.headers["X-CSRF-Token"] = token
            return
        if answer.status_code in (401, 403):
            raise FirewallError(f"UniFi controller refused the login ({answer.status_code}): "
                                "check unifi.username and unifi.password")
        answer = self._post("/api/login", credentials)  # not a console: a classic controller
        self._check(answer, "login")
        self.prefix = ""

    def _post(self, path, body):
        try:
            answer = self.http.post(self.url + path, json=body,
                                    timeout=(CONNECT_SECONDS, READ_SECONDS))
        except requests.RequestException as exc:
            raise FirewallError(f"UniFi controller at {self.url} not reachable: "
                                f"{type(exc).__name__}") from None
        # A newer UniFi OS sends a fresh CSRF token with some answers; keep using the newest.
        if answer.headers.get("X-Updated-Csrf-Token"):
            self.http.headers["X-CSRF-Token"] = answer.headers["X-Updated-Csrf-Token"]
        return answer

    @staticmethod
    def _check(answer, what):
        try:
            meta = answer.json().get("meta", {})
        except ValueError:
            meta = {}
        if answer.status_code != 200 or meta.get("rc") != "ok":
            message = meta.get("msg") or f"HTTP {answer.status_code}"
            raise FirewallError(f"UniFi controller: {what} failed: {message}")
