"""Admin accounts on the web: add, remove (never the last), change one's own password."""

from sqlalchemy import select

from admin_support import ADMIN_NAME, ADMIN_PASSWORD, admin, audit_rows, sign_in  # noqa: F401
from portal import auth, storage


def names(app):
    return [row.name for row in auth.list_admins(app.extensions["callpass"].engine)]


def test_add_an_admin_who_can_then_sign_in(app, admin):
    added = admin.post("/admin/admins/add", {"name": "anna", "password": "a long enough secret",
                                             "repeated": "a long enough secret"},
                       page="/admin/admins")
    assert added.status_code == 303
    assert sorted(names(app)) == ["anna", ADMIN_NAME]
    assert sign_in(app.test_client(), "anna", "a long enough secret").status_code == 303
    assert ("admin-add", "anna") in [(r.action, r.detail) for r in audit_rows(app)]


def test_bad_accounts_are_refused_in_words_and_change_nothing(app, admin):
    for form, field, words in [
            ({"name": "bad name!", "password": "a long enough secret"}, "name", "A name is 1–64"),
            ({"name": "anna", "password": "short"}, "password", "10 to 200 characters"),
            ({"name": "anna", "password": "a long enough secret", "repeated": "another one!!"},
             "repeated", "The two passwords differ."),
            ({"name": ADMIN_NAME, "password": "a long enough secret"}, "name", "already exists")]:
        form.setdefault("repeated", form["password"])
        page = admin.post("/admin/admins/add", form, page="/admin/admins")
        assert page.status_code == 400
        html = page.get_data(as_text=True)
        assert f'id="{field}-error" role="alert">' in html and words in html, form
    assert names(app) == [ADMIN_NAME]
    russian = admin.post("/admin/admins/add?lang=ru", {"name": "anna", "password": "short",
                                                        "repeated": "short"}, page="/admin/admins")
    assert "В пароле должно быть от 10 до 200 символов" in russian.get_data(as_text=True)


def test_the_last_admin_cannot_be_removed_but_another_can(app, admin):
    refused = admin.post(f"/admin/admins/{ADMIN_NAME}/remove", page="/admin/admins")
    assert refused.status_code == 303
    assert "The last admin cannot be removed" in admin.get("/admin/admins").get_data(as_text=True)
    assert names(app) == [ADMIN_NAME]
    auth.add_admin(app.extensions["callpass"].engine, "anna", "a long enough secret")
    anna = app.test_client()
    sign_in(anna, "anna", "a long enough secret")
    assert admin.post("/admin/admins/anna/remove", page="/admin/admins").status_code == 303
    assert names(app) == [ADMIN_NAME]
    assert anna.get("/admin/").status_code == 303  # signed out: back to the sign-in page
    assert ("admin-remove", "anna") in [(r.action, r.detail) for r in audit_rows(app)]


def test_change_own_password_needs_the_current_one(app, admin):
    wrong = admin.post("/admin/admins/password", {"current": "not it", "password": "a new secret!",
                                                  "repeated": "a new secret!"},
                       page="/admin/admins")
    assert wrong.status_code == 400
    assert "This is not your current password." in wrong.get_data(as_text=True)
    other = app.test_client()
    sign_in(other)
    changed = admin.post("/admin/admins/password", {"current": ADMIN_PASSWORD,
                                                    "password": "a new secret!",
                                                    "repeated": "a new secret!"},
                         page="/admin/admins")
    assert changed.status_code == 303
    assert admin.get("/admin/admins").status_code == 200   # this browser stays signed in
    assert other.get("/admin/").status_code == 303         # the other one is signed out
    assert sign_in(app.test_client(), ADMIN_NAME, "a new secret!").status_code == 303
    with app.extensions["callpass"].engine.connect() as conn:
        stored = conn.execute(select(storage.admin_user.c.password_hash)).scalar()
    assert "a new secret!" not in stored
