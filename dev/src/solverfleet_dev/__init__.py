"""Developer tools around solverfleet, kept out of the runtime wheel fleet hosts install.

``lab`` (network-namespace hosts for the Ansible tests, ``solverfleet lab``), ``localstack``
(a whole fleet as local processes, ``solverfleet local``) and the demo team configs
(``examples/``). The commands reach ``solverfleet`` through the entry-point group
``solverfleet.commands`` (see ``pyproject.toml``).
"""
