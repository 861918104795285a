"""SMSC simulator: a real HTTP server that behaves like SMSC for the calls callpass makes.

It answers wait_call.php and balance.php with SMSC's error rules (codes 1, 2, 4, 9), lets a person
or a test "place the call" (POST /sim/call), which sends the provider's notification to the
configured handler URL, and has fault knobs (latency, forced error, HTTP 500, garbage, dropped
connection) for testing a client against a misbehaving provider.

Success shapes for fmt 0, 1 and 2 are not documented by SMSC; the ones here are guesses
(fmt 0 "PHONE = 7…", fmt 1 "7…", fmt 2 "<result><phone>7…</phone></result>"). callpass itself
only uses fmt 3, whose shape integrations agree on. Error shapes follow SMSC's documentation.
"""

import hashlib
import hmac
import logging
import socket
import threading
import time
import zlib
from dataclasses import dataclass
from xml.sax.saxutils import escape as xml_escape

import requests
from flask import Flask, Response, jsonify, redirect, render_template_string, request, url_for
from werkzeug.serving import make_server

from .phone import digits_of

log = logging.getLogger(__name__)

# Made-up Moscow numbers handed out as "the number to call". The 000 exchange is not given to
# subscribers, so a demo visitor who really dials one reaches nobody.
CALL_NUMBERS = (
    "74950000101",
    "74950000202",
    "74950000303",
    "74990000404",
    "74990000505",
    "74990000606",
)

BALANCE = "250.80"
CURRENCY = "RUB"  # balance.php names it when asked with cur=1

ERROR_TEXTS = {
    1: "parameters error",
    2: "authorise error",
    4: "IP blocked",
    9: "duplicate request, wait a minute",
}

AUTH_FAILURE_LIMIT = 5
AUTH_WINDOW_SECONDS = 30 * 60
BLOCK_SECONDS = 30 * 60
IDENTICAL_LIMIT = 50
BALANCE_LIMIT = 10
RATE_WINDOW_SECONDS = 60
NOTIFY_TIMEOUT_SECONDS = 10
SIGNATURES = ("none", "md5", "sha1")

DEFAULT_KNOBS = {
    "latency": 0.0,
    "error_code": None,
    "http_500": False,
    "garbage": False,
    "drop": False,
}


def number_to_call(phone: str) -> str:
    """The number a guest is told to call: fixed per guest phone, so repeats agree."""
    return CALL_NUMBERS[zlib.crc32(phone.encode()) % len(CALL_NUMBERS)]


def is_valid_phone(text: str) -> bool:
    """True when text looks like a full international number (10 to 15 digits)."""
    if not text:
        return False
    allowed = set("0123456789+-() ")
    if any(ch not in allowed for ch in text):
        return False
    return 10 <= len(digits_of(text)) <= 15


def is_same_text(given: str, expected: str) -> bool:
    """Constant-time comparison that also accepts non-ASCII text."""
    return hmac.compare_digest(given.encode(), expected.encode())


def sign(phone: str, ts: int, secret: str, signature: str) -> str:
    """The checksum SMSC adds to a notification: hex digest of "<phone>:<ts>:<secret>"."""
    text = f"{phone}:{ts}:{secret}".encode()
    if signature == "sha1":
        return hashlib.sha1(text).hexdigest()
    return hashlib.md5(text).hexdigest()


@dataclass
class WaitingCall:
    """A guest phone that asked wait_call and has not called yet."""

    phone: str
    call_number: str
    created: float


