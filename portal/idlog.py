"""The identification log the law asks for: who used the Wi-Fi, when, from which device.

One row per access session (a device let through after a confirmed call): the phone, the device's
MAC and IP, when the call confirmed the phone, when the session started and ended, and why it ended.
It is read page by page on the admin page, exported as CSV (streamed in batches, so a million rows
never sit in memory) and purged `admin.retention_days` after the session ended. In a chain each
venue's admins read their venue's slice; a chain admin's export has a last column naming the venue.
"""

import csv
import io
from datetime import date, datetime, time, timedelta, timezone

import phonenumbers
from sqlalchemy import delete, func, select

from . import audit, sessions, storage
from .storage import access_session, nas_session, notification, utcnow, venue, verification

EXPORT_BATCH = 500  # rows per batch: memory use follows this, not the size of the log
# Column titles of the machine-readable export (English, times in UTC); the admin page's export
# has the same columns with titles in the admin's language.
CSV_HEADER = ("phone", "mac", "ip", "verified_by", "verified_at (UTC)", "session_start (UTC)",
              "session_end (UTC)", "end_reason", "bytes_in", "bytes_out")
OPEN = "open"  # end_reason shown for a session that is still running
BY_CALL, BY_MEMORY = "call", "remembered device"  # how the phone was verified for a session


def start_of(day, zone=timezone.utc):
    """Midnight at the start of day (a date) in zone (the venue's time zone)."""
    return datetime.combine(day, time.min, tzinfo=zone)


def _select(date_from=None, date_to=None, zone=timezone.utc, venue_id=None):
    """The log's columns for sessions started on date_from … date_to (days in zone, both
    included), of one venue when venue_id is given."""
    s, v, now = access_session, verification, utcnow()
    # The volume a RADIUS router reported (bytes from / to the device), summed over its sessions;
    # empty where no router reports it (the nftables gateway counts nothing).
    volume = (select(nas_session.c.access_session_id,
                     func.sum(nas_session.c.bytes_in).label("bytes_in"),
                     func.sum(nas_session.c.bytes_out).label("bytes_out"))
              .group_by(nas_session.c.access_session_id).subquery())
    query = (select(s.c.id, s.c.phone, s.c.mac, s.c.ip, v.c.confirmed_at.label("verified_at"),
                    v.c.call_number, s.c.started_at, s.c.ends_at,
                    sessions.ended_as_of(now), sessions.end_reason_as_of(now),
                    volume.c.bytes_in, volume.c.bytes_out, venue.c.slug.label("venue"))
             .select_from(s.outerjoin(v, v.c.id == s.c.verification_id)
                          .outerjoin(volume, volume.c.access_session_id == s.c.id)
                          .outerjoin(venue, venue.c.id == s.c.venue_id)))
    if venue_id is not None:
        query = query.where(s.c.venue_id == venue_id)
    if date_from is not None:
        query = query.where(s.c.started_at >= start_of(date_from, zone))
    if date_to is not None:
        query = query.where(s.c.started_at < start_of(date_to + timedelta(days=1), zone))
    return query


def page(engine, date_from=None, date_to=None, limit=100, offset=0, zone=timezone.utc,
         venue_id=None):
    """(rows newest first, total count) for one page of the log (of one venue, when given)."""
    query = _select(date_from, date_to, zone, venue_id)
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(query.subquery())).scalar()
        rows = conn.execute(query.order_by(access_session.c.started_at.desc(),
                                           access_session.c.id.desc())
                            .limit(limit).offset(offset)).all()
    return rows, total


def csv_time(moment, zone=timezone.utc):
    """A time in zone as spreadsheets read it: "2024-05-01 14:03:07" (ISO 8601, space
    separated)."""
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S") if moment else ""


