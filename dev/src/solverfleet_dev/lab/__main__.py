"""`python -m solverfleet_dev.lab ...` — the same commands as `solverfleet lab ...`."""

from solverfleet_dev.lab.cli import lab_group

if __name__ == "__main__":
    lab_group(prog_name="solverfleet lab")
