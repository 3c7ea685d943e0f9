"""TLS files of the services: settings checks for certificate, key and CA files, and a server
context that picks up a rotated certificate on the next handshake, without a restart.

Import-light (``ssl`` only): gunicorn's master imports it through the settings before a gevent
worker patches the standard library.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from collections.abc import Callable

from solverfleet.settings import SettingsError

log = logging.getLogger(__name__)


def check_readable_file(setting: str, path: str) -> None:
    """A SettingsError naming ``setting`` unless ``path`` is a file this process can read."""
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise SettingsError(f"{setting}: no such file: {path}") from None
    except IsADirectoryError:
        raise SettingsError(f"{setting}: {path} is a directory, not a file") from None
    except OSError as exc:
        raise SettingsError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from None


def check_tls_pair(cert_file: str, key_file: str) -> None:
    """``tls_cert_file`` and ``tls_key_file``: both empty, or a readable matching PEM pair."""
    if bool(cert_file) != bool(key_file):
        given, missing = (
            ("tls_cert_file", "tls_key_file") if cert_file else ("tls_key_file", "tls_cert_file")
        )
        raise SettingsError(f"{missing}: must be set when {given} is (both or neither)")
    if not cert_file:
        return
    check_readable_file("tls_cert_file", cert_file)
    check_readable_file("tls_key_file", key_file)

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # A password callback, so an encrypted key fails here instead of prompting on a tty.
        context.load_cert_chain(cert_file, key_file, password=lambda: b"")
    except (ssl.SSLError, ValueError) as exc:
        raise SettingsError(
            f"tls_cert_file/tls_key_file: {cert_file} and {key_file} are not a PEM certificate "
            f"and its unencrypted private key ({getattr(exc, 'reason', None) or exc})"
        ) from None


def check_ca_file(setting: str, path: str) -> None:
    """A readable PEM bundle holding at least one CA certificate."""
    check_readable_file(setting, path)

    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, ValueError) as exc:
        raise SettingsError(
            f"{setting}: {path} holds no PEM CA certificate ({getattr(exc, 'reason', None) or exc})"
        ) from None


class ReloadingContext:
    """A server context whose certificate follows its files: every handshake compares the
    files' identity (inode, size, mtime) with what was loaded and, when they changed, moves the
    connection to a fresh context. A half-written pair (new key, old certificate) fails to load
    and the old context keeps serving until both files agree.

    Gunicorn builds one context per worker (gevent) or per connection (gthread); either way
    ``context`` hands out the same object, so rotation costs one ``stat`` pair per handshake.
    """

    def __init__(self, cert_file: str, key_file: str, factory: Callable[[], ssl.SSLContext]):
        self._files = (cert_file, key_file)
        self._factory = factory
        self._lock = threading.Lock()
        self._stamp = self._read_stamp()
        self._latest = self._build()

    def context(self) -> ssl.SSLContext:
        return self._latest

    def _read_stamp(self) -> tuple:
        stamp = []
        for path in self._files:
            try:
                st = os.stat(path)
            except OSError:
                return ()
            stamp.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(stamp)

    def _build(self) -> ssl.SSLContext:
        ctx = self._factory()
        ctx.sni_callback = self._on_hello
        return ctx

    def _on_hello(self, conn: ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext):
        stamp = self._read_stamp()
        if stamp and stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    try:
                        self._latest = self._build()
                        self._stamp = stamp
                        log.info("TLS certificate reloaded from %s", self._files[0])
                    except (OSError, ssl.SSLError, ValueError) as exc:
                        log.warning("TLS certificate not reloaded yet (%s); serving the old", exc)
        if conn.context is not self._latest:
            conn.context = self._latest
        return None


def gunicorn_ssl_context(
    conf: object, default_ssl_context_factory: Callable[[], ssl.SSLContext]
) -> ssl.SSLContext:
    """Gunicorn's ``ssl_context`` hook for both services: one reloading context per process."""
    global _reloading
    if _reloading is None:
        cert, key = conf.certfile, conf.keyfile  # type: ignore[attr-defined]
        _reloading = ReloadingContext(cert, key, default_ssl_context_factory)
    return _reloading.context()


_reloading: ReloadingContext | None = None
