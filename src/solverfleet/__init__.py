"""solverfleet: everything around a solver worker — agent, collector, CLI, Ansible."""

__version__ = "0.1.0"
