"""The firewall worker: makes the gateway firewall follow the database, in batches, off the
request path.

Requests and commands only write the desired state (`sessions`, which queues each changed MAC in
`firewall_change`) and wake the worker. One worker thread per process then applies every queued
MAC's current state in one `apply` call (one nft transaction), marks the sessions it let through
as online, and deletes the queue rows it applied. Besides the queue it makes a full pass — list
the firewall, compare with every live session, fix the difference in batches — when it starts
and every minute, so a firewall that lost its set (a reboot, `callpass-fw up` after `down`) is
refilled without anyone asking.

The firewall must never fail open silently: with no table `inet callpass` (`nft flush ruleset`,
which restarting Debian's nftables service does) forwarding is open to every guest. So every
CHECK_SECONDS the worker asks whether the table is complete (cheap: no set elements are read);
when it is not, it logs an ERROR, runs `up` with the portal's interface and port, puts back the
provider's addresses and the walled garden, and makes the full pass at once. status() tells
when that last happened.

The worker also keeps the provider's API addresses in the firewall (`block_provider`): the
maintenance thread resolves them, the worker pushes them.

Sessions at venues whose openNDS gateway lets their guests in (opennds_remote) are that gateway's
business, not this firewall's: the worker leaves them out.

This is the one place firewall failures are handled: the rows stay queued, the failure is logged
once, shown on the dashboard and /healthz, and retried with backoff; no request ever sees it.
"""

import logging
import threading
import time
from collections import namedtuple

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.exc import SQLAlchemyError

from . import storage
from .firewall import MAX_SECONDS, FirewallError, check_provider_addresses
from .sessions import seconds_until
from .storage import access_session, firewall_change, utcnow, venue

log = logging.getLogger(__name__)

BATCH = 2000               # MACs per apply call (one nft transaction)
POLL_SECONDS = 2.0         # changes written by other processes are picked up this often
FULL_SYNC_SECONDS = 60
MAX_BACKOFF_SECONDS = 30.0
CHECK_SECONDS = 5.0        # how often the table's presence is checked (a missing one fails open)
DRIFT_SECONDS = 60         # a kernel timeout this far off the session's end is set again


def _kept_here():
    """Sessions this firewall lets through: not those of a venue with a remote openNDS gateway."""
    return access_session.c.venue_id.not_in(select(venue.c.id).where(
        venue.c.opennds_gateway.is_not(None)))


# The worker's statements for each batch, built once (see verification.WAITING_FOR).
QUEUED = (select(firewall_change.c.id, firewall_change.c.mac)
          .order_by(firewall_change.c.id).limit(bindparam("batch")))
LIVE_OF_MACS = (select(access_session.c.id, access_session.c.mac, access_session.c.ends_at)
                .where(access_session.c.mac.in_(bindparam("macs", expanding=True)),
                       access_session.c.ended_at.is_(None),
                       access_session.c.ends_at > bindparam("now"), _kept_here()))
MARK_ONLINE = (update(access_session)
               .where(access_session.c.id.in_(bindparam("session_ids", expanding=True)),
                      access_session.c.firewall_at.is_(None))
               .values(firewall_at=bindparam("now")))
UNQUEUE = delete(firewall_change).where(
    firewall_change.c.id.in_(bindparam("queue_ids", expanding=True)))


def apply_pending(engine, firewall, batch=BATCH):
    """Apply every queued MAC's current state to the firewall; returns how many MACs were applied.

    Raises FirewallError (the queue is kept) when the firewall refuses.
    """
    applied = 0
    while True:
        with engine.connect() as conn:  # the queue and its MACs' live sessions, read together
            queued = conn.execute(QUEUED, {"batch": batch}).all()
            if not queued:
                return applied
            macs = sorted({row.mac for row in queued})
            live = conn.execute(LIVE_OF_MACS, {"macs": macs, "now": utcnow()}).all()
        wanted = seconds_wanted(live)
        firewall.apply([("allow", mac, wanted[mac]) if mac in wanted else ("revoke", mac)
                        for mac in macs])
        with storage.begin(engine) as conn:
            _mark_online(conn, [row.id for row in live])
            conn.execute(UNQUEUE, {"queue_ids": [row.id for row in queued]})
        applied += len(macs)


def seconds_wanted(live):
    """MAC -> the kernel timeout its live sessions ask for (the latest end, capped)."""
    wanted = {}
    for row in live:
        seconds = min(MAX_SECONDS, seconds_until(row.ends_at))
        wanted[row.mac] = max(wanted.get(row.mac, 0), seconds)
    return wanted


