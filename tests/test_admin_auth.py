"""Admin accounts, signing in, the lock-out, CSRF and the allow_from networks."""

from click.testing import CliRunner
from sqlalchemy import select

from admin_support import (ADMIN_NAME, ADMIN_PASSWORD, admin, audit_rows,  # noqa: F401
                           command_config, csrf_token, settings_form, sign_in, stored_settings)
from conftest import GUEST_MAC
from portal import auth, create_app, storage, venues
from portal.cli import main


def admin_rows(app):
    with app.extensions["callpass"].engine.connect() as conn:
        return conn.execute(select(storage.admin_user)).all()


def test_admin_add_reads_stdin_and_stores_only_a_slow_hash(app, client, tmp_path):
    config = command_config(tmp_path, app)
    result = CliRunner().invoke(main, ["admin", "add", "anna", "--config", config],
                                input="a long enough secret\n")
    assert result.exit_code == 0, result.output
    [row] = admin_rows(app)
    assert row.name == "anna"
    assert row.password_hash.startswith("scrypt:")
    assert "a long enough secret" not in row.password_hash
    # The account works on the login page, and the audit log knows who created it.
    assert sign_in(client, "anna", "a long enough secret").headers["Location"] == "/admin/"
    assert [(r.action, r.detail) for r in audit_rows(app)][:2] == [("admin-add", "anna"),
                                                                   ("login", "")]

    listed = CliRunner().invoke(main, ["admin", "list", "--config", config])
    assert listed.exit_code == 0 and listed.output.startswith("anna\tcreated ")


def test_admin_add_refuses_weak_passwords_and_taken_names(app, tmp_path):
    config = command_config(tmp_path, app)
    short = CliRunner().invoke(main, ["admin", "add", "anna", "--config", config], input="short\n")
    assert short.exit_code == 1
    assert "at least 10 characters" in short.output
    same = CliRunner().invoke(main, ["admin", "add", "anna", "--config", config],
                              input="ANNA      \n")
    assert same.exit_code == 1
    bad_name = CliRunner().invoke(main, ["admin", "add", "an na", "--config", config],
                                  input="a long enough secret\n")
    assert bad_name.exit_code == 1
    assert admin_rows(app) == []
    CliRunner().invoke(main, ["admin", "add", "anna", "--config", config],
                       input="a long enough secret\n")
    again = CliRunner().invoke(main, ["admin", "add", "anna", "--config", config],
                               input="another long secret\n")
    assert again.exit_code == 1 and "already exists" in again.output
    assert len(admin_rows(app)) == 1


def test_admin_passwd_signs_out_open_browsers(app, admin, tmp_path):
    assert admin.get("/admin/").status_code == 200
    result = CliRunner().invoke(main, ["admin", "passwd", ADMIN_NAME, "--config",
                                       command_config(tmp_path, app)], input="a brand new secret\n")
    assert result.exit_code == 0, result.output
    assert admin.get("/admin/").status_code == 303  # the old session is gone
    assert sign_in(admin.client, ADMIN_NAME, ADMIN_PASSWORD).status_code == 401
    assert sign_in(admin.client, ADMIN_NAME, "a brand new secret").status_code == 303


def test_admin_remove_never_removes_the_last_chain_admin(app, tmp_path):
    """As on the admin page: a chain (or single venue) always keeps an admin of the whole chain."""
    engine = app.extensions["callpass"].engine
    config = command_config(tmp_path, app)
    remove = lambda name: CliRunner().invoke(main, ["admin", "remove", name, "--config", config])
    auth.add_admin(engine, "anna", "a long enough secret")
    arbat = venues.save(engine, {"slug": "arbat", "name": "Arbat", "nas_identifier": None,
                                 "nas_ip": None, "unifi_site": None})
    auth.add_admin(engine, "vera", "a long enough secret", venue_id=arbat)

    refused = remove("anna")
    assert refused.exit_code == 1
    assert "callpass: the last admin of the whole chain cannot be removed" in refused.output
    assert sorted(row.name for row in admin_rows(app)) == ["anna", "vera"]
    assert [r.action for r in audit_rows(app)] == []

    auth.add_admin(engine, "boris", "a long enough secret")
    assert remove("anna").exit_code == 0
    assert remove("vera").exit_code == 0  # a venue's admin: the chain still has boris
    last = remove("boris")
    assert last.exit_code == 1 and "cannot be removed" in last.output
    assert [row.name for row in admin_rows(app)] == ["boris"]
    assert [(r.action, r.detail) for r in audit_rows(app)] == [("admin-remove", "anna"),
                                                               ("admin-remove", "vera")]


