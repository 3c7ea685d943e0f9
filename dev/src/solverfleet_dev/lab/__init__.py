"""The test lab: real hosts without Docker, as Linux namespaces (see docs/LAB.md).

from solverfleet_dev.lab import Lab
lab = Lab("demo", solvers=3)
lab.up()
lab.ssh("solver1", ["hostname"])
lab.controller_exec(["ansible-playbook", "-i", str(lab.inventory_path), "site.yml"])
lab.down()
"""

from solverfleet_dev.lab.config import HostSpec, LabConfig, LabError
from solverfleet_dev.lab.lab import DownResult, HostStatus, Lab, LabStatus, UpResult

__all__ = [
    "DownResult",
    "HostSpec",
    "HostStatus",
    "Lab",
    "LabConfig",
    "LabError",
    "LabStatus",
    "UpResult",
]
