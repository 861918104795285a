"""The `callpass` command (also `python -m portal`): demo, serve, simulator, check-config, fw-sync,
fw-up, backup, purge."""

import logging
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path

import click

from . import config as config_module
from . import auth, create_app, firewall_sync, idlog, sessions, settings, storage, verification
from .admin_cli import admin_group
from .venue_cli import venue_group
from .command import CONFIG_OPTION, fail, load_config, open_app, read_config, upgrade_or_exit
from .firewall import FirewallError, NoopFirewall, table_of

log = logging.getLogger("portal")

MAINTENANCE_SECONDS = 60
PURGE_SECONDS = 24 * 3600  # the identification log is purged once a day


def split_listen(listen):
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


@click.group()
def main():
    """callpass: Wi-Fi captive portal with phone verification by a free call."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command("check-config")
@CONFIG_OPTION
def check_config(config_path):
    """Validate a config file; print what is wrong and exit non-zero."""
    cfg = load_config(config_path)
    click.echo(f"{config_path}: OK (firewall {cfg['gateway']['firewall']}, "
               f"provider {cfg['provider']['base_url']}, database {cfg['portal']['database']})")


@main.command("fw-sync")
@CONFIG_OPTION
def fw_sync(config_path):
    """Make the firewall match the database: re-allow live sessions, remove ended ones."""
    app = open_app(config_path)
    svc = app.extensions["callpass"]
    try:
        allowed, revoked, _ = firewall_sync.sync_all(svc.engine, svc.firewall)
        firewall_sync.apply_pending(svc.engine, svc.firewall)
    except FirewallError as exc:
        click.echo(f"callpass: firewall failed: {exc}", err=True)
        sys.exit(1)
    with app.app_context():
        failures = settings.sync_garden(svc)
    for failure in failures:
        click.echo(f"callpass: walled garden: {failure}", err=True)
    click.echo(f"firewall in sync: {allowed} allowed, {revoked} revoked")
    sys.exit(1 if failures else 0)


@main.command()
@CONFIG_OPTION
def purge(config_path):
    """Delete identification records older than admin.retention_days (never an open session)."""
    app = open_app(config_path)
    svc = app.extensions["callpass"]
    click.echo("purged " + idlog.purge_recorded(svc.engine, svc.config["admin"]["retention_days"],
                                                "shell"))


@main.command()
@CONFIG_OPTION
def serve(config_path):
    """Run the portal on a production WSGI server (waitress)."""
    app = open_app(config_path)
    svc = app.extensions["callpass"]
    cfg = svc.config
    host, port = split_listen(cfg["portal"]["listen"])
    server = listening_server(app, host, port, cfg["portal"]["threads"],
                              cfg["portal"]["connection_limit"], cfg["portal"]["trusted_proxy"])
    start_background(app)
    log.info("callpass serving on %s (public URL %s, firewall %s)",
             cfg["portal"]["listen"], cfg["portal"]["public_url"], svc.firewall.name)
    server.run()


# What the demo decides itself, whatever --config or CALLPASS_* say: where it listens (--host,
# --port), the simulator as the provider, the callback between them, and no firewall.
DEMO_OWNED = {"portal": ("listen", "public_url"),
              "provider": ("base_url", "fallback_urls", "login", "password", "apikey"),
              "callback": ("token", "signature", "secret"), "gateway": ("firewall",)}


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65534))
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="A config file for everything else (venue, admin, database: set "
                   "portal.database to keep data and admins between runs).")
def demo(host, port, config_path):
    """Everything on one machine: portal on PORT, SMSC simulator on PORT+1, no-op firewall.

    Settings come from --config and CALLPASS_* variables, except the keys in DEMO_OWNED. Without
    a portal.database from either, the data lives in a new temporary folder."""
    from .simulator import SimulatorServer

    base = read_config(config_path)
    ignored = [f"{section}.{key}" for section, keys in DEMO_OWNED.items() for key in keys
               if base[section][key] != config_module.DEFAULTS[section][key]]
    if ignored:
        click.echo(f"callpass demo: ignoring {', '.join(ignored)} (the demo sets these itself)", err=True)
    folder = None
    database = base["portal"]["database"]
    if database == config_module.DEFAULTS["portal"]["database"]:
        folder = Path(tempfile.mkdtemp(prefix="callpass-demo-"))
        database = f"sqlite:///{folder / 'callpass.sqlite3'}"
    token, secret = secrets.token_urlsafe(24), secrets.token_hex(16)
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    cfg = config_module.load(config_path, overrides={
        "portal": {"listen": f"{host}:{port}", "public_url": f"http://{shown_host}:{port}/",
                   "secret_key": base["portal"]["secret_key"] or secrets.token_hex(32),
                   "database": database},
        "provider": {"base_url": f"http://{shown_host}:{port + 1}", "fallback_urls": [],
                     "login": "demo", "password": "demo", "apikey": ""},
        "callback": {"token": token, "signature": "md5", "secret": secret},
        "gateway": {"firewall": "noop"},
    })
    found = config_module.problems(cfg, demo=True)
    if found:
        fail(found)
    simulator = SimulatorServer(
        host=host, port=port + 1, secret=secret, signature="md5",
        callback_url=f"http://{shown_host}:{port}/callback/smsc/{token}").start()
    app = create_app(cfg, demo=True, firewall=NoopFirewall(), simulator_url=simulator.url)
    svc = app.extensions["callpass"]
    upgrade_or_exit(svc.engine)
    if auth.list_admins(svc.engine):
        admin_line = "(the admins already in the database)"
    else:
        admin_password = secrets.token_urlsafe(12)
        auth.add_admin(svc.engine, "demo", admin_password)
        admin_line = f"(user demo, password {admin_password})"
    try:
        server = listening_server(app, host, port, cfg["portal"]["threads"],
                                  cfg["portal"]["connection_limit"])
        start_background(app)
        click.echo(f"callpass demo\n  portal:    http://{shown_host}:{port}/\n"
                   f"  admin:     http://{shown_host}:{port}/admin/  {admin_line}; "
                   "from this machine only\n"
                   f"  simulator: http://{shown_host}:{port + 1}/sim/\n"
                   f"  data:      {folder or database}\n"
                   "Open the portal, enter a phone number (e.g. +7 916 123-45-67) and press "
                   "'Simulate the call (demo)'. Ctrl+C stops.")
        server.run()
    finally:
        simulator.stop()


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@CONFIG_OPTION
def backup(file, config_path):
    """Copy the SQLite database to FILE, consistent while callpass runs (online backup API)."""
    import os
    import sqlite3

    from sqlalchemy.engine import make_url

    cfg = read_config(config_path)  # a backup must work while the config is incomplete
    url = make_url(cfg["portal"]["database"])
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        click.echo("callpass: backup copies a SQLite file; for another database use its own "
                   f"tool (e.g. pg_dump): {url.render_as_string()}", err=True)
        sys.exit(1)
    if not Path(url.database).is_file():
        click.echo(f"callpass: there is no database at {url.database}", err=True)
        sys.exit(1)
    # Written next to FILE and renamed, so FILE is never half a backup; 0600: it holds the
    # identification log.
    partial = Path(f"{file}.partial")
    partial.unlink(missing_ok=True)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(descriptor)
    source = sqlite3.connect(f"file:{url.database}?mode=ro", uri=True)
    target = sqlite3.connect(partial)
    try:
        with target:
            source.backup(target)
        target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        (check,) = target.execute("PRAGMA integrity_check").fetchone()
    finally:
        target.close()
        source.close()
    if check != "ok":
        partial.unlink()
        click.echo(f"callpass: the copy failed its integrity check: {check}", err=True)
        sys.exit(1)
    os.replace(partial, file)
    click.echo(f"backed up {url.database} to {file} ({Path(file).stat().st_size} bytes)")


@main.command("fw-up")
@CONFIG_OPTION
def fw_up(config_path):
    """Create the firewall table from the config: `callpass-fw up` with gateway.lan, the port of
    portal.listen and gateway.tls_port (what callpass-firewall.service and the OpenWrt init
    script run at boot).

    The table must come up at boot whatever else is wrong in the file, or guests would pass
    unchecked (fail closed). Only the file's form is read, not what serve checks (a provider
    password may still be missing). With a bad or unknown key, the table is made from what could
    be read (that key at its default); with a file that is not TOML at all, from the defaults
    (br-lan, 8080). The problems are then listed and the exit code is 2, after the table is up.
    """
    from .firewall import ScriptFirewall

    try:
        cfg, problems = config_module.load(config_path), []
    except config_module.ConfigError as exc:
        if not Path(config_path).is_file():
            fail(exc.problems)
        cfg, problems = exc.config, exc.problems
        if cfg is None:  # not TOML at all: the defaults and the CALLPASS_* variables
            try:
                cfg = config_module.load()
            except config_module.ConfigError as environment_exc:
                cfg = environment_exc.config
    gateway = cfg["gateway"]
    if gateway["firewall"] != "script":
        click.echo(f"gateway.firewall is {gateway['firewall']!r}: callpass-fw is not used, "
                   "nothing to do")
    else:
        try:
            table = table_of(cfg)
            ScriptFirewall(gateway["script"], gateway["script_timeout_seconds"]).up(**table)
        except ValueError as exc:
            fail([f"gateway.lan, gateway.tls_port or portal.listen: {exc}", *problems])
        except FirewallError as exc:
            click.echo(f"callpass: firewall failed: {exc}", err=True)
            sys.exit(1)
        click.echo(f"firewall table up: guests on {table['lan']}, portal port "
                   f"{table['portal_port']}")
    if problems:
        fail(problems)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8081, show_default=True, type=click.IntRange(1, 65535))
@click.option("--callback-url", required=True, help="The handler URL notifications are sent to.")
@click.option("--secret", default="", help="Checksum secret: adds md5 of phone:ts:secret.")
@click.option("--login", default="", help="Accepted login (with --password).")
@click.option("--password", default="", help="Accepted password.")
@click.option("--apikey", default="", help="Accepted API key.")
def simulator(host, port, callback_url, secret, login, password, apikey):
    """Run the SMSC simulator alone."""
    from . import simulator as simulator_module

    if bool(login) != bool(password):
        raise click.UsageError("--login and --password go together")
    click.echo(f"SMSC simulator on http://{host}:{port}/sim/ notifying {callback_url}")
    simulator_module.serve(host, port, callback_url=callback_url, secret=secret,
                           login=login, password=password, apikey=apikey)


main.add_command(admin_group)
main.add_command(venue_group)


# What one request may send, refused by waitress before callpass sees it (413 / 431). The
# largest real body is the admin's logo upload (200 KB); a body up to this size stays in memory,
# so a guest cannot make the gateway spool hundreds of megabytes to its flash before the 413.
MAX_HEADER_BYTES = 32 * 1024
MAX_BODY_BYTES = 512 * 1024
# A thread back from the database or the provider waits for the GIL until the running thread's
# switch interval is over (5 ms by default). A write transaction makes several round trips to
# PostgreSQL while every other writer of the process queues behind it, so those waits added up
# to most of a write; 0.5 ms lets the thread back in sooner. Complete guest flows, 200 guests:
# one PostgreSQL node 18 -> 29/s, SQLite 35-39 -> 40-49/s (same machine, same runs).
GIL_SWITCH_SECONDS = 0.0005


def listening_server(app, host, port, threads, connection_limit, trusted_proxy=""):
    """app on waitress, the production WSGI server (pure Python, runs on small routers),
    listening already; its run() serves. Exits 1 with a clear message when it cannot listen
    (the port is taken, the address is not this machine's).

    waitress reads each request whole in its event loop before a thread runs it, so threads are
    only held by callpass's own work. Forwarded headers are dropped unless they come from
    portal.trusted_proxy (a TLS proxy on the gateway); guests can never choose the address they
    are identified by. Slow or oversized requests cost a guest its own connection only: waitress
    reads requests in its event loop (a slow one holds no thread), caps their size, and the
    firewall caps each guest's connections to the portal.
    """
    import waitress

    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    proxy = {}
    if trusted_proxy:
        proxy = dict(trusted_proxy=trusted_proxy, trusted_proxy_count=1,
                     trusted_proxy_headers={"x-forwarded-for", "x-forwarded-proto"})
    try:
        return waitress.create_server(
            app, host=host, port=port, threads=threads, ident="callpass",
            connection_limit=connection_limit, backlog=2048,
            channel_timeout=60, cleanup_interval=15, asyncore_use_poll=True,
            max_request_header_size=MAX_HEADER_BYTES, max_request_body_size=MAX_BODY_BYTES,
            inbuf_overflow=MAX_BODY_BYTES, clear_untrusted_proxy_headers=True, **proxy)
    except (OSError, ValueError) as exc:  # waitress: ValueError for an address it cannot use
        click.echo(f"callpass: cannot listen on {host}:{port} (portal.listen): "
                   f"{getattr(exc, 'strerror', None) or exc}", err=True)
        sys.exit(1)


def start_background(app):
    """Start the firewall worker (its first pass restores the firewall from the database, in
    batches) and the maintenance thread. Returns at once: the portal listens while they work.
    Setting the returned event stops both."""
    svc = app.extensions["callpass"]
    svc.firewall_worker.start()
    stop = threading.Event()
    threading.Thread(target=maintain, args=(app, stop), name="callpass-maintenance",
                     daemon=True).start()
    return stop


def maintain(app, stop):
    """Push the walled garden once, then every minute expire verifications and close sessions
    (the only place time-derived state is written), keep the firewall's list of the provider's
    addresses current (guests must not reach them); purge the log at start and once a day. With
    several nodes on PostgreSQL one of them does the expiring and purging of each round."""
    from . import provider_hosts

    svc = app.extensions["callpass"]
    with app.app_context():
        for failure in settings.sync_garden(svc):
            log.error("walled garden: %s", failure)
    provider_addresses = provider_hosts.ProviderAddresses()
    next_purge = time.monotonic()
    while True:
        try:
            with storage.job_lock(svc.engine, "maintenance") as mine:
                if mine:  # else another node does this round's expiring
                    verification.expire_overdue(svc.engine)
                    sessions.close_expired(svc.engine)
                    if time.monotonic() >= next_purge:
                        next_purge = time.monotonic() + PURGE_SECONDS
                        log.info("daily purge: %s", idlog.purge_recorded(
                            svc.engine, svc.config["admin"]["retention_days"], "daily purge"))
            with app.app_context():
                addresses = provider_addresses.update(settings.current()["provider"])
            if addresses is not None:
                svc.firewall_worker.block_provider(addresses)
        except Exception:  # keep serving; the next round retries
            log.exception("maintenance failed")
        if stop.wait(MAINTENANCE_SECONDS):
            svc.firewall_worker.stop()
            return
