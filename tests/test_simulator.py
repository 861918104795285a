"""The SMSC simulator over real HTTP: answer shapes, SMSC's error rules, the call notification."""

import hashlib
import socket
import threading
import time

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from portal.simulator import CALL_NUMBERS, SimulatorServer

GUEST = "+79161234567"
GUEST_DIGITS = "79161234567"


class Receiver:
    """A tiny handler URL that records every form it is sent and answers a set status."""

    def __init__(self):
        self.forms = []
        self.status = 200
        self.server = make_server("127.0.0.1", 0, self.wsgi, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.socket.getsockname()[1]}/callback"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def wsgi(self, environ, start_response):
        request = Request(environ)
        self.forms.append({"method": request.method, **request.form.to_dict()})
        return Response("OK", status=self.status)(environ, start_response)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver():
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def http():
    with requests.Session() as session:
        yield session


def start_simulator(**kwargs):
    kwargs.setdefault("callback_url", "")
    return SimulatorServer(**kwargs).start()


@pytest.fixture
def smsc(receiver):
    """A simulator with a login, a password and an md5 secret, notifying the receiver."""
    server = start_simulator(callback_url=receiver.url, secret="s3cret", login="venue", password="pw-right")
    yield server
    server.stop()


def wait_call(http, smsc, fmt, phone=GUEST, login="venue", psw="pw-right", method="post"):
    params = {"login": login, "psw": psw, "phone": phone, "fmt": str(fmt), "charset": "utf-8"}
    if method == "get":
        return http.get(smsc.url + "/sys/wait_call.php", params=params)
    return http.post(smsc.url + "/sys/wait_call.php", data=params)


def balance(http, smsc, fmt, login="venue", psw="pw-right"):
    return http.post(smsc.url + "/sys/balance.php", data={"login": login, "psw": psw, "fmt": str(fmt)})


def test_wait_call_json_gives_a_number_from_the_pool_and_registers_the_guest(http, smsc):
    answer = wait_call(http, smsc, 3).json()
    assert answer["phone"] in CALL_NUMBERS
    waiting = http.get(smsc.url + "/sim/state").json()["waiting"]
    assert [(w["phone"], w["call_number"]) for w in waiting] == [(GUEST_DIGITS, answer["phone"])]


def test_the_same_phone_asking_again_gets_the_same_number(http, smsc):
    first = wait_call(http, smsc, 3).json()["phone"]
    second = wait_call(http, smsc, 3, phone="7 (916) 123-45-67", method="get").json()["phone"]
    assert first == second
    assert len(smsc.state.waiting_calls()) == 1


@pytest.mark.parametrize(
    "fmt, expected",
    [
        (0, "PHONE = {n}"),
        (1, "{n}"),
        (2, "<result><phone>{n}</phone></result>"),
    ],
)
def test_wait_call_success_shape_per_fmt(http, smsc, fmt, expected):
    number = wait_call(http, smsc, 3).json()["phone"]
    assert wait_call(http, smsc, fmt).text == expected.format(n=number)


@pytest.mark.parametrize(
    "fmt, expected",
    [
        (0, "ERROR = 1 (parameters error)"),
        (1, "0,-1"),
        (2, "<result><error>parameters error</error><error_code>1</error_code></result>"),
    ],
)
def test_error_shape_per_fmt(http, smsc, fmt, expected):
    answer = wait_call(http, smsc, fmt, phone="")
    assert answer.status_code == 200
    assert answer.text == expected


def test_error_shape_json(http, smsc):
    assert wait_call(http, smsc, 3, phone="not a phone").json() == {"error": "parameters error", "error_code": 1}
    assert wait_call(http, smsc, 3, phone="+123").json()["error_code"] == 1
    assert smsc.state.waiting_calls() == []


def test_no_fmt_means_text(http, smsc):
    answer = http.post(smsc.url + "/sys/wait_call.php", data={"login": "venue", "psw": "pw-right"})
    assert answer.text == "ERROR = 1 (parameters error)"


def test_wrong_password_is_error_2(http, smsc):
    assert wait_call(http, smsc, 3, psw="pw-wrong").json()["error_code"] == 2
    assert wait_call(http, smsc, 1, login="", psw="").text == "0,-2"


def test_apikey_is_accepted_instead_of_login(http):
    server = start_simulator(apikey="key-1")
    try:
        url = server.url + "/sys/wait_call.php"
        good = http.post(url, data={"apikey": "key-1", "phone": GUEST, "fmt": "3"}).json()
        bad = http.post(url, data={"apikey": "key-2", "phone": GUEST, "fmt": "3"}).json()
    finally:
        server.stop()
    assert good["phone"] in CALL_NUMBERS
    assert bad["error_code"] == 2


