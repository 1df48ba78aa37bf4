"""Apply (or generate) Alembic migrations: ``python -m crm_store.migrate [--url URL] [revision "msg"]``."""

from __future__ import annotations

import argparse
import logging
import os
import pathlib

from alembic import command
from alembic.config import Config

from crm_store.db import DEFAULT_DATABASE_URL, make_engine, normalise_url

logger = logging.getLogger(__name__)
MIGRATIONS = pathlib.Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision``."""
    config = alembic_config(url)
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default=os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    parser.add_argument("action", nargs="?", default="upgrade", choices=["upgrade", "revision"])
    parser.add_argument("message", nargs="?", default="")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.action == "revision":
        command.revision(alembic_config(args.url), message=args.message, autogenerate=True)
    else:
        upgrade(args.url)


if __name__ == "__main__":
    main()
