"""The client protocols of existing captcha services (docs/PROTOCOLS.md): the classic
``/in.php`` / ``/res.php`` and the JSON task protocol (``/createTask``, ``/getTaskResult``, ...).

routes.py speaks the classic HTTP, routes_json.py the JSON one (tasks_json.py: its task types
and words); methods.py turns parameters into a solve body, solve.py runs a task's life on the
native solve machinery, tasks.py keeps tasks in memory (one store for both protocols),
answers.py spells every classic protocol text. options.py checks soft_id and pingback URLs,
pingback.py sends pingbacks (pingback_url.py: the address checks and the POST),
pingback_actions.py serves res.php's add/get/del_pingback; forward.py fetches another agent's
task from it, persist.py keeps undelivered tasks over a graceful restart. ``register``
attaches all of it to an app.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from solverfleet.agent.compat import forward, persist, pingback, routes, routes_json
from solverfleet.agent.compat.tasks import TaskStore
from solverfleet.agent.gauges import gauge

if TYPE_CHECKING:
    from flask import Flask
    from prometheus_client import CollectorRegistry

    from solverfleet.agent.lifecycle import Agent

# Each protocol answers its own paths' framework errors (HTTP 200, in its own words).
protocol_errors = (routes.protocol_error, routes_json.protocol_error)


class TasksCollector(Collector):
    def __init__(self, tasks: TaskStore, pingbacks: pingback.Sender | None = None) -> None:
        self._tasks = tasks
        self._pingbacks = pingbacks

    def collect(self) -> Iterator[Metric]:
        yield gauge(
            "solverfleet_agent_compat_tasks",
            "in.php and createTask tasks held in memory.",
            len(self._tasks),
        )
        if self._pingbacks is not None:
            yield gauge(
                "solverfleet_agent_pingbacks_queued",
                "Pingbacks waiting to be sent or retried.",
                self._pingbacks.queued,
            )
            for outcome, count in (("sent", self._pingbacks.sent),
                                   ("failed", self._pingbacks.failed)):  # fmt: skip
                counter = CounterMetricFamily(
                    f"solverfleet_agent_pingbacks_{outcome}",
                    f"Pingbacks {outcome} (failed: given up after the last retry).",
                )
                counter.add_metric([], count)
                yield counter


def register(app: Flask, agent: Agent, registry: CollectorRegistry) -> None:
    """The routes, the agent's task store (``agent.tasks``, with the tasks the previous process
    kept), its gauge, and the stop hook that releases every hold and keeps the undelivered
    answers for the next start (persist.py)."""
    settings = agent.settings
    agent.tasks = TaskStore(settings.node_id, settings.compat_result_ttl, settings.compat_max_tasks)
    agent.tasks.kept = persist.load(agent)
    agent.peers = forward.Peers(settings.collector_ca_file, settings.peer_timeout)
    agent.pingbacks = pingback.Sender(agent)
    registry.register(TasksCollector(agent.tasks, agent.pingbacks))
    app.register_blueprint(routes.bp)
    app.register_blueprint(routes_json.bp)
    agent.stop_hooks.append(agent.pingbacks.stop)
    agent.stop_hooks.append(lambda: persist.stop(agent))
