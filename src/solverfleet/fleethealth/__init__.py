"""The fleet health report's host side: ``probe`` runs on a solver host and prints its figures.

The controller side (verdicts, the table, the JSON file) is ``playbooks/filter_plugins/
solverfleet_health.py``: it runs in Ansible's own Python, where solverfleet is not installed.
"""
