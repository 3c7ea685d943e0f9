"""Run the repository's playbooks against a namespace lab, and read what they did.

The fleet addresses (198.51.100.x) answer only inside the lab's controller namespace, so
``ansible-playbook`` runs there (``Lab.controller_exec``) with the lab's generated inventory and
this repository's ``ansible.cfg`` and roles. ``PLAY RECAP`` is parsed into numbers per host.

    run = run_playbook(lab, "site.yml", extra_vars={"solverfleet_wheelhouse_dir": str(wh)})
    run.assert_ok()
    assert run.changed == 0

``controller_request`` makes one HTTP(S) call from the controller namespace (stdlib only, so
no curl is needed), for health checks and API calls against lab hosts.

What every ``run_playbook`` of this process printed is also kept, one file per run, in
``output_dir()`` (removed when the process exits), for the lab's secret scan.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from solverfleet_dev.lab import controller
from solverfleet_dev.lab.controller import Response, controller_request

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO / "playbooks"
VENV_BIN = controller.VENV_BIN
__all__ = ["Response", "controller_request"]  # re-exported for the lab tests

# A loaded 2-core machine runs site.yml in 2-5 minutes; SOLVERFLEET_PLAYBOOK_TIMEOUT overrides.
PLAYBOOK_TIMEOUT = float(os.environ.get("SOLVERFLEET_PLAYBOOK_TIMEOUT", "900"))

_RECAP_LINE = re.compile(r"^(?P<host>\S+)\s+:\s+(?P<counts>(?:[a-z]+=\d+\s*)+)$")
_COUNT = re.compile(r"([a-z]+)=(\d+)")


@dataclass(frozen=True)
class HostRecap:
    ok: int = 0
    changed: int = 0
    unreachable: int = 0
    failed: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0


@dataclass
class PlaybookRun:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    recap: dict[str, HostRecap] = field(default_factory=dict)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def changed(self) -> int:
        return sum(r.changed for r in self.recap.values())

    @property
    def failed_hosts(self) -> list[str]:
        return sorted(h for h, r in self.recap.items() if r.failed or r.unreachable)

    def changed_tasks(self) -> list[str]:
        """'TASK [...] host' for every task that reported changed (to explain changed != 0)."""
        found, task = [], ""
        for line in self.stdout.splitlines():
            if line.startswith("TASK ["):
                task = line.rstrip("* ").strip()
            elif line.startswith("changed: ["):
                found.append(f"{task} {line.split(']')[0]}]")
        return found

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output.splitlines()[-lines:])

    def assert_ok(self) -> None:
        if self.returncode != 0 or self.failed_hosts or not self.recap:
            raise AssertionError(
                f"{' '.join(self.argv[:4])} ... exited {self.returncode} "
                f"after {self.seconds:.0f}s; failed/unreachable: {self.failed_hosts}\n"
                f"--- output tail ---\n{self.tail()}"
            )


def parse_recap(text: str) -> dict[str, HostRecap]:
    """Host -> counts from the last PLAY RECAP block of ansible-playbook's output."""
    start = text.rfind("PLAY RECAP")
    if start < 0:
        return {}
    recap: dict[str, HostRecap] = {}
    for line in text[start:].splitlines()[1:]:
        line = line.strip()
        if not line:
            if recap:
                break
            continue
        m = _RECAP_LINE.match(line)
        if not m:
            break
        counts = {k: int(v) for k, v in _COUNT.findall(m.group("counts"))}
        recap[m.group("host")] = HostRecap(**{k: v for k, v in counts.items() if k in _FIELDS})
    return recap


_FIELDS = set(HostRecap.__dataclass_fields__)


def ansible_env(lab: Any, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return controller.ansible_env(lab, REPO, extra)


def run_playbook(
    lab: Any,
    playbook: str | os.PathLike[str],
    *,
    extra_vars: Mapping[str, Any] | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = PLAYBOOK_TIMEOUT,
) -> PlaybookRun:
    """ansible-playbook PLAYBOOK against the lab inventory, inside the controller namespace.
    A run past ``timeout`` is killed and comes back with returncode -9 and what it printed."""
    path = Path(playbook)
    if not path.is_absolute():
        path = PLAYBOOKS / path
    argv = controller.playbook_argv(lab, path, extra_vars, args)
    started = time.monotonic()
    try:
        proc = lab.controller_exec(argv, env=ansible_env(lab, env), cwd=REPO, timeout=timeout)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        code, out = -9, _text(exc.stdout)
        err = _text(exc.stderr) + f"\n(killed after {timeout:.0f}s)"
    seconds = time.monotonic() - started
    _keep_output(path, code, out, err)
    return PlaybookRun(argv, code, out, err, seconds, parse_recap(out))


_output_dir: Path | None = None


def output_dir() -> Path:
    """The directory holding what every run_playbook of this process printed (made on first
    use, removed at exit): ``NNN-<playbook>.log`` per run, stdout then stderr."""
    global _output_dir
    if _output_dir is None:
        _output_dir = Path(tempfile.mkdtemp(prefix=f"solverfleet-ansible-{os.getpid()}-"))
        atexit.register(shutil.rmtree, _output_dir, ignore_errors=True)
    return _output_dir


def _keep_output(playbook: Path, code: int, out: str, err: str) -> None:
    # The playbook's name and exit code only: the argv may carry extra vars, and what is kept
    # here is what Ansible itself printed.
    folder = output_dir()
    n = len(list(folder.glob("*.log"))) + 1
    text = f"# {playbook.name} exited {code}\n--- stdout\n{out}\n--- stderr\n{err}\n"
    (folder / f"{n:03d}-{playbook.stem}.log").write_text(text)


def _text(data: bytes | str | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else data or ""


def build_wheelhouse(dest: Path) -> Path:
    """What `make wheelhouse` builds: the project wheel and every pinned runtime dependency."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            str(VENV_BIN / "python"), "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
            "-c", str(REPO / "constraints.txt"), "-w", str(dest), str(REPO),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    return dest