def test_without_configured_credentials_anything_is_accepted(http):
    server = start_simulator()
    try:
        answer = http.post(server.url + "/sys/wait_call.php", data={"phone": GUEST, "fmt": "3"}).json()
    finally:
        server.stop()
    assert answer["phone"] in CALL_NUMBERS


def test_five_wrong_logins_block_the_address_even_for_the_right_login(http, smsc):
    now = [1000.0]
    smsc.state.clock = lambda: now[0]
    codes = [wait_call(http, smsc, 3, psw="pw-wrong").json()["error_code"] for _ in range(5)]
    assert codes == [2, 2, 2, 2, 2]
    assert wait_call(http, smsc, 3).json()["error_code"] == 4
    assert balance(http, smsc, 3).json()["error_code"] == 4
    assert balance(http, smsc, 1).text == "0,-4"

    now[0] += 30 * 60
    assert "phone" in wait_call(http, smsc, 3).json()


def test_wrong_logins_spread_over_more_than_30_minutes_do_not_block(http, smsc):
    now = [1000.0]
    smsc.state.clock = lambda: now[0]
    for _ in range(4):
        wait_call(http, smsc, 3, psw="pw-wrong")
    now[0] += 31 * 60
    assert wait_call(http, smsc, 3, psw="pw-wrong").json()["error_code"] == 2
    assert "phone" in wait_call(http, smsc, 3).json()


def test_the_51st_identical_request_within_a_minute_is_error_9(http, smsc):
    now = [1000.0]
    smsc.state.clock = lambda: now[0]
    for _ in range(50):
        assert "phone" in wait_call(http, smsc, 3).json()
    assert wait_call(http, smsc, 3).json() == {"error": "duplicate request, wait a minute", "error_code": 9}
    assert "phone" in wait_call(http, smsc, 3, phone="+79160000000").json()

    now[0] += 61
    assert "phone" in wait_call(http, smsc, 3).json()


@pytest.mark.parametrize(
    "fmt, expected",
    [(0, "250.80"), (1, "250.80"), (2, "<result><balance>250.80</balance></result>")],
)
def test_balance_shape_per_fmt(http, smsc, fmt, expected):
    assert balance(http, smsc, fmt).text == expected


def test_balance_json_and_error_9_past_ten_a_minute(http, smsc):
    answers = [balance(http, smsc, 3).json() for _ in range(11)]
    assert answers[:10] == [{"balance": "250.80"}] * 10
    assert answers[10]["error_code"] == 9
    assert balance(http, smsc, 0).text == "ERROR = 9 (duplicate request, wait a minute)"


def test_error_code_knob_answers_that_error_until_reset(http, smsc):
    assert http.post(smsc.url + "/sim/knobs", json={"error_code": 4}).json()["error_code"] == 4
    assert wait_call(http, smsc, 2).text == (
        "<result><error>IP blocked</error><error_code>4</error_code></result>"
    )
    assert balance(http, smsc, 3).json()["error_code"] == 4

    http.delete(smsc.url + "/sim/knobs")
    assert "phone" in wait_call(http, smsc, 3).json()


def test_http_500_and_garbage_knobs(http, smsc):
    http.post(smsc.url + "/sim/knobs", json={"http_500": True})
    assert wait_call(http, smsc, 3).status_code == 500

    http.post(smsc.url + "/sim/knobs", json={"http_500": False, "garbage": True})
    answer = wait_call(http, smsc, 3)
    assert answer.status_code == 200
    with pytest.raises(ValueError):
        answer.json()


def test_drop_knob_closes_the_connection_without_an_answer(http, smsc):
    http.post(smsc.url + "/sim/knobs", json={"drop": True})
    with pytest.raises(requests.ConnectionError):
        wait_call(http, smsc, 3)
    with pytest.raises(requests.ConnectionError):
        wait_call(http, smsc, 3, method="get")


def test_latency_knob_delays_the_answer(http, smsc):
    http.post(smsc.url + "/sim/knobs", json={"latency": 0.3})
    started = time.monotonic()
    assert "phone" in wait_call(http, smsc, 3).json()
    assert time.monotonic() - started >= 0.3


def test_bad_knobs_are_refused(http, smsc):
    assert http.post(smsc.url + "/sim/knobs", json={"lag": 1}).status_code == 400
    assert http.post(smsc.url + "/sim/knobs", json={"latency": "slow"}).status_code == 400
    assert http.post(smsc.url + "/sim/knobs", data="latency=1").status_code == 400
    assert http.get(smsc.url + "/sim/knobs").json()["latency"] == 0.0


