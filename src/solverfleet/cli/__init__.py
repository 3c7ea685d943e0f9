"""The ``solverfleet`` command: a local stack, team config as code, day-to-day admin.

Commands live in one module each (``local``, ``apply``, ``admin``, ...); the lab's commands come
from ``solverfleet.lab.cli``. The libraries they drive live outside ``cli/``: ``LocalStack``
(``solverfleet.localstack``) and ``AdminClient`` (``solverfleet.adminclient``).
"""

from __future__ import annotations

import click

from solverfleet import __version__
from solverfleet.cli.admin import keys_group, users_group
from solverfleet.cli.agents import agents_group
from solverfleet.cli.apply import apply_command
from solverfleet.cli.audit import audit_command
from solverfleet.cli.local import local_command
from solverfleet.cli.log import log_command
from solverfleet.cli.notifications import notifications_group
from solverfleet.cli.report import report_group
from solverfleet.cli.tokens import tokens_group
from solverfleet.lab.cli import lab_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="solverfleet")
def main() -> None:
    """Run and administer a solverfleet: agents, collector, API keys and team config."""


main.add_command(local_command)
main.add_command(agents_group)
main.add_command(apply_command)
main.add_command(audit_command)
main.add_command(keys_group)
main.add_command(users_group)
main.add_command(lab_group)
main.add_command(log_command)
main.add_command(notifications_group)
main.add_command(report_group)
main.add_command(tokens_group)

__all__ = ["main"]
