"""What every `callpass` command starts with: the --config option, reading and checking the
config, and opening the app or the database with the schema up to date.

The commands themselves live in cli.py (the portal's) and admin_cli.py (admin accounts); both
take their set-up from here, so neither imports the other's internals.
"""

import sys

import click
from sqlalchemy.exc import OperationalError

from . import config as config_module
from . import create_app, storage

CONFIG_OPTION = click.option("--config", "config_path", required=True,
                             type=click.Path(dir_okay=False), help="The callpass config file.")


def fail(problems):
    """Print every problem with the config and exit 2."""
    click.echo("callpass: the configuration cannot be used:", err=True)
    for problem in problems:
        click.echo(f"  - {problem}", err=True)
    sys.exit(2)


def read_config(path):
    """Load a config without the checks serve needs (for commands that use a few keys only)."""
    try:
        return config_module.load(path)
    except config_module.ConfigError as exc:
        fail(exc.problems)


def load_config(path, demo=False):
    """Load a config and check all of it, or exit with every problem listed (exit 2)."""
    cfg = read_config(path)
    found = config_module.problems(cfg, demo=demo)
    if found:
        fail(found)
    return cfg


def open_app(config_path):
    """The app for a fully checked config, its database schema upgraded."""
    app = create_app(load_config(config_path))
    upgrade_or_exit(app.extensions["callpass"].engine)
    return app


def upgrade_or_exit(engine):
    """storage.upgrade, or exit 2 naming the database when it cannot be opened (a missing
    folder, no write permission, a server that is down)."""
    try:
        storage.upgrade(engine)
    except OperationalError as exc:
        where = engine.url.render_as_string(hide_password=True)
        fail([f"portal.database: cannot open {where}: {exc.orig}"])


def open_database(config_path):
    """The config's database, schema upgraded. Only portal.database is needed, so admin
    accounts can be managed before the rest of the config is complete."""
    cfg = read_config(config_path)
    found = config_module.storage_problems(cfg["portal"])
    if found:
        fail(found)
    engine = storage.connect(cfg["portal"]["database"])
    upgrade_or_exit(engine)
    return engine
