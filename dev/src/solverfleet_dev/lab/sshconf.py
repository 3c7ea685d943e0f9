"""SSH material of one lab: the key pair, one host key, sshd and client configs, known_hosts.

One host key per lab (not per host) keeps known_hosts trivial while still letting the client
verify hosts strictly; a lab's keys never leave its state directory.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from solverfleet_dev.lab.config import HostSpec, LabConfig, LabError

# Where the init script copies the host key and sshd_config, inside the host's private /run.
HOST_RUN_DIR = "/run/solverfleet-lab"


def ensure_keypair(path: Path, comment: str) -> None:
    if path.exists() and path.with_suffix(".pub").exists():
        return
    path.unlink(missing_ok=True)
    path.with_suffix(".pub").unlink(missing_ok=True)
    proc = subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise LabError(f"ssh-keygen failed for {path}: {proc.stderr.strip()}")


def public_key(path: Path) -> str:
    return path.with_suffix(".pub").read_text().strip()


def sshd_config(host: HostSpec, host_key: str = f"{HOST_RUN_DIR}/ssh_host_ed25519_key") -> str:
    return f"""\
# solverfleet lab host {host.name}: root login with the lab key only.
ListenAddress {host.address}:22
HostKey {host_key}
PidFile /run/sshd.pid
AuthorizedKeysFile .ssh/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
# No PAM session stack inside a namespace host; host dirs come from overlays, not owned paths.
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp
# Ansible opens many sessions at once; the defaults (10:30:100, 10) make it flaky.
MaxStartups 100:30:200
MaxSessions 64
"""


def ssh_config(cfg: LabConfig) -> str:
    lines = [
        f"# solverfleet lab {cfg.name!r}. Hosts are reachable only from the controller namespace:",
        f"#   ip netns exec {cfg.controller_netns} ssh -F {cfg.ssh_config_path} solver1",
        "",
    ]
    for host in cfg.hosts:
        lines += [f"Host {host.name}", f"  HostName {host.address}", ""]
    lines += [
        "Host *",
        "  User root",
        "  Port 22",
        f"  IdentityFile {cfg.key_path}",
        "  IdentitiesOnly yes",
        f"  UserKnownHostsFile {cfg.known_hosts_path}",
        "  GlobalKnownHostsFile /dev/null",
        "  StrictHostKeyChecking yes",
        "  CheckHostIP no",
        "  BatchMode yes",
        "  ConnectTimeout 5",
        "  ServerAliveInterval 5",
        "  LogLevel ERROR",
        "",
    ]
    return "\n".join(lines)


def known_hosts(cfg: LabConfig) -> str:
    key = public_key(cfg.host_key_path).split()[:2]  # drop the comment
    return "".join(f"{h.name},{h.address} {' '.join(key)}\n" for h in cfg.hosts)
