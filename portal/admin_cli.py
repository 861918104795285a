"""`callpass admin add|passwd|remove|list`: venue admin accounts, from the gateway's shell."""

import getpass
import sys

import click

from . import audit, auth, venues
from .command import CONFIG_OPTION, open_database


def read_password(name):
    """A new password: a hidden prompt asked twice on a terminal, else the first line of stdin."""
    if sys.stdin.isatty():
        return click.prompt(f"Password for {name} (at least {auth.MIN_PASSWORD_LENGTH} characters)",
                            hide_input=True, confirmation_prompt="Repeat the password")
    return sys.stdin.readline().rstrip("\r\n")


def actor():
    """Who ran the command, for the audit log."""
    try:
        return f"shell:{getpass.getuser()}"
    except (KeyError, OSError):
        return "shell"


def change(engine, action, audit_action, name):
    """Run action(); print an AccountError and exit 1, else record it in the audit log."""
    try:
        action()
    except auth.AccountError as exc:
        click.echo(f"callpass: {exc}", err=True)
        sys.exit(1)
    audit.record(engine, actor(), "local", audit_action, name)


@click.group("admin")
def admin_group():
    """Venue admin accounts (the people who may open /admin)."""


@admin_group.command("add")
@click.argument("name")
@click.option("--venue", "venue_slug", metavar="SLUG",
              help="An admin of this venue only (default: of the whole chain).")
@CONFIG_OPTION
def add(name, venue_slug, config_path):
    """Create an admin NAME; the password comes from a prompt or stdin."""
    engine = open_database(config_path)
    venue_id = None
    if venue_slug:
        row = venues.by_slug(engine, venue_slug)
        if row is None or row.id == venues.MAIN_VENUE:
            click.echo(f"callpass: there is no venue {venue_slug!r} (see /admin/venues; the "
                       "main venue's admins are the chain's: leave out --venue)", err=True)
            sys.exit(1)
        venue_id = row.id
    change(engine, lambda: auth.add_admin(engine, auth.check_name(name), read_password(name),
                                          venue_id),
           audit.ADMIN_ADD, name)
    click.echo(f"admin {name} created; sign in at /admin/login")


@admin_group.command("passwd")
@click.argument("name")
@CONFIG_OPTION
def passwd(name, config_path):
    """Set a new password for admin NAME: their sessions end everywhere, their browsers must
    sign in anew, and a lock on the account after failed sign-ins is lifted."""
    engine = open_database(config_path)
    if name not in [row.name for row in auth.list_admins(engine)]:
        click.echo(f"callpass: there is no admin named {name!r}", err=True)
        sys.exit(1)
    change(engine, lambda: auth.set_password(engine, name, read_password(name)),
           audit.ADMIN_PASSWORD, name)
    click.echo(f"password of {name} changed; every browser signed in as {name} is signed out "
               "and the account's sign-in lock, if any, is lifted")


@admin_group.command("remove")
@click.argument("name")
@CONFIG_OPTION
def remove(name, config_path):
    """Delete admin NAME; never the last admin of the whole chain (one without --venue), as on
    the admin page: then nobody could manage the venues, the settings or the other admins."""
    engine = open_database(config_path)
    change(engine, lambda: auth.remove_admin(engine, name, keep_a_chain_admin=True),
           audit.ADMIN_REMOVE, name)
    click.echo(f"admin {name} removed")


@admin_group.command("list")
@CONFIG_OPTION
def list_admins(config_path):
    """List the admins."""
    engine = open_database(config_path)
    rows = auth.list_admins(engine)
    if not rows:
        click.echo("no admins yet; create one with: callpass admin add NAME --config FILE")
    slugs = venues.slugs(engine)
    for row in rows:
        of_venue = f"\tvenue {slugs.get(row.venue_id, '?')}" if row.venue_id else ""
        click.echo(f"{row.name}\tcreated {row.created_at:%Y-%m-%d %H:%M} UTC{of_venue}")