def test_sign_in_and_out(app, client):
    auth.add_admin(app.extensions["callpass"].engine, ADMIN_NAME, ADMIN_PASSWORD)
    first = client.get("/admin/settings")
    assert first.status_code == 303
    assert first.headers["Location"] == "/admin/login?next=/admin/settings"

    wrong = sign_in(client, ADMIN_NAME, "not the password")
    assert wrong.status_code == 401
    assert "Wrong name or password." in wrong.get_data(as_text=True)
    assert client.get("/admin/").status_code == 303

    token = csrf_token(client, "/admin/login?next=/admin/settings")
    right = client.post("/admin/login", data={"name": ADMIN_NAME, "password": ADMIN_PASSWORD,
                                              "csrf_token": token, "next": "/admin/settings"})
    assert right.status_code == 303 and right.headers["Location"] == "/admin/settings"
    cookie = right.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert client.get("/admin/").status_code == 200

    out = client.post("/admin/logout", data={"csrf_token": csrf_token(client, "/admin/")})
    assert out.status_code == 303
    assert client.get("/admin/").status_code == 303

    assert [(r.action, r.admin, r.remote_addr) for r in audit_rows(app)] == [
        ("login-failed", ADMIN_NAME, "127.0.0.1"), ("login", ADMIN_NAME, "127.0.0.1"),
        ("logout", ADMIN_NAME, "127.0.0.1")]


def test_sign_in_only_goes_on_to_admin_pages(app):
    auth.add_admin(app.extensions["callpass"].engine, ADMIN_NAME, ADMIN_PASSWORD)
    for target in ("https://evil.example/", "//evil.example/admin", "/admin\\@evil"):
        client = app.test_client()
        token = csrf_token(client)
        response = client.post("/admin/login", data={"name": ADMIN_NAME, "password": ADMIN_PASSWORD,
                                                     "csrf_token": token, "next": target})
        assert response.headers["Location"] == "/admin/", target


def test_session_cookie_is_secure_behind_https(cfg, firewall):
    cfg["portal"]["public_url"] = "https://localhost/"
    app = create_app(cfg, firewall=firewall)
    storage.upgrade(app.extensions["callpass"].engine)
    auth.add_admin(app.extensions["callpass"].engine, ADMIN_NAME, ADMIN_PASSWORD)
    client = app.test_client()
    https = {"base_url": "https://localhost", "headers": {"Referer": "https://localhost/admin/login"}}
    page = client.get("/admin/login", **https).get_data(as_text=True)
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    response = client.post("/admin/login", data={"name": ADMIN_NAME, "password": ADMIN_PASSWORD,
                                                 "csrf_token": token}, **https)
    assert response.status_code == 303
    assert "Secure" in response.headers["Set-Cookie"]
    app.extensions["callpass"].engine.dispose()


def test_failed_sign_ins_lock_the_address_out(app, client):
    auth.add_admin(app.extensions["callpass"].engine, ADMIN_NAME, ADMIN_PASSWORD)
    codes = [sign_in(client, ADMIN_NAME, f"guess number {i}").status_code for i in range(5)]
    assert codes == [401] * 5
    locked = sign_in(client, ADMIN_NAME, ADMIN_PASSWORD)  # even the right password now
    assert locked.status_code == 429
    page = locked.get_data(as_text=True)
    assert "Too many failed sign-ins from your address. Try again after" in page
    assert 0 < int(locked.headers["Retry-After"]) <= 15 * 60
    assert client.get("/admin/").status_code == 303  # not signed in

    # Another address is not locked out (the account is, for browsers it does not know: see
    # test_admin_lockout.py); a success does not count against it.
    auth.add_admin(app.extensions["callpass"].engine, "anna", "a long enough secret")
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = "127.0.0.2"
    assert sign_in(other, "anna", "a long enough secret").status_code == 303
    actions = [r.action for r in audit_rows(app)]
    assert actions == ["login-failed"] * 5 + ["login-locked", "login"]


