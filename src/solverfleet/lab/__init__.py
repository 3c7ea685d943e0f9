"""The test lab: real hosts without Docker, as Linux namespaces (see docs/LAB.md).

from solverfleet.lab import Lab
lab = Lab("demo", solvers=3)
lab.up()
lab.ssh("solver1", ["hostname"])
lab.controller_exec(["ansible-playbook", "-i", str(lab.inventory_path), "site.yml"])
lab.down()
"""

from solverfleet.lab.config import HostSpec, LabConfig, LabError
from solverfleet.lab.lab import DownResult, HostStatus, Lab, LabStatus, UpResult

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
