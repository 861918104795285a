"""`callpass admin …` and `callpass purge` (placeholder: filled in by the admin issue)."""

import click


@click.group("admin")
def admin_group():
    """Venue admin accounts."""
