"""Secrets stay secret (promise 8), checked on the whole lab session: every key secret and
token used in this run is searched for in every log on every lab host, the hosts' consoles, the
agents' and collector's state (usage spool, database), /metrics and status of every service,
the admin API's answers, every dashboard page after logging in, and everything Ansible printed
in this session (tests.support.ansible keeps it): found nowhere. Tokens may sit in the hosts'
settings files (/etc/solverfleet, 0640); key secrets not even there.

This module runs after every other lab module (tests/lab/conftest.py, ``_LAST``), so it sees
what they did. Before scanning it sends the lab key down every path that carries one (bearer
header, ``in.php`` form and query string, ``res.php``, a refused dashboard login, an unknown
key). The scan proves it can fail: canaries planted in a host's log are found (whole and
truncated), and the fleet token is found in every agent's settings file, where it belongs.
"""

from __future__ import annotations

import io
import json
import secrets
import subprocess
import sys
import tarfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import ansible
from tests.support.labfleet import (
    ADMIN_PORT,
    AGENT_PORT,
    KEY,
    SKIP,
    TOKEN,
    Fleet,
    SessionSecret,
    admin_get,
    apply_key,
    register_secret,
    session_secrets,
    solve,
    wait_for_response,
)

pytestmark = [pytest.mark.lab, pytest.mark.skipif(SKIP is not None, reason=str(SKIP))]

# Where each host's files are read (inside the host, so /var/log includes what the host sees of
# the machine's), and what they are: tokens belong in "config", nothing belongs elsewhere.
HOST_PATHS = {
    "var/log": "logs",
    "var/lib/solverfleet": "state",
    "etc/solverfleet": "config",
    "etc/haproxy": "config",
}
CANARY_LOG = "/var/log/solverfleet/secret-scan-canary.log"


# --- the scanner -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    category: str  # logs, state, config, metrics, admin-api, dashboard, ansible
    where: str
    data: bytes


@dataclass(frozen=True)
class Finding:
    secret: SessionSecret
    blob: Blob
    part: str  # "whole", or "first half" / "second half": a truncated secret leaks too
    count: int  # occurrences of that part in the blob
    context: str  # around the first one

    @property
    def allowed(self) -> bool:
        """A token in settings; a host's own credential in its own host's settings only."""
        own_host = not self.secret.host or self.blob.where.startswith(f"{self.secret.host}:")
        return self.blob.category == "config" and self.secret.kind == TOKEN and own_host

    def __str__(self) -> str:
        return (
            f"{self.secret.label} ({self.secret.kind}, {self.part}) {self.count}x in "
            f"{self.blob.category} {self.blob.where}: ...{self.context}..."
        )


def needles(value: str) -> list[tuple[str, bytes]]:
    """The secret, and each half of it when a half is long enough (16+) not to match by chance."""
    found = [("whole", value.encode())]
    half = len(value) // 2
    if half >= 16:
        found += [("first half", value[:half].encode()), ("second half", value[half:].encode())]
    return found


def scan(blobs: Iterable[Blob], secrets_: Iterable[SessionSecret]) -> list[Finding]:
    """Every place a secret (or half of one) occurs; one finding per secret and blob."""
    patterns = [(s, needles(s.value)) for s in secrets_]
    findings = []
    for blob in blobs:
        for secret, parts in patterns:
            for part, needle in parts:
                at = blob.data.find(needle)
                if at >= 0:
                    around = blob.data[max(0, at - 60) : at + len(needle) + 60]
                    context = around.decode(errors="replace").replace("\n", "\\n")
                    count = blob.data.count(needle)
                    findings.append(Finding(secret, blob, part, count, context))
                    break
    return findings


# --- what is scanned ---------------------------------------------------------------------------


