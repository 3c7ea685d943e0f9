"""The fleet health report: ``probe`` runs on a solver host and prints its figures, ``rules``
judges every host's figures on the controller, ``colours`` is what both say about colours.

playbooks/filter_plugins/solverfleet_health.py loads this package by file path into Ansible's
own Python, where solverfleet is not installed: keep this file free of imports, and ``rules``
and ``colours`` on the standard library.
"""
