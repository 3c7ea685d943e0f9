"""``python -m solverfleet.collector.store [DB_URL]``: apply schema migrations and exit.

Without an argument the database comes from the collector's settings (``SOLVERFLEET_DB`` or
the YAML file). Useful before switching traffic to a new release; the collector also
migrates at start.
"""

from __future__ import annotations

import sys

from solverfleet.collector.settings import CollectorSettings
from solverfleet.collector.store import Database, current_version, migrate
from solverfleet.settings import load_settings


def main(argv: list[str]) -> int:
    if argv:
        url = argv[0]
    else:
        # Tokens are irrelevant here; placeholders keep the settings check quiet.
        url = load_settings(
            CollectorSettings, overrides={"fleet_token": "-", "admin_token": "-"}
        ).db
    db = Database(url)
    applied = migrate(db)
    version = current_version(db)
    print(f"{db.url.redacted()}: schema version {version}; applied now: {applied or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