def test_call_sends_a_signed_notification(http, smsc, receiver):
    number = wait_call(http, smsc, 3).json()["phone"]
    before = int(time.time())
    answer = http.post(smsc.url + "/sim/call", data={"phone": "+7 916 123-45-67", "to": "+" + number})
    assert answer.status_code == 200
    assert answer.json() == {"status": 200, "body": "OK"}

    [form] = receiver.forms
    assert form["method"] == "POST"
    assert form["waitcall"] == "1"
    assert form["phone"] == GUEST_DIGITS
    assert before <= int(form["ts"]) <= time.time()
    assert form["md5"] == hashlib.md5(f"{GUEST_DIGITS}:{form['ts']}:s3cret".encode()).hexdigest()
    assert "sha1" not in form
    assert smsc.state.waiting_calls() == []


def call_once(http, receiver, **simulator):
    """One wait_call and its call on a simulator of its own; the notification's form."""
    server = start_simulator(callback_url=receiver.url, **simulator)
    try:
        http.post(server.url + "/sys/wait_call.php", data={"phone": GUEST, "fmt": "3"})
        assert http.post(server.url + "/sim/call", data={"phone": GUEST}).json()["status"] == 200
    finally:
        server.stop()
    [form] = receiver.forms
    return form


def test_call_signs_with_sha1_when_asked(http, receiver):
    form = call_once(http, receiver, secret="s3cret", signature="sha1")
    assert form["sha1"] == hashlib.sha1(f"{GUEST_DIGITS}:{form['ts']}:s3cret".encode()).hexdigest()
    assert "md5" not in form


def test_call_without_a_secret_is_unsigned(http, receiver):
    form = call_once(http, receiver)
    assert set(form) == {"method", "waitcall", "phone", "ts"}


def test_call_from_a_phone_that_is_not_waiting_is_404(http, smsc, receiver):
    answer = http.post(smsc.url + "/sim/call", data={"phone": GUEST})
    assert answer.status_code == 404
    assert answer.json()["status"] is None
    assert receiver.forms == []


def test_call_to_the_wrong_number_is_404_and_keeps_the_wait(http, smsc, receiver):
    wait_call(http, smsc, 3)
    assert http.post(smsc.url + "/sim/call", data={"phone": GUEST, "to": "+70000000000"}).status_code == 404
    assert receiver.forms == []
    assert len(smsc.state.waiting_calls()) == 1


def test_handler_error_status_is_reported_and_the_wait_kept(http, smsc, receiver):
    receiver.status = 403
    wait_call(http, smsc, 3)
    assert http.post(smsc.url + "/sim/call", data={"phone": GUEST}).json() == {"status": 403, "body": "OK"}
    assert len(smsc.state.waiting_calls()) == 1


def closed_port():
    """A local port nothing listens on: bound, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_handler_is_502(http):
    server = start_simulator(callback_url=f"http://127.0.0.1:{closed_port()}/callback")
    try:
        http.post(server.url + "/sys/wait_call.php", data={"phone": GUEST, "fmt": "3"})
        answer = http.post(server.url + "/sim/call", data={"phone": GUEST})
    finally:
        server.stop()
    assert answer.status_code == 502
    assert answer.json()["status"] is None
    assert "unreachable" in answer.json()["error"]


def test_page_lists_waiting_numbers_and_its_button_calls(http, smsc, receiver):
    number = wait_call(http, smsc, 3).json()["phone"]
    page = http.get(smsc.url + "/sim/")
    assert page.status_code == 200
    assert f"+{GUEST_DIGITS}" in page.text
    assert f"+{number}" in page.text
    assert 'action="/sim/call"' in page.text

    answer = http.post(
        smsc.url + "/sim/call",
        data={"phone": GUEST_DIGITS, "to": number, "back": "1"},
        allow_redirects=False,
    )
    assert answer.status_code == 303
    follow = http.get(smsc.url + answer.headers["Location"])
    assert "the handler answered HTTP 200" in follow.text
    assert "Nobody is waiting" in follow.text
    assert len(receiver.forms) == 1


def test_state_lists_waiting_numbers_with_their_age(http, smsc):
    wait_call(http, smsc, 3)
    state = http.get(smsc.url + "/sim/state").json()
    [waiting] = state["waiting"]
    assert waiting["phone"] == GUEST_DIGITS
    assert waiting["age_seconds"] >= 0
    assert state["requests"] == 1


def test_handler_url_can_be_changed_while_serving(http, receiver):
    server = start_simulator(callback_url=f"http://127.0.0.1:{closed_port()}/callback")
    try:
        server.callback_url = receiver.url
        http.post(server.url + "/sys/wait_call.php", data={"phone": GUEST, "fmt": "3"})
        answer = http.post(server.url + "/sim/call", data={"phone": GUEST})
    finally:
        server.stop()
    assert answer.json()["status"] == 200
    assert [form["phone"] for form in receiver.forms] == [GUEST_DIGITS]


def test_unknown_signature_is_refused():
    with pytest.raises(ValueError):
        SimulatorServer(callback_url="", signature="crc32")


def test_non_ascii_credentials_are_just_wrong(http, smsc):
    assert wait_call(http, smsc, 3, psw="пароль").json()["error_code"] == 2
