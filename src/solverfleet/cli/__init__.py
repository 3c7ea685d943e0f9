"""The ``solverfleet`` command: team config as code and day-to-day admin of a fleet.

Commands live in one module each (``apply``, ``admin``, ...); the library they drive lives
outside ``cli/`` (``AdminClient``, ``solverfleet.adminclient``). Developer commands (``local``,
``lab``) come from the separate ``solverfleet-dev`` distribution through the entry-point group
``solverfleet.commands``: a fleet host installs the runtime wheel only, so its ``--help`` lists
operator commands only.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import click

from solverfleet import __version__
from solverfleet.cli.admin import keys_group, users_group
from solverfleet.cli.agents import agents_group
from solverfleet.cli.apply import apply_command
from solverfleet.cli.audit import audit_command
from solverfleet.cli.log import log_command
from solverfleet.cli.notifications import notifications_group
from solverfleet.cli.report import report_group
from solverfleet.cli.tokens import tokens_group

COMMANDS_GROUP = "solverfleet.commands"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="solverfleet")
def main() -> None:
    """Run and administer a solverfleet: agents, collector, API keys and team config."""


main.add_command(agents_group)
main.add_command(apply_command)
main.add_command(audit_command)
main.add_command(keys_group)
main.add_command(users_group)
main.add_command(log_command)
main.add_command(notifications_group)
main.add_command(report_group)
main.add_command(tokens_group)

# Commands other installed distributions add; an operator command's name is never replaced.
for _ep in entry_points(group=COMMANDS_GROUP):
    if _ep.name not in main.commands:
        main.add_command(_ep.load(), _ep.name)

__all__ = ["COMMANDS_GROUP", "main"]
