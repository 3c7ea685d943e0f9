"""`python -m solverfleet.lab ...` — the same commands as `solverfleet lab ...`."""

from solverfleet.lab.cli import lab_group

if __name__ == "__main__":
    lab_group(prog_name="solverfleet lab")
