"""SMSC client: ask for the number a guest must call (wait_call) and read the account balance.

Only fmt=3 (JSON) is used: it is the one answer shape independent integrations agree on.
Credentials travel as POST form data, never in the query string, so that no URL that may end up
in a log or an exception message carries them.
"""

import logging
from urllib.parse import urlsplit

import requests
import requests.adapters

from .catalog import N_
from .phone import digits_of, from_provider

log = logging.getLogger(__name__)

WAIT_CALL_PATH = "/sys/wait_call.php"
BALANCE_PATH = "/sys/balance.php"

# Connecting is quick or it is not happening at all; reading may include the provider's own work.
MAX_CONNECT_SECONDS = 3

# In English for the log; the admin pages show them translated (the "admin" catalog).
DESCRIPTIONS = {
    1: N_("the provider rejected the request parameters (is the phone number complete?)"),
    2: N_("wrong login or password, or this server's IP is not on the account's allow-list"),
    # Error 3 is shared by SMSC's whole API; wait_call's own page does not list it.
    3: N_("the provider account has run out of money"),
    4: N_("the provider has blocked this server's IP address for about 30 minutes "
          "(too many wrong logins or repeated requests); fix the credentials and wait"),
    9: N_("too many identical requests to the provider within a minute; "
          "wait a minute and try again"),
}


class ProviderError(Exception):
    """Anything that stopped the provider from giving a usable answer."""


class ProviderUnavailable(ProviderError):
    """No host gave a usable answer: connection failure, timeout, HTTP 5xx or a malformed body."""


class ProviderRejected(ProviderError):
    """The provider answered with an error code; asking again will not help."""

    def __init__(self, code: int, text: str):
        self.code = code
        self.text = text
        super().__init__(f"provider error {code}: {text}")


def describe(error: BaseException) -> str:
    """A short English sentence about a provider error, for an operator."""
    if isinstance(error, ProviderRejected):
        if error.code in DESCRIPTIONS:
            return DESCRIPTIONS[error.code]
        return f"the provider answered error {error.code}: {error.text or 'no description'}"
    if isinstance(error, ProviderUnavailable):
        return f"the provider could not be reached: {error}"
    return f"unexpected error while talking to the provider: {error}"


def host_of(url: str) -> str:
    """The host[:port] of a URL, for messages; never any user:password part."""
    parts = urlsplit(url)
    if parts.port:
        return f"{parts.hostname}:{parts.port}"
    return parts.hostname or url


def pooled_session(connections):
    """An HTTP session that keeps up to `connections` connections open to each provider host,
    so that as many requests at once reuse them (requests keeps 10 and drops the rest)."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=connections)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


class Balance(str):
    """The account balance as the provider writes it ("250.80"); .currency is the account's
    currency ("RUB") when the provider names it (balance.php with cur=1), else "".

    A str, so that it is shown and serialised (/healthz) as the amount it always was."""

    def __new__(cls, amount, currency=None):
        balance = super().__new__(cls, str(amount))
        balance.currency = str(currency or "")
        return balance


class Malformed(Exception):
    """An answer that is neither a result nor a provider error; internal to this module."""


class SmscClient:
    """Talks to SMSC's HTTP API, trying the main host and then each fallback host."""

    def __init__(
        self,
        base_url,
        fallback_urls=(),
        login="",
        password="",
        apikey="",
        timeout_seconds=8,
        session=None,
        connections=10,
    ):
        self.base_urls = [base_url, *fallback_urls]
        self.login = login
        self.password = password
        self.apikey = apikey
        self.timeout = (min(MAX_CONNECT_SECONDS, timeout_seconds), timeout_seconds)
        self.owns_session = session is None
        self.session = session if session is not None else pooled_session(connections)

    @property
    def longest_call_seconds(self):
        """How long one call may take when every host is slow but answers within its timeouts."""
        return len(self.base_urls) * sum(self.timeout)

    @classmethod
    def from_config(cls, provider: dict, session=None) -> "SmscClient":
        """Build a client from the [provider] section of the config (all keys present: config.py
        fills the defaults), optionally over an existing HTTP session."""
        return cls(
            base_url=provider["base_url"],
            fallback_urls=tuple(provider["fallback_urls"]),
            login=provider["login"],
            password=provider["password"],
            apikey=provider["apikey"],
            timeout_seconds=provider["timeout_seconds"],
            session=session,
            # guests' calls in flight, and the admin page's or /healthz's balance beside them
            connections=provider["max_concurrent"] + 2,
        )

    def close(self):
        """Close the HTTP session if this client created it."""
        if self.owns_session:
            self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def wait_call(self, phone: str) -> str:
        """Ask for the number the guest must call from phone; returns it in E.164 ("+7…")."""
        answer = self._call(WAIT_CALL_PATH, {"phone": digits_of(phone)}, "phone")["phone"]
        number = from_provider(str(answer))
        if number is None:
            # Checked here, not per host: a host that answered a result has registered the wait.
            raise ProviderUnavailable("the provider answered a number to call that is not "
                                      f"8-15 digits: {str(answer)[:40]!r}")
        return number

    def balance(self) -> "Balance":
        """The account balance as the provider writes it, e.g. "250.80", with its .currency."""
        answer = self._call(BALANCE_PATH, {"cur": "1"}, "balance")
        return Balance(answer["balance"], answer.get("currency"))

    def _credentials(self):
        """Form fields that authenticate the request; an API key wins over login and password."""
        if self.apikey:
            return {"apikey": self.apikey}
        return {"login": self.login, "psw": self.password}

    def _call(self, path, params, field):
        """POST to path on each host in turn; return the answer (which has field) or raise a
        ProviderError."""
        form = {**self._credentials(), **params, "fmt": "3", "charset": "utf-8"}
        last_cause = "no provider host is configured"
        for base_url in self.base_urls:
            url = base_url.rstrip("/") + path
            host = host_of(base_url)
            try:
                response = self.session.post(url, data=form, timeout=self.timeout)
            except requests.Timeout:
                last_cause = f"{host} did not answer within {self.timeout[1]} s"
            except requests.ConnectionError:
                last_cause = f"could not connect to {host} (connection refused, reset or closed)"
            except requests.RequestException as exc:
                # The class name is enough; the exception's text may quote the URL.
                last_cause = f"request to {host} failed ({type(exc).__name__})"
            else:
                try:
                    return self._read_answer(response, field)
                except Malformed as exc:
                    last_cause = f"{host} {exc}"
            log.warning("provider host failed, trying the next one if any: %s", last_cause)
        raise ProviderUnavailable(last_cause)

    def _read_answer(self, response, field):
        """A JSON answer (a dict) that has field; raises ProviderRejected or Malformed."""
        if response.status_code >= 500:
            raise Malformed(f"answered HTTP {response.status_code}")
        if not response.content.strip():
            raise Malformed(f"gave an empty answer (HTTP {response.status_code})")
        try:
            data = response.json()
        except ValueError:
            raise Malformed(f"gave an answer that is not JSON (HTTP {response.status_code})") from None
        if not isinstance(data, dict):
            raise Malformed("gave a JSON answer that is not an object")
        if "error_code" in data:
            try:
                code = int(data["error_code"])
            except (TypeError, ValueError):
                raise Malformed(f"gave an unreadable error code {data['error_code']!r}") from None
            raise ProviderRejected(code, str(data.get("error", "")))
        if response.status_code != 200:
            raise Malformed(f"answered HTTP {response.status_code}")
        if field not in data or data[field] in (None, ""):
            raise Malformed(f"gave a JSON answer without {field!r}")
        return data
