"""Apply every service's schema migrations once (the chart's migration Job; run in the AIMIS image).

    python migrate.py order entitlement metering expiry

Each service also migrates at start under the same advisory lock, so running this twice, or beside
starting pods, is harmless. Exit 1 when the database cannot be reached or a migration fails.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from pathlib import Path

import asyncpg

from shared.migrate import migrate


def target(service: str) -> tuple[str, Path]:
    """(schema, migrations folder) of `services.<service>`; the schema is the app's SCHEMA or its name."""
    app = importlib.import_module(f"services.{service}.app")
    return getattr(app, "SCHEMA", service), Path(app.__file__).with_name("migrations")


async def main(services: list[str]) -> None:
    conn = await asyncpg.connect(os.environ["AIMIS_DATABASE_URL"], timeout=30)
    try:
        for service in services:
            schema, folder = target(service)
            ran = await migrate(conn, schema, folder)
            print(f"{service}: schema {schema}: {', '.join(ran) if ran else 'up to date'}", flush=True)
    finally:
        await conn.close()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: migrate.py SERVICE...")
    asyncio.run(main(sys.argv[1:]))