class SimulatorState:
    """Everything the simulator remembers, behind one lock: knobs, waits, counters, blocks.

    callback_url, secret and signature may be reassigned while serving (a test points the
    simulator at a portal it started after the simulator).
    """

    def __init__(self, callback_url="", secret="", signature="md5", clock=time.monotonic):
        if signature not in SIGNATURES:
            raise ValueError(f"signature must be one of {', '.join(SIGNATURES)}, not {signature!r}")
        self.callback_url = callback_url
        self.secret = secret
        self.signature = signature
        self.clock = clock
        self.lock = threading.Lock()
        self.waiting = {}
        self.reset()

    def reset(self):
        """Back to no knobs, no counters and no blocked addresses; waiting calls stay."""
        with self.lock:
            self.knobs = dict(DEFAULT_KNOBS)
            self.requests = 0
            self.auth_failures = {}
            self.blocked_until = {}
            self.recent = {}

    def set_knobs(self, **knobs):
        """Change some knobs; unknown names or wrong types raise ValueError."""
        checked = {}
        for name, value in knobs.items():
            if name not in DEFAULT_KNOBS:
                raise ValueError(f"unknown knob {name!r}")
            if name == "latency":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ValueError("latency must be a non-negative number of seconds")
                value = float(value)
            elif name == "error_code":
                if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                    raise ValueError("error_code must be a whole number or null")
            elif not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false")
            checked[name] = value
        with self.lock:
            self.knobs.update(checked)
            return dict(self.knobs)

    def snapshot_knobs(self):
        """A copy of the current knobs."""
        with self.lock:
            return dict(self.knobs)

    def count_request(self):
        """Count one /sys/ request and return the knobs that apply to it."""
        with self.lock:
            self.requests += 1
            return dict(self.knobs)

    def notification_settings(self):
        """(callback_url, secret, signature) as they are now."""
        with self.lock:
            return self.callback_url, self.secret, self.signature

    def request_count(self):
        """How many /sys/ requests arrived since the last reset."""
        with self.lock:
            return self.requests

    def is_blocked(self, ip):
        """True while ip is blocked for too many wrong logins."""
        with self.lock:
            until = self.blocked_until.get(ip)
            if until is None:
                return False
            if self.clock() >= until:
                del self.blocked_until[ip]
                return False
            return True

    def record_auth_failure(self, ip):
        """Remember a wrong login from ip; the fifth within 30 minutes blocks it for 30 minutes."""
        with self.lock:
            now = self.clock()
            failures = [t for t in self.auth_failures.get(ip, []) if now - t < AUTH_WINDOW_SECONDS]
            failures.append(now)
            if len(failures) >= AUTH_FAILURE_LIMIT:
                self.blocked_until[ip] = now + BLOCK_SECONDS
                failures = []
            self.auth_failures[ip] = failures

    def is_over_limit(self, key, limit):
        """Count a request under key; True when more than limit of them came within a minute."""
        with self.lock:
            now = self.clock()
            times = [t for t in self.recent.get(key, []) if now - t < RATE_WINDOW_SECONDS]
            times.append(now)
            self.recent[key] = times
            return len(times) > limit

    def add_waiting(self, phone):
        """Register phone as waiting for its call; returns the number it must call."""
        call = WaitingCall(phone=phone, call_number=number_to_call(phone), created=self.clock())
        with self.lock:
            self.waiting[phone] = call
        return call.call_number

    def find_waiting(self, phone):
        """The waiting call for phone (digits), or None."""
        with self.lock:
            return self.waiting.get(phone)

    def remove_waiting(self, phone):
        """Forget the waiting call for phone (digits), if any."""
        with self.lock:
            self.waiting.pop(phone, None)

    def clear_waiting(self):
        """Forget every waiting call."""
        with self.lock:
            self.waiting.clear()

    def waiting_calls(self):
        """The waiting calls, oldest first, as plain dicts."""
        with self.lock:
            now = self.clock()
            calls = sorted(self.waiting.values(), key=lambda call: call.created)
            return [
                {
                    "phone": call.phone,
                    "call_number": call.call_number,
                    "age_seconds": round(now - call.created, 1),
                }
                for call in calls
            ]


def format_error(fmt, code):
    """An error answer in the shape SMSC documents for fmt."""
    text = ERROR_TEXTS.get(code, "error")
    if fmt == 1:
        return Response(f"0,-{code}", mimetype="text/plain")
    if fmt == 2:
        body = f"<result><error>{xml_escape(text)}</error><error_code>{code}</error_code></result>"
        return Response(body, mimetype="text/xml")
    if fmt == 3:
        return jsonify(error=text, error_code=code)
    return Response(f"ERROR = {code} ({text})", mimetype="text/plain")


def format_result(fmt, field, value, currency=None):
    """A success answer with one field (and balance.php's currency when asked for with cur=1);
    fmt 0-2 shapes are guesses (see the module docstring)."""
    if fmt == 1:
        return Response(value if currency is None else f"{value},{currency}", mimetype="text/plain")
    if fmt == 2:
        extra = "" if currency is None else f"<currency>{currency}</currency>"
        return Response(f"<result><{field}>{value}</{field}>{extra}</result>", mimetype="text/xml")
    if fmt == 3:
        return jsonify({field: value} if currency is None else {field: value, "currency": currency})
    if field == "balance":
        # SMSC documents the bare amount for balance in fmt 0.
        return Response(value, mimetype="text/plain")
    return Response(f"{field.upper()} = {value}", mimetype="text/plain")