def _mark_online(conn, session_ids):
    """Record that the firewall now lets these sessions' MACs through."""
    now = utcnow()
    for first in range(0, len(session_ids), 500):
        conn.execute(MARK_ONLINE, {"session_ids": session_ids[first:first + 500], "now": now})


SyncResult = namedtuple("SyncResult", "allowed revoked lost")


def sync_all(engine, firewall, batch=BATCH):
    """Make the firewall match every live session: allow the missing (or far off), revoke the rest.

    Returns SyncResult(allowed, revoked, lost) counts; lost: of the allowed, those whose sessions
    the firewall had already let through (firewall_at set), with time to run: what a reboot or a
    flushed set loses, and otherwise a sign that something else removes MACs. Raises
    FirewallError when the firewall refuses.
    """
    now = utcnow()
    with engine.connect() as conn:
        live = conn.execute(select(access_session.c.id, access_session.c.mac,
                                   access_session.c.ends_at, access_session.c.firewall_at)
                            .where(access_session.c.ended_at.is_(None),
                                   access_session.c.ends_at > now, _kept_here())).all()
    wanted = seconds_wanted(live)
    present = firewall.list()  # mac -> seconds left, None for no timeout
    if present is None:  # a backend that cannot say who it lets through: nothing to compare
        with storage.begin(engine) as conn:
            _mark_online(conn, [row.id for row in live if row.firewall_at is None])
        return SyncResult(0, 0, 0)

    def is_off(mac, seconds):
        return mac not in present or present[mac] is None or \
            abs(present[mac] - seconds) > DRIFT_SECONDS

    changes = [("allow", mac, seconds) for mac, seconds in wanted.items() if is_off(mac, seconds)]
    changes += [("revoke", mac) for mac in present if mac not in wanted]
    for first in range(0, len(changes), batch):
        firewall.apply(changes[first:first + batch])
    with storage.begin(engine) as conn:
        _mark_online(conn, [row.id for row in live if row.firewall_at is None])
    allowed = sum(1 for change in changes if change[0] == "allow")
    lost = sum(1 for row in live if row.firewall_at is not None and row.mac not in present
               and wanted.get(row.mac, 0) > DRIFT_SECONDS)
    return SyncResult(allowed, len(changes) - allowed, lost)


def pending_count(engine):
    """How many changes wait for the firewall."""
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(firewall_change)).scalar()