def test_forms_without_csrf_token_are_refused_and_change_nothing(app, admin, guest, firewall):
    guest.start("+79161234567")
    guest.call("79161234567")
    session_id = 1
    calls_before = list(firewall.calls)

    changed = admin.client.post("/admin/settings",
                                data=settings_form(app, **{"venue.name.en": "Hacked"}))
    assert changed.status_code == 400
    assert "The form has expired" in changed.get_data(as_text=True)
    assert stored_settings(app) == {}

    ended = admin.client.post(f"/admin/sessions/{session_id}/end", data={})
    assert ended.status_code == 400
    forged = admin.client.post(f"/admin/sessions/{session_id}/end",
                               data={"csrf_token": "forged.token.value"})
    assert forged.status_code == 400
    assert firewall.calls == calls_before
    assert b"You are online" in guest.client.get("/").data

    login = app.test_client().post("/admin/login",
                                   data={"name": ADMIN_NAME, "password": ADMIN_PASSWORD})
    assert login.status_code == 400
    assert [r.action for r in audit_rows(app)] == ["login"]  # the fixture's, nothing more


def test_guest_form_and_provider_callback_need_no_csrf_token(guest, firewall):
    started = guest.start("+79161234567")
    assert started.status_code == 303
    assert guest.call("79161234567").data == b"OK"
    assert ("allow", GUEST_MAC, 240 * 60) in firewall.calls


def test_admin_pages_refuse_addresses_outside_allow_from(app):
    auth.add_admin(app.extensions["callpass"].engine, ADMIN_NAME, ADMIN_PASSWORD)
    guest_browser = app.test_client()
    guest_browser.environ_base["REMOTE_ADDR"] = "10.77.0.11"
    for url in ("/admin/", "/admin/login", "/admin/log.csv", "/admin/static/admin.css"):
        refused = guest_browser.get(url, headers={"X-Forwarded-For": "127.0.0.1",
                                                  "X-Real-IP": "127.0.0.1"})
        assert refused.status_code == 403, url
    assert "Your address is 10.77.0.11" in refused.get_data(as_text=True)
    attempt = guest_browser.post("/admin/login", data={"name": ADMIN_NAME,
                                                       "password": ADMIN_PASSWORD})
    assert attempt.status_code == 403
    assert audit_rows(app) == []

    # The office network, once listed, gets in.
    app.extensions["callpass"].config["admin"]["allow_from"].append("10.77.0.0/24")
    assert guest_browser.get("/admin/login").status_code == 200


def test_ipv4_clients_of_a_dual_stack_socket_match_ipv4_networks():
    assert auth.is_allowed_address("::ffff:127.0.0.1", ["127.0.0.0/8"])
    assert auth.is_allowed_address("::1", ["127.0.0.0/8", "::1/128"])
    assert not auth.is_allowed_address("192.168.1.5", ["127.0.0.0/8", "::1/128"])
    assert not auth.is_allowed_address("", ["0.0.0.0/0"])
    assert not auth.is_allowed_address("10.0.0.1", ["not a network"])


def test_admin_commands_work_before_the_rest_of_the_config_is_filled_in(tmp_path, database_url):
    """A fresh install has no provider account yet; the first admin can be created anyway
    (admin commands need only portal.database)."""
    config = tmp_path / "callpass.toml"
    config.write_text(f'[portal]\ndatabase = "{database_url}"\n')
    runner = CliRunner()
    added = runner.invoke(main, ["admin", "add", "first", "--config", str(config)],
                          input="long enough password\n")
    assert added.exit_code == 0, added.output
    listed = runner.invoke(main, ["admin", "list", "--config", str(config)])
    assert "first" in listed.output
    # serve still refuses that config, naming what is missing.
    assert runner.invoke(main, ["check-config", "--config", str(config)]).exit_code == 2
