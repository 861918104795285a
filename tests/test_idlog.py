"""The identification log: its CSV export (content, streaming, bounded memory) and the purge."""

import csv
import io
import tracemalloc
from datetime import datetime, timedelta, timezone

from click.testing import CliRunner
from sqlalchemy import func, insert, select

from admin_support import admin, audit_rows, command_config  # noqa: F401
from conftest import GUEST_MAC, wait_until
from portal import audit, cli, idlog, settings, storage

T0 = datetime(2025, 3, 1, 9, 30, 15, tzinfo=timezone.utc)


def add_session(engine, *, phone="+79161234567", mac="02:cc:00:00:00:11", ip="10.77.0.11",
                started=T0, minutes=60, ended=True, reason="expired", call_number="+74950000000"):
    """One confirmed verification and its session, at the given times."""
    with engine.begin() as conn:
        verification_id = conn.execute(insert(storage.verification).values(
            token=f"t{started.timestamp()}{mac}", phone=phone, mac=mac, ip=ip,
            call_number=call_number, state="confirmed", created_at=started - timedelta(minutes=1),
            expires_at=started + timedelta(minutes=4), confirmed_at=started)).inserted_primary_key[0]
        conn.execute(insert(storage.access_session).values(
            verification_id=verification_id, mac=mac, ip=ip, phone=phone, started_at=started,
            ends_at=started + timedelta(minutes=minutes),
            ended_at=started + timedelta(minutes=minutes) if ended else None,
            end_reason=reason if ended else None))
    return verification_id


def read_csv(response, delimiter=","):
    text = response.get_data(as_text=True)
    assert text.startswith("\ufeff")
    return list(csv.reader(io.StringIO(text[1:]), delimiter=delimiter))


def test_export_is_a_spreadsheet_friendly_csv_of_the_date_range(app, admin, guest):
    engine = app.extensions["callpass"].engine
    add_session(engine, started=T0 - timedelta(days=1), mac="02:cc:00:00:00:01")   # before
    add_session(engine, started=T0, reason="admin")
    add_session(engine, started=T0 + timedelta(days=30, hours=14), mac="02:cc:00:00:00:02",
                call_number="")                                                    # remembered
    add_session(engine, started=T0 + timedelta(days=31), mac="02:cc:00:00:00:03")  # after

    settings.save(app.extensions["callpass"], {"venue.timezone": "UTC"}, "test")
    with admin.get("/admin/log.csv?from=2025-03-01&to=2025-03-31") as response:
        assert response.status_code == 200
        assert response.is_streamed
        assert response.content_type == "text/csv; charset=utf-8"
        assert response.headers["Content-Disposition"] == \
            'attachment; filename="identifications_2025-03-01_2025-03-31.csv"'
        rows = read_csv(response)
    assert rows == [
        ["Phone", "Device (MAC)", "IP", "Verified by", "Verified at (UTC)", "Session start (UTC)",
         "Session end (UTC)", "Why it ended", "Bytes from the device", "Bytes to the device"],
        ["+7 916 123-45-67", "02:cc:00:00:00:11", "10.77.0.11", "call", "2025-03-01 09:30:15",
         "2025-03-01 09:30:15", "2025-03-01 10:30:15", "ended by an admin", "", ""],
        ["+7 916 123-45-67", "02:cc:00:00:00:02", "10.77.0.11", "remembered device",
         "2025-03-31 23:30:15", "2025-03-31 23:30:15", "2025-04-01 00:30:15", "time ran out",
         "", ""],
    ]
    [entry] = [r for r in audit_rows(app) if r.action == "export"]
    assert audit.data_of(entry) == {"from": "2025-03-01", "to": "2025-03-31"}

    # A session still running, through the real guest flow; semicolons for Excel's ru/uk locales.
    guest.start("+79161234567")
    guest.call("79161234567")
    with admin.get("/admin/log.csv?sep=semicolon") as response:
        rows = read_csv(response, delimiter=";")
    assert len(rows) == 1 + 5
    assert rows[-1][:4] == ["+7 916 123-45-67", GUEST_MAC, "10.77.0.11", "call"]
    assert rows[-1][6:] == ["", "still online", "", ""]  # no byte counts without a RADIUS router


