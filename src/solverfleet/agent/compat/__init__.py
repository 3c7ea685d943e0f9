"""The 2captcha-style surface: ``/in.php`` and ``/res.php`` (docs/PROTOCOL_2CAPTCHA.md).

routes.py speaks HTTP, methods.py turns parameters into a solve body, solve.py runs a task's
life on the native solve machinery, tasks.py keeps tasks in memory, answers.py spells every
protocol text. ``register`` attaches all of it to an app and its agent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from solverfleet.agent.compat import routes, solve
from solverfleet.agent.compat.tasks import TaskStore
from solverfleet.agent.gauges import gauge

if TYPE_CHECKING:
    from flask import Flask
    from prometheus_client import CollectorRegistry

    from solverfleet.agent.lifecycle import Agent

protocol_error = routes.protocol_error  # the surface's own error answers (HTTP 200 texts)


class TasksCollector(Collector):
    def __init__(self, tasks: TaskStore) -> None:
        self._tasks = tasks

    def collect(self) -> Iterator[Metric]:
        yield gauge(
            "solverfleet_agent_compat_tasks", "in.php tasks held in memory.", len(self._tasks)
        )


def register(app: Flask, agent: Agent, registry: CollectorRegistry) -> None:
    """The routes, the agent's task store (``agent.tasks``), its gauge, and the stop hook that
    releases every undelivered answer."""
    settings = agent.settings
    agent.tasks = TaskStore(settings.node_id, settings.compat_result_ttl, settings.compat_max_tasks)
    registry.register(TasksCollector(agent.tasks))
    app.register_blueprint(routes.bp)
    agent.stop_hooks.append(lambda: solve.abandon_all(agent))