class FirewallWorker:
    """The thread that applies queued changes (woken by `wake()`), the periodic full pass and the
    check that the table is still there.

    table: the `up` arguments ({"lan", "portal_port", "tls_port"}: firewall.table_of) run once at
    start and to recreate a missing table; None: never run `up`. restore: called after a
    recreation to put back what the sessions do not say (the walled garden); returns a list of
    failure messages.
    """

    def __init__(self, engine, firewall, on_applied=None, table=None, restore=None):
        self.engine = engine
        self.firewall = firewall
        self.on_applied = on_applied or (lambda: None)  # e.g. drop cached online states
        self.table = table
        self.restore = restore or (lambda: [])
        self.error = None          # the last failure's message, None while the firewall works
        self.failing_since = None  # aware datetime of the first failure in a row
        self.recreated_at = None   # aware datetime of the last time the table had to be recreated
        self.lost = None           # (when, how many) of the last full pass that found let-through
        #                            guests missing from the set, unexpectedly; None: it found none
        self._expect_losses = True  # the first full pass after start or a recreated table puts
        #                             back what a reboot or a flush took: no surprise
        self.provider_addresses = None  # the addresses no guest may reach; None: not known yet
        self._provider_sent = None      # what the firewall holds (another thread sets the above)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = None
        self._full_sync_due = 0.0  # time.monotonic() of the next full pass: at once
        self._check_due = 0.0      # time.monotonic() of the next table check: at once
        self._up_done = False      # `up` runs once at start (ensure_table)

    def wake(self):
        """Something was queued: apply it now (returns at once)."""
        self._wake.set()

    def start(self):
        """Run in a daemon thread until stop()."""
        self._thread = threading.Thread(target=self._loop, name="callpass-firewall", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout=5):
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def block_provider(self, addresses):
        """Keep guests away from these addresses (the provider's API) from the next pass on.

        Raises ValueError for anything that is not a list of IP addresses.
        """
        self.provider_addresses = check_provider_addresses(addresses)
        self.wake()

    def run_once(self):
        """One pass: the table check and the provider's addresses when due, the full comparison
        when due, then the queue. Raises on failure."""
        if time.monotonic() >= self._check_due:
            self.ensure_table()
            self._check_due = time.monotonic() + CHECK_SECONDS
        wanted = self.provider_addresses
        if wanted is not None and wanted != self._provider_sent:
            self.firewall.provider_set(wanted)
            self._provider_sent = wanted
        if time.monotonic() >= self._full_sync_due:
            result = sync_all(self.engine, self.firewall)
            self._full_sync_due = time.monotonic() + FULL_SYNC_SECONDS
            expected, self._expect_losses = self._expect_losses, False
            if result.allowed or result.revoked:
                log_level = logging.INFO if expected else logging.WARNING
                log.log(log_level, "firewall sync: %s allowed (%s of them let through before and "
                        "missing from the set), %s revoked (in the set without a live session)",
                        result.allowed, result.lost, result.revoked)
                self.on_applied()
            self.lost = (utcnow(), result.lost) if result.lost and not expected else None
        self.apply_pending()

    def ensure_table(self):
        """Run `up` once at start, so the chains are made for this config (`up` keeps the sets:
        nobody is logged out); afterwards recreate the table when it is missing or incomplete,
        loudly. Raises on failure."""
        if self.table is None:
            return
        complete = self.firewall.is_complete()
        if complete and self._up_done:
            return
        if complete:  # the first pass
            self.firewall.up(**self.table)
            self._up_done = True
            log.info("firewall (%s): up for guests on %s, portal port %s%s",
                     self.firewall.name, self.table["lan"], self.table["portal_port"],
                     f", TLS port {self.table['tls_port']}" if self.table.get("tls_port") else "")
            return
        log.error("firewall: table inet callpass is missing or incomplete (was `nft flush "
                  "ruleset` run, or the nftables service restarted?): guests were not checked; "
                  "recreating it")
        self.firewall.up(**self.table)
        self._up_done = True
        self.recreated_at = utcnow()
        self._expect_losses = True
        self._provider_sent = None  # the new table's provider sets are empty
        for failure in self.restore():
            log.error("firewall: walled garden: %s", failure)
        self._full_sync_due = 0.0  # the allowed guests, at once (run_once goes on with it)
        log.error("firewall: table inet callpass recreated; allowed guests are being put back")

    def apply_pending(self):
        """Apply the queue now, in the calling thread (tests and `fw-sync` use it directly)."""
        if apply_pending(self.engine, self.firewall):
            self.on_applied()

    def status(self):
        """{"ok", "error", "failing_since", "pending", "recreated_at"} for /healthz and the
        dashboard; recreated_at: when the table was last found missing and made again.

        Not ok either while the firewall fails, or after a full pass (once a minute) found
        guests it had let through missing from the set: the script's `apply` said yes without
        doing it, or someone removed MACs by hand. The pass put them back; the next pass that
        finds none makes it ok again."""
        try:
            pending = pending_count(self.engine)
        except SQLAlchemyError:
            pending = None
        error = self.error
        if error is None and self.lost is not None:
            found_at, count = self.lost
            error = (f"the full pass at {found_at:%H:%M:%S} UTC found {count} guest(s) the "
                     f"firewall had let through missing from its set, and put them back: does "
                     f"the firewall script apply what it is given, or were MACs removed by hand?")
        return {"ok": error is None, "error": error,
                "failing_since": self.failing_since,
                "pending": pending,
                "recreated_at": self.recreated_at}

    def _loop(self):
        backoff = 0.0
        while not self._stop.is_set():
            if backoff:
                # While the firewall fails, wake-ups wait for the backoff: no hammering.
                self._stop.wait(backoff)
            else:
                self._wake.wait(min(POLL_SECONDS, max(0.0, self._full_sync_due - time.monotonic())))
            self._wake.clear()
            if self._stop.is_set():
                return
            backoff = 0.0 if self.attempt() else min(MAX_BACKOFF_SECONDS, max(0.5, backoff * 2))

    def attempt(self):
        """run_once, recording the outcome for status(); True when it worked. With several nodes
        on PostgreSQL one applies the queue at a time; the others skip the pass."""
        try:
            with storage.job_lock(self.engine, "firewall") as mine:
                if mine:
                    self.run_once()
        except (FirewallError, SQLAlchemyError, ValueError) as exc:  # ValueError: a bad stored MAC
            self._failed(exc)
            return False
        self._succeeded()
        return True

    def _failed(self, exc):
        self._check_due = 0.0  # a vanished table is the likeliest cause: look at the next try
        message = str(exc)
        if message != self.error:  # logged once per distinct failure, not once per retry
            log.error("firewall: %s (changes are kept and retried with backoff)", message)
        if self.error is None:
            self.failing_since = utcnow()
        self.error = message

    def _succeeded(self):
        if self.error is not None:
            log.info("firewall works again (failing since %s)", self.failing_since.isoformat())
        self.error = None
        self.failing_since = None
