"""Pages fit for a captive browser: nothing loaded from off the portal, a small first load, the venue's
branding (escaped), and the terms box the form enforces."""

import re
from datetime import timedelta
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select, update

from portal import settings
from portal.storage import asset, utcnow, verification

FORM_BUDGET = 30 * 1024
# A 1x1 PNG.
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")
URL_ATTRIBUTES = {"src", "href", "action", "srcset", "poster", "data", "formaction", "manifest"}


class References(HTMLParser):
    """Every address a page refers to: (tag, attribute, value), plus assets the browser loads."""

    def __init__(self):
        super().__init__()
        self.found, self.loaded = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name, value in attrs.items():
            if name in URL_ATTRIBUTES and value is not None:
                self.found.append((tag, name, value))
            if name == "style" and value:
                self.found += [(tag, "style", url) for url in css_urls(value)]
        if tag == "meta" and (attrs.get("http-equiv") or "").lower() == "refresh":
            target = re.search(r"url=(.+)", attrs.get("content", ""), re.I)
            if target:
                self.found.append((tag, "content", target.group(1)))
        if tag == "script" and attrs.get("src"):
            self.loaded.append(attrs["src"])
        if tag == "img" and attrs.get("src"):
            self.loaded.append(attrs["src"])
        if tag == "link" and "stylesheet" in (attrs.get("rel") or "").split():
            self.loaded.append(attrs["href"])


def css_urls(text):
    return [u.strip("'\"") for u in re.findall(r"url\(\s*([^)]*)\)", text)] + \
        re.findall(r"@import\s+['\"]([^'\"]+)", text)


def references(html):
    parser = References()
    parser.feed(html)
    return parser


def off_portal(tag, value):
    """Whether an address leaves the portal (tel: links and data: URIs stay on the device)."""
    parts = urlsplit(value.strip())
    if parts.scheme == "data" or (tag == "a" and parts.scheme == "tel"):
        return False
    return bool(parts.scheme or parts.netloc or value.strip().startswith("//"))


def fetch(client, path):
    """(status, bytes) of an asset; the response is closed (static files are streamed)."""
    with client.get(path) as response:
        return response.status_code, response.get_data()


def assert_self_contained(client, response):
    html = response.get_data(as_text=True)
    found = references(html)
    outside = [(tag, value) for tag, _name, value in found.found if off_portal(tag, value)]
    assert outside == [], outside
    for path in found.loaded:
        status, body = fetch(client, path)
        assert status == 200, path
        if path.endswith(".css"):
            urls = css_urls(body.decode())
            assert [u for u in urls if off_portal("css", u)] == [], path
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    return found


def transferred(client, response):
    """Bytes a browser fetches for a page's first load: the page and what it loads."""
    total = len(response.data)
    for path in references(response.get_data(as_text=True)).loaded:
        total += len(fetch(client, path)[1])
    return total


@pytest.fixture
def branded(app):
    """Venue settings as the admin would store them, with markup a venue might paste in."""
    svc = app.extensions["callpass"]

    def apply(**changes):
        settings.save(svc, {f"venue.{key}": value for key, value in changes.items()}, "test")
    return apply


def start(guest, phone):
    """Submit the form with the terms accepted (as a guest at a venue that requires them)."""
    response = guest.client.post("/", data={"phone": phone, "accept_terms": "yes"})
    assert response.status_code == 303
    guest.token = response.headers["Location"].rsplit("/", 1)[-1]


def pages_of_a_whole_visit(guest, app):
    """(name, response) of every page a guest may see."""
    client = guest.client
    seen = [("form", client.get("/")), ("venue", client.get("/venue")),
            ("404", client.get("/wait/nope")), ("invalid", guest.start("12"))]
    start(guest, "+79161234567")
    seen.append(("wait", client.get(f"/wait/{guest.token}")))
    expired_token = guest.token
    with app.extensions["callpass"].engine.begin() as conn:
        conn.execute(update(verification).where(verification.c.token == expired_token)
                     .values(expires_at=utcnow() - timedelta(seconds=1)))
    seen.append(("expired", client.get(f"/wait/{expired_token}")))
    start(guest, "+79161234567")
    guest.call("79161234567")
    seen.append(("confirmed", client.get(f"/wait/{guest.token}")))
    seen.append(("online", client.get("/")))
    return seen


@pytest.mark.parametrize("lang", ["ru", "uk", "en"])
def test_no_page_refers_to_anything_off_the_portal(guest, app, lang, branded):
    branded(welcome="Welcome!", terms_text="Be nice.", terms_url="/venue#terms", require_terms=True)
    guest.client.set_cookie("lang", lang)
    seen = pages_of_a_whole_visit(guest, app)
    stranger = app.test_client()
    stranger.environ_base.update(REMOTE_ADDR="192.0.2.10")
    stranger.set_cookie("lang", lang)
    seen.append(("not-on-lan", stranger.post("/", data={"phone": "+79161234567",
                                                         "accept_terms": "yes"})))
    for name, response in seen:
        assert response.mimetype == "text/html", name
        found = assert_self_contained(guest.client, response)
        assert "/static/style.css" in found.loaded, name
        assert f'<html lang="{lang}">' in response.get_data(as_text=True), name


