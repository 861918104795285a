"""Alembic's entry point for callpass: migrations run on the connection storage.upgrade hands over
(`config.attributes["connection"]`), inside its transaction. There is no alembic.ini: storage.py
builds the config, so `callpass serve`/`migrate` are the one way a schema changes."""

from alembic import context

from portal.storage import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
context.run_migrations()