def host_files(fleet: Fleet, host: str) -> list[Blob]:
    """Every regular file under HOST_PATHS as the host sees it (tar inside its namespaces)."""
    argv = ["tar", "-C", "/", "-cf", "-", "--ignore-failed-read", "--warning=no-file-changed"]
    proc = subprocess.run(
        fleet.lab.host_argv(host, [*argv, *HOST_PATHS]),
        capture_output=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode in (0, 1), f"{host}: tar exited {proc.returncode}: {proc.stderr[-500:]}"
    blobs = []
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        for member in tar:
            if not member.isfile():
                continue
            category = next(c for p, c in HOST_PATHS.items() if member.name.startswith(p + "/"))
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            blobs.append(Blob(category, f"{host}:/{member.name}", data))
    return blobs


def journals(fleet: Fleet) -> list[Blob]:
    """Each systemd host's journal, every field of every entry (decompressed by journalctl)."""
    if fleet.lab.config.init != "systemd":
        return []
    blobs = []
    for host in fleet.lab.hosts:
        argv = fleet.lab.host_argv(host.name, ["journalctl", "--no-pager", "-o", "export"])
        proc = subprocess.run(argv, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, f"{host.name}: journalctl: {proc.stderr[-300:]!r}"
        blobs.append(Blob("logs", f"{host.name}:journal", proc.stdout))
    return blobs


def consoles(fleet: Fleet) -> list[Blob]:
    """The lab hosts' consoles on the controller (init and sshd write there)."""
    root = Path(fleet.lab.state_dir) / "hosts"
    return [
        Blob("logs", f"controller:{path}", path.read_bytes())
        for path in sorted(root.glob("*/console.log"))
    ]


_FETCH = r"""
import json, ssl, sys, urllib.error, urllib.request
ctx = ssl.create_default_context(cafile="/etc/solverfleet/tls/ca.pem")
out = {}
for url in sys.argv[1:]:
    try:
        with urllib.request.urlopen(url, timeout=10, context=ctx) as resp:
            out[url] = [resp.status, resp.read().decode(errors="replace")]
    except urllib.error.HTTPError as exc:
        out[url] = [exc.code, exc.read().decode(errors="replace")]
    except OSError as exc:
        out[url] = [-1, repr(exc)]
print(json.dumps(out))
"""


def loopback_pages(fleet: Fleet, host: str, urls: list[str]) -> dict[str, tuple[int, str]]:
    """GET ``urls`` from inside ``host`` (the agents serve /metrics and status to loopback)."""
    proc = fleet.lab.host_exec(host, ["python3", "-c", _FETCH, *urls], check=True, timeout=60)
    return {url: (status, body) for url, (status, body) in json.loads(proc.stdout).items()}


def service_pages(fleet: Fleet) -> list[Blob]:
    """/metrics and status of every agent (both colours), the collector and HAProxy, and the
    collector's admin API answers that list keys, tokens, usage and reports."""
    blobs = []
    for host in fleet.solvers:
        urls = [
            f"https://127.0.0.1:{port}/{path}"
            for port in (AGENT_PORT, AGENT_PORT + 1)  # blue, and green if it runs
            for path in ("metrics", "admin/status", "readyz")
        ]
        for url, (status, body) in loopback_pages(fleet, host.name, urls).items():
            if status > 0:
                blobs.append(Blob("metrics", f"{host.name}:{url}", body.encode()))
    lb = fleet.host("lb").name
    for url, (status, body) in loopback_pages(
        fleet, lb, ["http://127.0.0.1:8404/stats;csv"]
    ).items():
        assert status == 200, (url, status, body[:200])
        blobs.append(Blob("metrics", f"{lb}:{url}", body.encode()))
    collector = fleet.host("collector")
    metrics = fleet.get(
        f"{fleet.collector_url}/metrics",
        headers={"Authorization": f"Bearer {fleet.admin_token}"},
    )
    assert metrics.status == 200 and "solverfleet_collector" in metrics.body, metrics
    blobs.append(Blob("metrics", f"{collector.name}:/metrics", metrics.body.encode()))
    for path in ("keys", "users", "tokens", "agents", "summary", "log?limit=1000",
                 "usage?limit=1000", "reports/keys", "reports/team", "notifications"):  # fmt: skip
        resp = admin_get(fleet, path)
        assert resp.status == 200, (path, resp)
        blobs.append(Blob("admin-api", f"/admin/v1/{path}", resp.body.encode()))
    return blobs


# Logs in to the dashboard (cookie session, CSRF field) and fetches every page; first a login
# with a key secret as the token, which must be refused without echoing it. Spec on stdin.
_DASHBOARD = r"""
import http.cookiejar, json, re, ssl, sys, urllib.error, urllib.parse, urllib.request
spec = json.loads(sys.stdin.read())
base = spec["base"]
opener = urllib.request.build_opener(
    urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
    urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=spec["cafile"])))
pages = {}
def fetch(path, form=None):
    data = None if form is None else urllib.parse.urlencode(form).encode()
    try:
        with opener.open(base + path, data=data, timeout=10) as resp:
            status, body, final = resp.status, resp.read().decode(errors="replace"), resp.url
    except urllib.error.HTTPError as exc:
        status, body, final = exc.code, exc.read().decode(errors="replace"), exc.url
    name = ("POST " if form else "GET ") + path
    pages[name + (" -> " + final if final != base + path else "")] = [status, body]
    return status, body
def csrf(body):
    return re.search(r'name="csrf" value="([^"]+)"', body).group(1)
_, form = fetch("/dashboard/login")
status, refused = fetch("/dashboard/login", {"csrf": csrf(form), "token": spec["refused_token"]})
assert status == 401, (status, refused[:300])
status, overview = fetch("/dashboard/login", {"csrf": csrf(refused), "token": spec["token"]})
assert status == 200 and "Log in" not in overview.split("</title>")[0], (status, overview[:300])
paths = ["/dashboard/", "/dashboard/usage", "/dashboard/activity", "/dashboard/solves",
         "/dashboard/notifications", "/dashboard/fleet"]
paths += ["/dashboard/keys/" + urllib.parse.quote(k) for k in spec["keys"]]
paths += ["/dashboard/solves?key=" + urllib.parse.quote(k) for k in spec["keys"]]
for path in paths:
    fetch(path)
statics = sorted(set(re.findall(r'(?:href|src)="(/dashboard/static/[^"]+)"', overview)))
for path in statics:
    fetch(path)
print(json.dumps(pages))
"""


def dashboard_pages(fleet: Fleet, refused_token: str) -> list[Blob]:
    keys = admin_get(fleet, "keys")
    assert keys.status == 200, keys
    key_ids = sorted(k["id"] for k in keys.json()["keys"])
    spec = {
        # The dashboard as operators reach it: through HAProxy's admin frontend, over TLS.
        "base": f"https://{fleet.host('lb').address}:{ADMIN_PORT}",
        "cafile": fleet.cafile,
        "token": fleet.admin_token,
        "refused_token": refused_token,
        "keys": key_ids,
    }
    proc = fleet.lab.controller_exec(
        [sys.executable, "-c", _DASHBOARD], input=json.dumps(spec), timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    pages = json.loads(proc.stdout)
    bad = {p: s for p, (s, _) in pages.items() if s != 200 and not p.startswith("POST")}
    assert not bad, bad
    # Logged in: the key pages show their keys.
    for key_id in key_ids:
        assert key_id in pages[f"GET /dashboard/keys/{key_id}"][1], key_id
    return [Blob("dashboard", path, body.encode()) for path, (_, body) in pages.items()]


def ansible_output() -> list[Blob]:
    return [
        Blob("ansible", f"controller:{path.name}", path.read_bytes())
        for path in sorted(ansible.output_dir().glob("*.log"))
    ]


# --- sending the key down every path that carries one -----------------------------------------

_EXERCISE = r"""
import json, ssl, sys, urllib.error, urllib.parse, urllib.request
spec = json.loads(sys.stdin.read())
base, key = spec["base"], spec["key"]
ctx = ssl.create_default_context(cafile=spec["cafile"])
out = {}
def call(name, path, params=None, form=None, headers=None, body=None):
    url = base + path + ("?" + urllib.parse.urlencode(params) if params else "")
    data = body if form is None else urllib.parse.urlencode(form).encode()
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30, context=ctx) as resp:
            out[name] = [resp.status, resp.read().decode()]
    except urllib.error.HTTPError as exc:
        out[name] = [exc.code, exc.read().decode()]
bearer = {"Authorization": "Bearer " + key}
call("balance", "/balance", headers=bearer)
task = {"method": "turnstile", "sitekey": "0x4AAAAAAAscan", "pageurl": "https://example.com/scan"}
call("in.php form", "/in.php", form={"key": key, **task})
call("in.php query", "/in.php", params={"key": key, **task})
call("in.php json", "/in.php", params={"key": key, "json": "1", **task})
for name in ("in.php form", "in.php query"):
    text = out[name][1]
    if text.startswith("OK|"):
        call("res.php " + name, "/res.php", params={"key": key, "action": "get", "id": text[3:]})
call("getbalance", "/res.php", params={"key": key, "action": "getbalance"})
call("getbalance json", "/res.php", form={"key": key, "action": "getbalance", "json": "1"})
call("unknown key", "/solve", headers={"Authorization": "Bearer " + spec["unknown"],
                                       "Content-Type": "application/json"},
     body=json.dumps({"type": "turnstile", "url": "https://example.com/scan"}).encode())
call("unknown key in.php", "/in.php", params={"key": spec["unknown"], **task})
print(json.dumps(out))
"""


def exercise(fleet: Fleet, unknown: str) -> dict[str, list]:
    spec = {
        "base": f"https://{fleet.host('lb').address}",
        "key": fleet.api_key,
        "cafile": fleet.cafile,
        "unknown": unknown,
    }
    proc = fleet.lab.controller_exec(
        [sys.executable, "-c", _EXERCISE], input=json.dumps(spec), timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


# --- the tests ---------------------------------------------------------------------------------


def _secret(label: str, kind: str = KEY) -> SessionSecret:
    return SessionSecret(label, "sk-canary-" + secrets.token_urlsafe(24), kind)


def test_scanner_finds_whole_and_truncated_secrets_and_allows_tokens_in_config() -> None:
    whole, truncated, token, absent = (
        _secret("whole"), _secret("truncated"), _secret("token", TOKEN), _secret("absent")
    )  # fmt: skip
    blobs = [
        Blob("logs", "a.log", f"x Bearer {whole.value} y".encode()),
        Blob("metrics", "m", f'label="{truncated.value[: len(truncated.value) // 2]}…"'.encode()),
        Blob("config", "agent.yml", f"fleet_token: {token.value}\n".encode()),
        Blob("logs", "b.log", f"fleet_token={token.value[len(token.value) // 2 :]}".encode()),
        Blob("config", "key.yml", f"secret: {whole.value}\n".encode()),
    ]
    found = {
        (f.secret.label, f.blob.where, f.part, f.allowed)
        for f in scan(blobs, [whole, truncated, token, absent])
    }
    assert found == {
        ("whole", "a.log", "whole", False),
        ("truncated", "m", "first half", False),
        ("token", "agent.yml", "whole", True),
        ("token", "b.log", "second half", False),
        ("whole", "key.yml", "whole", False),  # a key secret is never allowed, not even there
    }, found


@pytest.mark.timeout(600)
def test_no_secret_in_logs_metrics_dashboard_or_ansible_output(fleet: Fleet) -> None:
    lab = fleet.lab
    apply_key(fleet)
    wait_for_response(lambda: solve(fleet), lambda r: r.status == 200, timeout=15, what="/solve")
    unknown = register_secret("unknown key", "sk-lab-" + secrets.token_urlsafe(24))
    answers = exercise(fleet, unknown)
    assert answers["balance"][0] == 200 and answers["in.php form"][1].startswith("OK|"), answers
    assert answers["in.php query"][1].startswith("OK|"), answers
    assert answers["unknown key"][0] == 401, answers

    # Canaries in a log on a solver host: one whole, one cut in half, as a careless log line
    # would write them. The scan must find both, there and nowhere else.
    canary, cut = _secret("canary"), _secret("truncated canary")
    canary_host = fleet.solvers[-1].name
    line = f'{{"msg": "auth", "key": "{canary.value}", "prefix": "{cut.value[:24]}"}}\n'
    lab.host_exec(canary_host, ["sh", "-c", f"cat > {CANARY_LOG}"], input=line, check=True)
    try:
        blobs = [b for h in lab.hosts for b in host_files(fleet, h.name)]
    finally:
        lab.host_exec(canary_host, ["rm", "-f", CANARY_LOG], check=True)
    blobs += consoles(fleet)
    blobs += journals(fleet)
    blobs += service_pages(fleet)
    blobs += dashboard_pages(fleet, refused_token=fleet.api_key)
    blobs += ansible_output()

    session = session_secrets(fleet)
    findings = scan(blobs, [*session, canary, cut])
    per_category = Counter(b.category for b in blobs)
    size = Counter()
    for b in blobs:
        size[b.category] += len(b.data)
    kinds = Counter(s.kind for s in session)
    print(
        f"\nsecret scan: {len(session)} session secrets ({dict(kinds)}: "
        f"{', '.join(s.label for s in session)}), "
        f"{sum(len(needles(s.value)) for s in session)} needles (whole + halves); "
        f"{len(blobs)} files/pages, {sum(size.values()):,} bytes: "
        + ", ".join(f"{c} {per_category[c]} ({size[c]:,} B)" for c in sorted(per_category))
    )
    allowed = [f for f in findings if f.allowed]
    print(f"  tokens in settings files (allowed): {sorted({f.blob.where for f in allowed})}")
    leaks = [str(f) for f in findings if not f.allowed and f.secret not in (canary, cut)]
    print(f"  leaks: {len(leaks)}" + "".join(f"\n    {leak}" for leak in leaks))

    # The scan can fail: the canaries are found, in the planted file only.
    planted = {(f.secret.label, f.part) for f in findings if f.blob.where.endswith(CANARY_LOG)}
    assert planted == {("canary", "whole"), ("truncated canary", "first half")}, findings
    assert not [
        f for f in findings if f.secret in (canary, cut) and not f.blob.where.endswith(CANARY_LOG)
    ]
    # ... and it reads the hosts' files: every agent's own credential is in its settings.
    for host in fleet.solvers:
        assert any(
            f.secret.host == host.name
            and f.blob.where == f"{host.name}:/etc/solverfleet/agent.credential"
            for f in allowed
        ), allowed
    # Every kind of place was read, and the Ansible output holds the session's plays.
    assert {"logs", "state", "config", "metrics", "admin-api", "dashboard", "ansible"} <= set(
        per_category
    )
    # ... and every host's service logs: the journal's entries of its services, or the files
    # supervisord writes.
    services = {
        "lb": b"haproxy",
        "collector": b"solverfleet-collector",
        "solvers": b"solverfleet-agent",
    }
    for host in lab.hosts:
        journal = next((b for b in blobs if b.where == f"{host.name}:journal"), None)
        assert (journal is not None and services[host.group] in journal.data) or any(
            b.where.startswith(f"{host.name}:/var/log/solverfleet/") for b in blobs
        ), host
    assert any(b"PLAY RECAP" in b.data for b in blobs if b.category == "ansible")

    assert not leaks, "secrets found:\n" + "\n".join(leaks)