def test_the_429_page_is_self_contained(guest):
    for i in range(6):
        response = guest.start(f"+7916123456{i}")
    assert response.status_code == 429
    html = response.get_data(as_text=True)
    assert [v for tag, _n, v in references(html).found if off_portal(tag, v)] == []
    assert "/static/style.css" in references(html).loaded


def test_the_forms_first_load_fits_the_budget(client, guest, branded):
    branded(welcome="Добро пожаловать! " * 20, terms_text="Правила. " * 100, require_terms=True)
    for lang in ("ru", "uk", "en"):
        client.set_cookie("lang", lang)
        first = client.get("/")
        assert transferred(client, first) <= FORM_BUDGET, lang
    start(guest, "+79161234567")
    wait = guest.client.get(f"/wait/{guest.token}")
    assert "/static/wait.js" in references(wait.get_data(as_text=True)).loaded
    assert transferred(guest.client, wait) <= FORM_BUDGET


def test_venue_texts_are_shown_escaped(client, branded):
    branded(name="Café <b>Kotik</b>", welcome="Hello & <script>alert(1)</script>\nSecond line",
            terms_text="<img src=x onerror=alert(1)>")
    page = client.get("/").get_data(as_text=True)
    assert "Café &lt;b&gt;Kotik&lt;/b&gt;" in page
    assert "Hello &amp; &lt;script&gt;alert(1)&lt;/script&gt;\nSecond line" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "<title>Get online · Café &lt;b&gt;Kotik&lt;/b&gt;</title>" in page


def test_the_default_venue_name_is_translated(client):
    assert "Бесплатный Wi-Fi" in client.get("/?lang=ru").get_data(as_text=True)
    assert "Free Wi-Fi" in client.get("/?lang=en").get_data(as_text=True)


@pytest.mark.parametrize("url, shown", [
    ("https://venue.example/terms", True), ("/venue#terms", True),
    ("javascript:alert(1)", False), ("//evil.example/", False),
])
def test_terms_link_only_when_it_is_a_web_address(client, branded, url, shown):
    branded(terms_url=url)
    page = client.get("/").get_data(as_text=True)
    assert (f'href="{url}"' in page) is shown
    assert "javascript:" not in page


def test_the_terms_box_is_enforced_when_the_venue_requires_it(guest, app, branded):
    assert guest.start("+79161234567").status_code == 303  # not required: no box
    assert 'name="accept_terms"' not in guest.client.get("/?lang=en").get_data(as_text=True)

    branded(require_terms=True, terms_text="No spam.")
    form = guest.client.get("/").get_data(as_text=True)
    assert 'type="checkbox" id="accept_terms" name="accept_terms" value="yes" required' in form
    assert '<label for="accept_terms">I accept the terms of use</label>' in form
    before = len(rows(app))
    refused = guest.client.post("/", data={"phone": "+79161234500"})
    assert refused.status_code == 400
    page = refused.get_data(as_text=True)
    assert 'class="error" id="terms-error"' in page and "Please accept the terms of use" in page
    assert 'value="+79161234500"' in page  # what was typed is kept
    assert len(rows(app)) == before  # nothing reached the provider

    guest.client.set_cookie("lang", "ru")
    russian = guest.client.post("/", data={"phone": "12"}).get_data(as_text=True)
    assert "Чтобы продолжить, примите правила пользования." in russian
    assert "Это неправильный номер телефона." in russian  # both fields

    accepted = guest.client.post("/", data={"phone": "+79161234500", "accept_terms": "yes"})
    assert accepted.status_code == 303


def test_a_new_number_after_expiry_keeps_the_accepted_terms(guest, app, branded):
    branded(require_terms=True)
    assert guest.client.post("/", data={"phone": "+79161234567", "accept_terms": "yes"}
                             ).status_code == 303
    token = rows(app)[-1].token
    with app.extensions["callpass"].engine.begin() as conn:
        conn.execute(update(verification).values(expires_at=utcnow() - timedelta(seconds=1)))
    expired = guest.client.get(f"/wait/{token}").get_data(as_text=True)
    assert '<input type="hidden" name="accept_terms" value="yes">' in expired


def rows(app):
    with app.extensions["callpass"].engine.connect() as conn:
        return conn.execute(select(verification)).all()


def test_logo_from_the_config_file_or_the_admin_upload(client, app, tmp_path):
    assert client.get("/venue/logo").status_code == 404
    assert "<img" not in client.get("/").get_data(as_text=True)

    svc = app.extensions["callpass"]
    logo = tmp_path / "logo.png"
    logo.write_bytes(PNG)
    svc.config["venue"]["logo"] = str(logo)
    served = client.get("/venue/logo")
    assert served.status_code == 200 and served.mimetype == "image/png" and served.data == PNG
    assert client.get("/venue/logo", headers={"If-None-Match": served.headers["ETag"]}
                      ).status_code == 304
    page = client.get("/").get_data(as_text=True)
    assert '<img class="logo" src="/venue/logo" alt="">' in page

    with svc.engine.begin() as conn:
        conn.execute(asset.insert().values(name="logo", content_type="image/jpeg", data=b"\xff\xd8jpeg",
                                           updated_at=utcnow()))
    uploaded = client.get("/venue/logo")
    assert uploaded.mimetype == "image/jpeg" and uploaded.data == b"\xff\xd8jpeg"
