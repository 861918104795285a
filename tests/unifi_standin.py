"""A stand-in UniFi Network controller, built from the documented protocol (no controller or
emulator can be installed here): login, then stamgr's authorize-guest / unauthorize-guest.

mode "classic": POST /api/login sets a `unifises` cookie; paths under /api/s/<site>/.
mode "os" (UniFi OS consoles): POST /api/auth/login sets a `TOKEN` cookie and answers an
X-CSRF-Token header that every later POST must carry; paths under /proxy/network; /api/login
does not exist (404).
"""

import secrets
import threading

from flask import Flask, jsonify, request
from werkzeug.serving import make_server


def ok(data=None):
    return jsonify(meta={"rc": "ok"}, data=data or [])


def error(status, message):
    return jsonify(meta={"rc": "error", "msg": message}, data=[]), status


class StandInController:
    def __init__(self, mode="classic", username="callpass", password="unifi-password",
                 site="default"):
        self.mode, self.username, self.password, self.site = mode, username, password, site
        self.sessions = {}     # cookie value -> csrf token ("" for classic)
        self.commands = []     # every stamgr command accepted
        self.logins = 0
        self.app = self._build()

    def forget_logins(self):
        """As after a controller restart: every session cookie is stale."""
        self.sessions.clear()

    def _build(self):
        app = Flask("unifi-standin")
        cookie = "TOKEN" if self.mode == "os" else "unifises"
        prefix = "/proxy/network" if self.mode == "os" else ""

        def login():
            body = request.get_json(silent=True) or {}
            if (body.get("username"), body.get("password")) != (self.username, self.password):
                return error(401 if self.mode == "os" else 400, "api.err.Invalid")
            self.logins += 1
            value, csrf = secrets.token_hex(16), secrets.token_hex(8) if self.mode == "os" else ""
            self.sessions[value] = csrf
            answer = jsonify(unique_id="admin") if self.mode == "os" else ok()
            answer.set_cookie(cookie, value)
            if csrf:
                answer.headers["X-CSRF-Token"] = csrf
            return answer

        app.add_url_rule("/api/auth/login" if self.mode == "os" else "/api/login",
                         view_func=login, methods=["POST"])

        @app.post(prefix + "/api/s/<site>/cmd/stamgr")
        def stamgr(site):
            value = request.cookies.get(cookie)
            if value not in self.sessions:
                return error(401, "api.err.LoginRequired")
            if self.mode == "os" and request.headers.get("X-CSRF-Token") != self.sessions[value]:
                return error(403, "api.err.InvalidCSRF")
            if site != self.site:
                return error(400, "api.err.NoSiteContext")
            body = request.get_json(silent=True) or {}
            if body.get("cmd") not in ("authorize-guest", "unauthorize-guest") or \
                    not body.get("mac"):
                return error(400, "api.err.InvalidPayload")
            self.commands.append(body)
            return ok([{"mac": body["mac"]}])

        return app

    def start(self):
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.socket.getsockname()[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
