"""Filters for playbooks/team.yml. They run on the controller, when the play runs.

``solverfleet_team_resolve`` turns the inventory's team config into what ``POST
/admin/v1/apply`` takes: every ``ENV:NAME`` value is read from the controller's environment
and, where the solverfleet package is importable (the repository's venv), the whole config is
validated by the code ``solverfleet apply`` uses (solverfleet.teamconfig). Without it only the
ENV: references are resolved here and the collector's dry run does the validation.
Messages name paths and references, never values: the config holds API keys.

``solverfleet_team_summary`` turns the collector's apply answer into report lines, and
``solverfleet_team_refusal`` a refused call into the play's failure message; neither reads a
request body or the answer's generated secrets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

try:
    from solverfleet import teamconfig
except ImportError:  # a controller without the package: the collector validates
    teamconfig = None

ENV_PREFIX = "ENV:"
_OUTCOMES = ("created", "changed", "unchanged")


MAX_NODES = 1_000_000  # a 100,000-user team is ~1,000,000 values; an alias bomb is 10**9
MAX_DEPTH = 32  # a valid config is 6 levels deep


class _TooBig(Exception):
    pass


def _plain(value: Any, budget: list[int] | None = None, depth: int = 0) -> Any:
    """Ansible's templated data (tagged str/dict/list subclasses) as plain Python values.

    Ansible's YAML loader keeps an alias as a shared reference, so nine lines of aliases are
    a 10**9-node walk: every value spends ``budget`` and the walk stops when it is spent."""
    budget = [MAX_NODES] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0 or depth > MAX_DEPTH:
        raise _TooBig
    if isinstance(value, Mapping):
        return {
            _plain(k, budget, depth + 1): _plain(v, budget, depth + 1) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_plain(v, budget, depth + 1) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def _join(path: str, field: Any) -> str:
    return f"{path}.{field}" if path else str(field)


def _resolve_env(value: Any, env: Mapping[str, str], path: str, errors: list[str]) -> Any:
    # The same rule and messages as solverfleet.teamconfig: any string value may be ENV:NAME.
    if isinstance(value, dict):
        return {k: _resolve_env(v, env, _join(path, k), errors) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_env(v, env, f"{path}[{i}]", errors) for i, v in enumerate(value)]
    if not (isinstance(value, str) and value.startswith(ENV_PREFIX)):
        return value
    name = value[len(ENV_PREFIX) :]
    if not name:
        errors.append(f"{path or '(top level)'}: empty ENV: reference")
    elif name not in env:
        errors.append(f"{path or '(top level)'}: environment variable {name} is not set")
    else:
        return env[name]
    return None


def _keys_without_secret(config: dict) -> list[str]:
    """Ids of keys the config gives no secret (the collector generates one for a new key)."""
    found = []
    for user in config.get("users") or []:
        if not isinstance(user, dict):
            continue
        if "api_key" in user:  # the seed's shorthand: one key named after the user
            if user.get("api_key") is None and isinstance(user.get("id"), str):
                found.append(user["id"])
            continue
        for key in user.get("keys") or []:
            if isinstance(key, dict) and key.get("secret") is None:
                found.append(str(key.get("id")))
    return found


def team_resolve(config: Any, env: Mapping[str, str] | None = None) -> dict:
    """``{"config", "errors", "message", "without_secret"}`` for a team config.

    ``config`` is None whenever ``errors`` is not empty; nothing may be sent then.
    """
    env = os.environ if env is None else env
    try:
        data = _plain(config)
    except _TooBig:
        return _answer(
            None,
            [
                f"(top level): more than {MAX_NODES} values or {MAX_DEPTH} levels"
                " (YAML aliases expanding?)"
            ],
        )
    if teamconfig is not None:
        try:
            normalized = teamconfig.parse(data, env=env)
        except teamconfig.TeamConfigError as exc:
            return _answer(None, exc.errors)
        return _answer(normalized, [])
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else type(data).__name__
        return _answer(None, [f"(top level): a team config must be a mapping, not {kind}"])
    errors: list[str] = []
    resolved = _resolve_env(data, env, "", errors)
    return _answer(None if errors else resolved, errors)


def _answer(config: dict | None, errors: list[str]) -> dict:
    message = ""
    if errors:
        message = (
            f"solverfleet_team: {len(errors)} problem(s); nothing was sent to the collector"
            " (ENV:NAME values are read from the controller's environment):"
        )
        message += "".join(f"\n  {e}" for e in errors)
    return {
        "config": config,
        "errors": list(errors),
        "message": message,
        "without_secret": _keys_without_secret(config) if config is not None else [],
    }


def team_summary(answer: Mapping[str, Any], dry_run: bool = False) -> list[str]:
    """Report lines for an apply answer: counts, then one line per created or changed object."""
    items = {o: list(answer.get(o) or []) for o in _OUTCOMES}
    n = {o: len(v) for o, v in items.items()}
    if not n["created"] and not n["changed"]:
        head = f"nothing {'would change' if dry_run else 'changed'}: all {n['unchanged']} objects"
        head += " already match"
    elif dry_run:
        head = f"would create {n['created']}, change {n['changed']}; {n['unchanged']} unchanged"
    else:
        head = f"{n['created']} created, {n['changed']} changed, {n['unchanged']} unchanged"
    # A dry run's version is the one it rolled back.
    lines = [head if dry_run else f"{head} (config version {answer.get('config_version')})"]
    for outcome, planned in (("created", "would create"), ("changed", "would change")):
        for item in items[outcome]:
            fields = item.get("fields") or []
            detail = f" ({', '.join(str(f) for f in fields)})" if fields else ""
            lines.append(
                f"{planned if dry_run else outcome}: {item.get('kind')} {item.get('id')}{detail}"
            )
    return lines


def team_refusal(result: Mapping[str, Any], step: str = "apply") -> str:
    """Why the collector did not take the config, from a ``uri`` result (status, json, msg)."""
    status = result.get("status", -1)
    answer = result.get("json") if isinstance(result.get("json"), Mapping) else {}
    if status == -1 or not answer:
        reason = f"HTTP {status}" if status != -1 else "no answer"
        text = f"{reason} from the collector at {result.get('url', '?')}: {result.get('msg', '')}"
    else:
        text = f"the collector refused the {step}: {status} {answer.get('error')}: "
        errors = [str(e) for e in answer.get("errors") or []]
        if len(errors) > 1:
            text += f"{len(errors)} problems:" + "".join(f"\n  {e}" for e in errors)
        else:
            text += str(answer.get("message"))
        if status == 401:
            text += " (solverfleet_admin_token is not the collector's admin token)"
    return f"{text}\nNothing was applied."


class FilterModule:
    def filters(self) -> dict:
        return {
            "solverfleet_team_resolve": team_resolve,
            "solverfleet_team_summary": team_summary,
            "solverfleet_team_refusal": team_refusal,
        }
