"""Team config as code: read, validate and normalize a team's accounts, users, keys and prices.

Two input formats normalize to one form (docs/ARCHITECTURE.md, "Team config"):

- the full format: ``account``, ``low_balance_alert``, ``prices`` and ``users`` with ``keys``;
- the seed's shorthand: a user with ``api_key`` instead of ``keys`` gets one key named after
  the user, with that secret and an opening balance of 0.

Every problem is reported with its path (``users[0].keys[1].ip_allowlist[0]: ...``), all of
them at once, and nothing is returned unless the whole document is valid. Secret values never
appear in messages, nor does any value that came from an ``ENV:`` reference.

Modules: ``load`` (YAML/JSON text and files, ``ENV:`` references), ``problems`` (errors with
their paths), ``fields`` (validators of single fields; money becomes integer micros there),
``parser`` (documents and single keys; the entry points re-exported here).
"""

from solverfleet.teamconfig.fields import (
    MAX_COUNT,
    MAX_SECRET_LENGTH,
    MAX_URL_LENGTH,
    MIN_SECRET_LENGTH,
    MIN_WEBHOOK_SECRET_LENGTH,
    ROLES,
)
from solverfleet.teamconfig.load import ENV_PREFIX, MAX_DEPTH, loads
from solverfleet.teamconfig.parser import (
    KEY_FIELDS,
    MAX_WEBHOOKS,
    load_file,
    parse,
    parse_key,
    parse_micros,
    parse_user,
)
from solverfleet.teamconfig.problems import MAX_ERRORS, TeamConfigError

__all__ = [
    "ENV_PREFIX",
    "KEY_FIELDS",
    "MAX_COUNT",
    "MAX_DEPTH",
    "MAX_ERRORS",
    "MAX_SECRET_LENGTH",
    "MAX_URL_LENGTH",
    "MAX_WEBHOOKS",
    "MIN_SECRET_LENGTH",
    "MIN_WEBHOOK_SECRET_LENGTH",
    "ROLES",
    "TeamConfigError",
    "load_file",
    "loads",
    "parse",
    "parse_key",
    "parse_micros",
    "parse_user",
]
