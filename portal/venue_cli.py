"""`callpass venue add|set|list`: a chain's venues from a shell (a script can add a thousand of
them); the same checks and audit entries as the venue pages under /admin/venues."""

import sys

import click

from . import audit, venues
from .admin_cli import actor
from .command import CONFIG_OPTION, open_database

ROUTER_OPTIONS = (
    click.option("--name", help="The venue's name for admins."),
    click.option("--identity", "nas_identifier",
                 help="Its router's identity: a MikroTik's /system identity, or NAS-Identifier."),
    click.option("--network", "called_station",
                 help="The Wi-Fi network in its RADIUS Called-Station-Id (after the MAC)."),
    click.option("--address", "nas_ip",
                 help="Its RADIUS router's address, for a router that sends no NAS-Identifier."),
    click.option("--unifi-site", "unifi_site", help="Its UniFi controller site."),
    click.option("--opennds-gateway", "opennds_gateway",
                 help="The gatewayname of its openNDS gateway (callpass as its remote FAS)."),
    click.option("--faskey", "opennds_faskey",
                 help="That gateway's faskey; - reads it from the standard input."),
)


def router_options(command):
    for option in reversed(ROUTER_OPTIONS):
        command = option(command)
    return command


# How the problems name the fields: as the options that set them.
OPTION_OF = {"slug": "SLUG", "name": "--name", "nas_identifier": "--identity",
             "called_station": "--network",
             "nas_ip": "--address", "unifi_site": "--unifi-site",
             "opennds_gateway": "--opennds-gateway", "opennds_faskey": "--faskey"}


def save(engine, typed, venue_id, action, has_faskey=False):
    """Check and store the venue; print the problems and exit 1 when it cannot be."""
    if typed.get(venues.SECRET) == "-":
        typed[venues.SECRET] = sys.stdin.readline().strip()
    try:
        values = venues.read_form(typed, is_main=venue_id == venues.MAIN_VENUE,
                                  has_faskey=has_faskey)
        venues.save(engine, values, venue_id)
    except venues.Invalid as exc:
        for field, (msgid, params) in exc.errors.items():
            click.echo(f"callpass: {OPTION_OF[field]}: {msgid % params if params else msgid}",
                       err=True)
        sys.exit(1)
    audit.record(engine, actor(), "local", action, venues.filled(values))
    return values


@click.group("venue")
def venue_group():
    """The venues of a chain (what guests arrive through)."""


@venue_group.command("add")
@click.argument("slug")
@router_options
@CONFIG_OPTION
def add(slug, config_path, **names):
    """Add venue SLUG (lowercase letters, digits, dashes)."""
    engine = open_database(config_path)
    typed = {"slug": slug, **{key: value or "" for key, value in names.items()}}
    typed["name"] = typed["name"] or slug
    save(engine, typed, None, audit.VENUE_ADD)
    click.echo(f"venue {slug} added")


@venue_group.command("set")
@click.argument("slug")
@router_options
@CONFIG_OPTION
def change(slug, config_path, **names):
    """Change venue SLUG: the options given replace its values ("" clears one)."""
    engine = open_database(config_path)
    row = venues.by_slug(engine, slug)
    if row is None:
        click.echo(f"callpass: there is no venue {slug!r}", err=True)
        sys.exit(1)
    typed = {field: getattr(row, field) or "" for field in venues.FIELDS}
    typed.update({key: value for key, value in names.items() if value is not None})
    save(engine, typed, row.id, audit.VENUE_CHANGE, has_faskey=bool(row.opennds_faskey))
    click.echo(f"venue {slug} changed")


@venue_group.command("list")
@CONFIG_OPTION
def list_venues(config_path):
    """List the venues with their router names and guests online now."""
    engine = open_database(config_path)
    for row, online, _last_day in venues.listing(engine):
        names = " ".join(f"{label}={value}" for label, value in (
            ("identity", row.nas_identifier), ("network", row.called_station),
            ("address", row.nas_ip),
            ("unifi-site", row.unifi_site), ("opennds-gateway", row.opennds_gateway)) if value)
        click.echo(f"{row.slug}\t{row.name or '-'}\t{names or '-'}\tonline {online}")
