"""playbooks/library/solverfleet_lb_status.py: one command on a runtime API socket (a stand-in
that answers like HAProxy's: one command line in, the answer, then close) and the colour file."""

from __future__ import annotations

import importlib.util
import socket
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "_solverfleet_lb_status", REPO / "playbooks" / "library" / "solverfleet_lb_status.py"
)
assert _spec is not None and _spec.loader is not None
lb_status = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lb_status)


@pytest.fixture
def runtime_api(tmp_path):
    """A unix socket answering each command from ``answers`` (``received`` records them)."""
    path = str(tmp_path / "admin.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen()
    answers: dict[str, str] = {}
    received: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while True:
            conn, _ = server.accept()
            if stop.is_set():
                conn.close()
                return
            with conn:
                command = conn.makefile("rb").readline().decode().strip()
                received.append(command)
                conn.sendall(answers.get(command, "Unknown command.\n").encode())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, answers, received
    stop.set()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as wake:  # unblock accept()
        wake.connect(path)
    thread.join(5)
    server.close()


def test_runtime_command_reads_the_whole_answer(runtime_api):
    path, answers, received = runtime_api
    big = "# pxname,svname,status\n" + "solverfleet_agents,solver1,UP\n" * 5000  # > one recv
    answers["show stat"] = big
    assert lb_status.runtime_command(path, "show stat", 5) == big
    assert received == ["show stat"]


def test_runtime_command_errors(tmp_path, runtime_api):
    with pytest.raises(FileNotFoundError):
        lb_status.runtime_command(str(tmp_path / "missing.sock"), "show stat", 1)
    path, _, _ = runtime_api
    assert lb_status.runtime_command(path, "show nothing", 5) == "Unknown command.\n"


def test_colour_file(tmp_path):
    path = tmp_path / "colour.json"
    assert lb_status.read_colour(str(path)) == (None, None)  # missing: blue, said the caller
    path.write_text('{"active": "green", "history": []}')
    assert lb_status.read_colour(str(path)) == ('{"active": "green", "history": []}', None)
    text, error = lb_status.read_colour(str(tmp_path))  # a directory: unreadable, and says why
    assert text is None and error.startswith(str(tmp_path))
