"""Alembic environment: runs on the connection that ``bot.storage.migrate`` passes in."""

from alembic import context
from sqlalchemy import create_engine

from bot.storage.tables import Base

target_metadata = Base.metadata
config = context.config
connection = config.attributes.get("connection")

if connection is None:
    # Offline use by maintainers (alembic revision --autogenerate) with a plain sqlalchemy.url.
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
