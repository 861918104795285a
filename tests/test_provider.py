"""SmscClient against the real simulator over HTTP, and against hand-made answers."""

import json
import socket
import threading
import time

import pytest
import requests

from portal.provider import (
    ProviderRejected,
    ProviderUnavailable,
    SmscClient,
    describe,
)
from portal.simulator import CALL_NUMBERS, SimulatorServer

GUEST = "+79161234567"
PASSWORD = "pw-Do-Not-Leak-42"
APIKEY = "key-Do-Not-Leak-42"


def closed_port_url():
    """A local URL nothing listens on: the port was bound, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def smsc():
    """The main simulator: login "venue" with PASSWORD, or APIKEY."""
    server = SimulatorServer(callback_url="", login="venue", password=PASSWORD, apikey=APIKEY).start()
    yield server
    server.stop()


@pytest.fixture
def reserve():
    """A second, healthy simulator standing for the reserve host."""
    server = SimulatorServer(callback_url="", login="venue", password=PASSWORD, apikey=APIKEY).start()
    yield server
    server.stop()


@pytest.fixture
def make_client():
    """Build clients with small timeouts and close them after the test."""
    clients = []

    def make(base_url, fallback_urls=(), login="venue", password=PASSWORD, apikey="", timeout_seconds=2):
        client = SmscClient(
            base_url,
            fallback_urls=fallback_urls,
            login=login,
            password=password,
            apikey=apikey,
            timeout_seconds=timeout_seconds,
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def test_wait_call_returns_the_number_in_e164(smsc, make_client):
    number = make_client(smsc.url).wait_call(GUEST)
    assert number.startswith("+7")
    assert number[1:] in CALL_NUMBERS
    assert [w["phone"] for w in smsc.state.waiting_calls()] == ["79161234567"]


def test_balance(smsc, make_client):
    assert make_client(smsc.url + "/").balance() == "250.80"


def test_apikey_wins_over_login_and_password(smsc, make_client):
    client = make_client(smsc.url, login="someone-else", password="wrong", apikey=APIKEY)
    assert client.wait_call(GUEST)[1:] in CALL_NUMBERS


def test_from_config(smsc):
    provider = {
        "base_url": closed_port_url(),
        "fallback_urls": [smsc.url],
        "login": "",
        "password": "",
        "apikey": APIKEY,
        "timeout_seconds": 3,
        "max_concurrent": 8,
    }
    with SmscClient.from_config(provider) as client:
        assert client.timeout == (3, 3)
        assert client.balance() == "250.80"


def test_as_many_calls_at_once_as_the_config_allows_keep_their_connections(smsc, caplog):
    # portal.threads = 64 allows 32 guests' calls in flight at once: each one's connection goes
    # back to the pool for the next call (requests alone keeps 10 and drops the rest, warning).
    provider = {"base_url": smsc.url, "fallback_urls": [], "login": "venue",
                "password": PASSWORD, "apikey": "", "timeout_seconds": 5, "max_concurrent": 32}
    smsc.state.set_knobs(latency=0.3)
    barrier = threading.Barrier(32)
    numbers = []

    def call(i):
        barrier.wait()
        numbers.append(client.wait_call(f"+7916555{i:04d}"))

    with SmscClient.from_config(provider) as client:
        threads = [threading.Thread(target=call, args=(i,)) for i in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert len(numbers) == 32
    assert "pool is full" not in caplog.text


@pytest.mark.parametrize("code", [1, 2, 4, 9, 3])
def test_every_error_code_is_rejected_with_that_code(smsc, make_client, code):
    smsc.state.set_knobs(error_code=code)
    with pytest.raises(ProviderRejected) as caught:
        make_client(smsc.url).wait_call(GUEST)
    assert caught.value.code == code
    assert caught.value.text


def test_an_incomplete_phone_is_error_1(smsc, make_client):
    with pytest.raises(ProviderRejected) as caught:
        make_client(smsc.url).wait_call("+123")
    assert caught.value.code == 1


def test_wrong_password_is_error_2_and_never_retried(smsc, reserve, make_client):
    client = make_client(smsc.url, fallback_urls=[reserve.url], password="pw-wrong")
    with pytest.raises(ProviderRejected) as caught:
        client.wait_call(GUEST)
    assert caught.value.code == 2
    assert "allow-list" in describe(caught.value)
    assert smsc.state.request_count() == 1
    assert reserve.state.request_count() == 0


def test_blocked_address_is_error_4_and_never_retried(smsc, reserve, make_client):
    wrong = make_client(smsc.url, password="pw-wrong")
    for _ in range(5):
        with pytest.raises(ProviderRejected):
            wrong.balance()
    client = make_client(smsc.url, fallback_urls=[reserve.url])
    with pytest.raises(ProviderRejected) as caught:
        client.wait_call(GUEST)
    assert caught.value.code == 4
    assert reserve.state.request_count() == 0


def test_repeated_identical_requests_are_error_9(smsc, make_client):
    client = make_client(smsc.url)
    for _ in range(50):
        client.wait_call(GUEST)
    with pytest.raises(ProviderRejected) as caught:
        client.wait_call(GUEST)
    assert caught.value.code == 9


@pytest.mark.parametrize("knob", ["http_500", "garbage", "drop"])
def test_faults_make_the_provider_unavailable(smsc, make_client, knob):
    smsc.state.set_knobs(**{knob: True})
    with pytest.raises(ProviderUnavailable):
        make_client(smsc.url).wait_call(GUEST)


def test_slow_provider_is_unavailable_after_the_read_timeout(smsc, make_client):
    smsc.state.set_knobs(latency=1.5)
    client = make_client(smsc.url, timeout_seconds=0.3)
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable) as caught:
        client.balance()
    assert time.monotonic() - started < 1.0
    assert "did not answer within 0.3 s" in str(caught.value)


def test_closed_port_falls_back_to_the_reserve_host(reserve, make_client):
    client = make_client(closed_port_url(), fallback_urls=[reserve.url])
    assert client.wait_call(GUEST)[1:] in CALL_NUMBERS


@pytest.mark.parametrize("knob", ["http_500", "garbage", "drop"])
def test_faulty_main_host_falls_back_to_the_reserve_host(smsc, reserve, make_client, knob):
    smsc.state.set_knobs(**{knob: True})
    client = make_client(smsc.url, fallback_urls=[reserve.url])
    assert client.wait_call(GUEST)[1:] in CALL_NUMBERS
    assert smsc.state.request_count() == 1
    assert reserve.state.request_count() == 1


def test_all_hosts_failing_names_the_last_cause(smsc, make_client):
    smsc.state.set_knobs(http_500=True)
    client = make_client(closed_port_url(), fallback_urls=[smsc.url])
    with pytest.raises(ProviderUnavailable) as caught:
        client.wait_call(GUEST)
    assert "HTTP 500" in str(caught.value)
    assert "could not be reached" in describe(caught.value)


def test_secrets_never_appear_in_errors(smsc, make_client):
    failures = []
    for client in (
        make_client(closed_port_url(), password=PASSWORD),
        make_client(closed_port_url(), apikey=APIKEY),
        make_client(smsc.url, password=PASSWORD + "-wrong"),
    ):
        with pytest.raises(Exception) as caught:
            client.wait_call(GUEST)
        failures.append(caught.value)
    smsc.state.set_knobs(latency=1.0)
    with pytest.raises(ProviderUnavailable) as caught:
        make_client(smsc.url, apikey=APIKEY, timeout_seconds=0.2).balance()
    failures.append(caught.value)

    for error in failures:
        for text in (str(error), repr(error), describe(error), repr(error.__cause__), repr(error.__context__)):
            assert PASSWORD not in text
            assert APIKEY not in text


class FakeSession:
    """Answers every POST with one prepared body and records what was sent."""

    def __init__(self, body, status=200):
        self.body = body
        self.status = status
        self.calls = []

    def post(self, url, data=None, timeout=None):
        self.calls.append({"url": url, "data": data, "timeout": timeout})
        response = requests.Response()
        response.status_code = self.status
        response._content = self.body.encode()
        response.url = url
        return response


def fake_client(body, status=200, **kwargs):
    session = FakeSession(body, status)
    return SmscClient("https://smsc.example/", session=session, **kwargs), session


@pytest.mark.parametrize("answered", ["7 (495) 000-01-01", "+74950000101", 74950000101])
def test_numbers_in_any_formatting_are_normalised(answered):
    client, _ = fake_client(json.dumps({"phone": answered}))
    assert client.wait_call(GUEST) == "+74950000101"


def test_request_shape():
    client, session = fake_client('{"phone": "74950000101"}', login="venue", password="pw", timeout_seconds=12)
    client.wait_call("+7 916 123-45-67")
    [call] = session.calls
    assert call["url"] == "https://smsc.example/sys/wait_call.php"
    assert call["timeout"] == (3, 12)  # connecting is quick or not at all
    assert call["data"] == {
        "login": "venue",
        "psw": "pw",
        "phone": "79161234567",
        "fmt": "3",
        "charset": "utf-8",
    }


@pytest.mark.parametrize(
    "body, status",
    [
        ('{"phone": "no digits here"}', 200),
        ('{"phone": "749500001011234567890"}', 200),  # longer than any phone number
        ('{"phone": "1234567"}', 200),
        ('{"phone": "\u0667\u0664\u0669\u0665\u0660\u0660\u0660\u0660\u0661\u0660\u0661"}', 200),
        ('{"id": 5}', 200),
        ("[]", 200),
        ("", 200),
        ('{"error_code": "x"}', 200),
        ("<html>Bad gateway</html>", 502),
        ("Not Found", 404),
    ],
)
def test_malformed_answers_are_unavailable(body, status):
    client, _ = fake_client(body, status)
    with pytest.raises(ProviderUnavailable):
        client.wait_call(GUEST)


def test_balance_without_balance_field_is_unavailable():
    client, _ = fake_client('{"phone": "74950000101"}')
    with pytest.raises(ProviderUnavailable):
        client.balance()


def test_describe_unknown_code_quotes_the_provider():
    assert describe(ProviderRejected(77, "strange")) == "the provider answered error 77: strange"