def drop_connection():
    """Close the client's connection without any HTTP answer (needs Werkzeug's server)."""
    sock = request.environ.get("werkzeug.socket")
    if sock is None:
        raise RuntimeError("the drop knob needs the simulator's own server (werkzeug.socket)")
    sock.shutdown(socket.SHUT_RDWR)
    # The server's attempt to write this response then fails with a broken pipe, which Werkzeug
    # treats as a client that went away: nothing is sent. 444 only shows in the request log.
    return Response("", status=444)


SIM_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="5">
<title>SMSC simulator</title>
<style>
body { font-family: sans-serif; margin: 2em; }
table { border-collapse: collapse; }
td, th { border: 1px solid #999; padding: .4em .8em; text-align: left; }
.message { background: #eef; padding: .5em; }
</style>
</head>
<body>
<h1>SMSC simulator</h1>
{% if message %}<p class="message">{{ message }}</p>{% endif %}
<p>Guests waiting for their call. "Call" sends the provider's notification to
<code>{{ callback_url or "(no handler URL configured)" }}</code>.</p>
{% if calls %}
<table>
<tr><th>guest phone</th><th>number to call</th><th>waiting for</th><th></th></tr>
{% for call in calls %}
<tr>
<td>+{{ call.phone }}</td>
<td>+{{ call.call_number }}</td>
<td>{{ call.age_seconds | int }} s</td>
<td>
<form method="post" action="{{ url_for('sim_call') }}">
<input type="hidden" name="phone" value="{{ call.phone }}">
<input type="hidden" name="to" value="{{ call.call_number }}">
<input type="hidden" name="back" value="1">
<button type="submit">call</button>
</form>
</td>
</tr>
{% endfor %}
</table>
{% else %}
<p>Nobody is waiting.</p>
{% endif %}
</body>
</html>
"""


def create_simulator_app(
    callback_url: str,
    secret: str = "",
    signature: str = "md5",
    login: str = "",
    password: str = "",
    apikey: str = "",
) -> Flask:
    """A Flask app that behaves like SMSC; with no credentials configured it accepts any."""
    app = Flask(__name__)
    state = SimulatorState(callback_url=callback_url, secret=secret, signature=signature)
    app.extensions["smsc_simulator"] = state
    is_demo = not (login or password or apikey)
    # One keep-alive session for every notification, as a provider keeps its connections open.
    handler = requests.Session()

    def is_authorised(values):
        """True when the request carries the configured login+password or API key."""
        if is_demo:
            return True
        if apikey and is_same_text(values.get("apikey", ""), apikey):
            return True
        if login or password:
            return is_same_text(values.get("login", ""), login) and is_same_text(values.get("psw", ""), password)
        return False

    def provider_endpoint(handle):
        """Wrap a /sys/ view with knobs, format parsing and the login and blocking rules."""

        def view():
            # Read the body now, so that a dropped connection leaves nothing unread behind it.
            values = request.values
            knobs = state.count_request()
            if knobs["latency"]:
                time.sleep(knobs["latency"])
            if knobs["drop"]:
                return drop_connection()
            if knobs["http_500"]:
                return Response("Internal Server Error", status=500, mimetype="text/plain")
            if knobs["garbage"]:
                return Response("<html>\x00\x7f not an answer", mimetype="text/html")
            try:
                fmt = int(values.get("fmt", "0"))
            except ValueError:
                fmt = -1
            if fmt not in (0, 1, 2, 3):
                return format_error(0, 1)
            if knobs["error_code"] is not None:
                return format_error(fmt, knobs["error_code"])
            ip = request.remote_addr
            if state.is_blocked(ip):
                return format_error(fmt, 4)
            if not is_authorised(values):
                state.record_auth_failure(ip)
                return format_error(fmt, 2)
            return handle(fmt, values)

        view.__name__ = handle.__name__
        return view

    def wait_call(fmt, values):
        """Register the guest phone and answer the number it must call."""
        raw_phone = values.get("phone", "")
        if not is_valid_phone(raw_phone):
            return format_error(fmt, 1)
        phone = digits_of(raw_phone)
        if state.is_over_limit(("wait_call", phone), IDENTICAL_LIMIT):
            return format_error(fmt, 9)
        return format_result(fmt, "phone", state.add_waiting(phone))

    def balance(fmt, values):
        """Answer the (fixed) account balance."""
        if state.is_over_limit(("balance",), BALANCE_LIMIT):
            return format_error(fmt, 9)
        currency = CURRENCY if values.get("cur") == "1" else None
        return format_result(fmt, "balance", BALANCE, currency)

    app.add_url_rule("/sys/wait_call.php", view_func=provider_endpoint(wait_call), methods=["GET", "POST"])
    app.add_url_rule("/sys/balance.php", view_func=provider_endpoint(balance), methods=["GET", "POST"])

    def notify(phone):
        """POST the call-confirmation event to the handler; returns (JSON body, HTTP status)."""
        callback_url, secret, signature = state.notification_settings()
        if not callback_url:
            return {"status": None, "error": "no handler URL is configured"}, 502
        ts = int(time.time())
        form = {"waitcall": "1", "phone": phone, "ts": str(ts)}
        if secret and signature != "none":
            form[signature] = sign(phone, ts, secret, signature)
        try:
            with handler.post(callback_url, data=form, timeout=NOTIFY_TIMEOUT_SECONDS) as answer:
                body = answer.text[:200]
                status = answer.status_code
        except requests.RequestException as exc:
            return {"status": None, "error": f"handler unreachable: {type(exc).__name__}: {exc}"}, 502
        if 200 <= status < 300:
            state.remove_waiting(phone)
        return {"status": status, "body": body}, 200

    @app.post("/sim/call")
    def sim_call():
        """The guest placed the call: notify the handler if the phone is waiting."""
        phone = digits_of(request.form.get("phone", ""))
        to = digits_of(request.form.get("to", ""))
        waiting = state.find_waiting(phone) if phone else None
        if waiting is None or (to and to != waiting.call_number):
            result = {"status": None, "error": "no waiting wait_call for that phone (and number)"}
            http_status = 404
        else:
            result, http_status = notify(phone)
        if request.form.get("back"):
            if result["status"] is None:
                message = f"+{phone}: {result['error']}"
            else:
                message = f"+{phone}: the handler answered HTTP {result['status']}"
            return redirect(url_for("sim_page", message=message), code=303)
        return jsonify(result), http_status

    @app.get("/sim/")
    def sim_page():
        """A page listing waiting guests with a call button each."""
        return render_template_string(
            SIM_PAGE,
            calls=state.waiting_calls(),
            callback_url=state.notification_settings()[0],
            message=request.args.get("message", ""),
        )

    @app.get("/sim/state")
    def sim_state():
        """Waiting numbers, knobs and the /sys/ request count, as JSON."""
        return jsonify(
            waiting=state.waiting_calls(),
            knobs=state.snapshot_knobs(),
            requests=state.request_count(),
        )

    @app.get("/sim/knobs")
    def get_knobs():
        """The current knobs."""
        return jsonify(state.snapshot_knobs())

    @app.post("/sim/knobs")
    def set_knobs():
        """Change knobs from a JSON object, e.g. {"latency": 2, "http_500": true}."""
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            return jsonify(error="send a JSON object of knobs"), 400
        try:
            knobs = state.set_knobs(**data)
        except ValueError as exc:
            return jsonify(error=str(exc)), 400
        return jsonify(knobs)

    @app.delete("/sim/knobs")
    def reset_knobs():
        """Reset knobs, rate counters and blocked addresses."""
        state.reset()
        return jsonify(state.snapshot_knobs())

    return app


class SimulatorServer:
    """The simulator served from a daemon thread; for tests and the demo."""

    def __init__(self, host="127.0.0.1", port=0, **app_kwargs):
        app_kwargs.setdefault("callback_url", "")
        self.app = create_simulator_app(**app_kwargs)
        self.state = self.app.extensions["smsc_simulator"]
        self.host = host
        self.port = port
        self.url = None
        self.server = None
        self.thread = None

    @property
    def callback_url(self):
        """The handler URL notifications go to; assignable while serving."""
        return self.state.callback_url

    @callback_url.setter
    def callback_url(self, url):
        with self.state.lock:
            self.state.callback_url = url

    def start(self) -> "SimulatorServer":
        """Bind the port and serve in a background thread."""
        self.server = make_server(self.host, self.port, self.app, threaded=True)
        bound_port = self.server.socket.getsockname()[1]
        url_host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{url_host}:{bound_port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever,
            # A short poll keeps stop() quick; tests start and stop many simulators.
            kwargs={"poll_interval": 0.05},
            name="smsc-simulator",
            daemon=True,
        )
        self.thread.start()
        return self

    def stop(self):
        """Stop serving and release the port."""
        if self.server is None:
            return
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
        self.server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


def serve(host, port, **app_kwargs):
    """Serve the simulator until interrupted (the `callpass simulator` command)."""
    with SimulatorServer(host, port, **app_kwargs) as server:
        log.info("SMSC simulator listening on %s", server.url)
        try:
            while server.thread.is_alive():
                server.thread.join(1.0)
        except KeyboardInterrupt:
            pass