def test_log_page_filters_by_date_and_refuses_bad_dates(app, admin):
    engine = app.extensions["callpass"].engine
    add_session(engine, started=T0, mac="02:cc:00:00:00:aa")
    add_session(engine, started=T0 + timedelta(days=2), mac="02:cc:00:00:00:bb")
    page = admin.get("/admin/log?from=2025-03-02&to=2025-03-05").get_data(as_text=True)
    assert "02:cc:00:00:00:bb" in page and "02:cc:00:00:00:aa" not in page
    assert "Sessions found: 1." in page
    bad = admin.get("/admin/log?from=2025-13-01")
    assert bad.status_code == 400
    assert "Enter dates as YYYY-MM-DD." in bad.get_data(as_text=True)
    backwards = admin.get("/admin/log.csv?from=2025-03-05&to=2025-03-01")
    assert backwards.status_code == 303  # back to the page with the message; nothing exported
    assert [r.action for r in audit_rows(app)] == ["login"]


def test_export_streams_a_large_log_in_bounded_memory(app, admin):
    engine = app.extensions["callpass"].engine
    count = 80_000
    with engine.begin() as conn:
        conn.execute(insert(storage.access_session), [
            {"mac": f"02:cc:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}",
             "ip": "10.77.0.11", "phone": f"+7916{i:07d}",
             "started_at": T0 + timedelta(seconds=i), "ends_at": T0 + timedelta(seconds=i + 3600),
             "ended_at": T0 + timedelta(seconds=i + 3600), "end_reason": "expired"}
            for i in range(count)])

    size = lines = 0
    tracemalloc.start()
    try:
        with admin.get("/admin/log.csv") as response:
            assert response.is_streamed
            for chunk in response.response:
                size += len(chunk)
                lines += chunk.count(b"\n") if isinstance(chunk, bytes) else chunk.count("\n")
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lines == count + 1
    assert size > 7_000_000
    # Memory follows the batch size (idlog.EXPORT_BATCH rows), not the size of the log.
    assert peak < size / 4, f"peak {peak} bytes for a {size}-byte export"


def test_purge_keeps_open_sessions_and_recent_records(app):
    engine = app.extensions["callpass"].engine
    now = datetime.now(timezone.utc)
    old = now - timedelta(days=200)
    add_session(engine, started=old, mac="02:cc:00:00:00:01")                       # goes
    kept_open = add_session(engine, started=old, mac="02:cc:00:00:00:02", ended=False)
    add_session(engine, started=now - timedelta(days=10), mac="02:cc:00:00:00:03")  # stays
    with engine.begin() as conn:
        conn.execute(insert(storage.notification), [
            {"received_at": old, "remote_addr": "198.51.100.1", "fields": "{}",
             "verdict": "accepted", "reason": "old"},
            {"received_at": now, "remote_addr": "198.51.100.1", "fields": "{}",
             "verdict": "accepted", "reason": "new"}])

    counts = idlog.purge(engine, 183)
    assert (counts["sessions"], counts["verifications"], counts["notifications"]) == (1, 1, 1)
    with engine.connect() as conn:
        macs = conn.execute(select(storage.access_session.c.mac)
                            .order_by(storage.access_session.c.mac)).scalars().all()
        verification_ids = conn.execute(select(storage.verification.c.id)).scalars().all()
        reasons = conn.execute(select(storage.notification.c.reason)).scalars().all()
    assert macs == ["02:cc:00:00:00:02", "02:cc:00:00:00:03"]
    assert kept_open in verification_ids and len(verification_ids) == 2
    assert reasons == ["new"]


def test_purge_command_and_the_daily_maintenance(app, tmp_path):
    engine = app.extensions["callpass"].engine
    old = datetime.now(timezone.utc) - timedelta(days=190)
    add_session(engine, started=old, mac="02:cc:00:00:00:01")
    result = CliRunner().invoke(cli.main, ["purge", "--config", command_config(tmp_path, app)])
    assert result.exit_code == 0, result.output
    assert "1 sessions, 1 verifications, 0 notifications" in result.output

    add_session(engine, started=old, mac="02:cc:00:00:00:02")
    stop = cli.start_background(app)  # purges at start, then daily

    def sessions_left():
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(storage.access_session)).scalar()

    assert wait_until(lambda: sessions_left() == 0 and len(audit_rows(app)) == 2)
    stop.set()
    assert [(r.action, r.admin) for r in audit_rows(app)] == [("purge", "shell"),
                                                              ("purge", "daily purge")]