class Export:
    """How the CSV is written: header, words for the coded columns, time zone, phone format.

    The default is the machine-readable export (English codes, UTC, E.164); the admin page passes
    its language's header and words, the venue's zone and phone_text (see csv_phone). With
    venue_column the header ends with it and each row with the session's venue (its slug).
    """

    def __init__(self, header=CSV_HEADER, words=None, zone=timezone.utc, phone_text=False,
                 venue_column=None):
        self.header, self.words, self.zone, self.phone_text = header, words or {}, zone, phone_text
        self.with_venue = venue_column is not None
        if self.with_venue:
            self.header = (*header, venue_column)

    def word(self, code):
        return self.words.get(code, code)

    def row(self, row):
        values = (csv_phone(row.phone) if self.phone_text else row.phone, row.mac, row.ip,
                  self.word(verified_by(row)), csv_time(row.verified_at, self.zone),
                  csv_time(row.started_at, self.zone), csv_time(row.ended_at, self.zone),
                  self.word(end_reason(row)), _count(row.bytes_in), _count(row.bytes_out))
        return (*values, row.venue) if self.with_venue else values


def csv_phone(number):
    """A phone number as spreadsheets keep it as text: "+7 916 123-45-67" (international format;
    LibreOffice and Excel read "+79161234567" as the number 79161234567 and drop the +)."""
    try:
        parsed = phonenumbers.parse(number)
    except phonenumbers.NumberParseException:
        return number
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def csv_chunks(engine, date_from=None, date_to=None, delimiter=",", batch=EXPORT_BATCH,
               export=None, venue_id=None):
    """The export as text chunks: a UTF-8 BOM and header, then one chunk per batch of rows (of
    one venue, when given).

    Rows come from the database batch by batch (yield_per: a server-side cursor where the driver
    has one), oldest first, so memory use does not grow with the size of the log.
    """
    export = export or Export()
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(export.header)
    yield "\ufeff" + out.getvalue()
    query = _select(date_from, date_to, export.zone, venue_id).order_by(
        access_session.c.started_at, access_session.c.id)
    with engine.connect() as conn:
        result = conn.execution_options(yield_per=batch).execute(query)
        for rows in result.partitions():
            out.seek(0)
            out.truncate()
            writer.writerows(export.row(row) for row in rows)
            yield out.getvalue()


def _count(value):
    return "" if value is None else int(value)


def verified_by(row):
    """"call", or "remembered device" for a device let back in without a call (no call number)."""
    if row.call_number is None:
        return ""
    return BY_CALL if row.call_number else BY_MEMORY


def end_reason(row):
    """Why a session ended ("expired", "revoked", …), or "open" while it runs."""
    return OPEN if row.ended_at is None else (row.end_reason or "")


def parse_day(text):
    """A "YYYY-MM-DD" day, None for an empty text; ValueError otherwise."""
    text = (text or "").strip()
    return date.fromisoformat(text) if text else None


def purge(engine, retention_days, now=None):
    """Delete what is older than retention_days; returns counts per table.

    Sessions go when they ended before the cut-off (an open session never does), verifications
    when created before it and no remaining session points at them, notifications when received
    before it.
    """
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    s, v, n = access_session, verification, notification
    old_sessions = (s.c.ended_at.is_not(None), s.c.ended_at < cutoff)
    with storage.begin(engine) as conn:
        conn.execute(delete(nas_session).where(
            nas_session.c.access_session_id.in_(select(s.c.id).where(*old_sessions))))
        sessions = conn.execute(delete(s).where(*old_sessions)).rowcount
        still_used = select(s.c.verification_id).where(s.c.verification_id.is_not(None))
        verifications = conn.execute(delete(v).where(v.c.created_at < cutoff,
                                                     v.c.id.not_in(still_used))).rowcount
        notifications = conn.execute(delete(n).where(n.c.received_at < cutoff)).rowcount
    return {"sessions": sessions, "verifications": verifications, "notifications": notifications,
            "cutoff": cutoff}


def describe_purge(counts):
    """One line for the audit log and the command's output."""
    return (f"older than {counts['cutoff']:%Y-%m-%d %H:%M} UTC: {counts['sessions']} sessions, "
            f"{counts['verifications']} verifications, {counts['notifications']} notifications")


def purge_recorded(engine, retention_days, actor):
    """purge(), recorded in the audit log as done by actor; returns the summary line."""
    counts = purge(engine, retention_days)
    audit.record(engine, actor, "local", audit.PURGE,
                 {**counts, "cutoff": counts["cutoff"].isoformat(timespec="minutes")})
    return describe_purge(counts)
