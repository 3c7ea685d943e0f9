"""Pingback URLs: what may be registered, where it may be sent, and the one POST (no redirects).

A pingback makes the agent send a request to an address a client chose, so it must not become
a way into the operator's own networks (SSRF). A host is resolved and **every** address it
resolves to must be public (``ipaddress``'s ``is_global``, not multicast; an IPv4 address
inside an IPv6 one, mapped, 6to4, Teredo or NAT64, is checked as the IPv4 address it carries),
unless it lies in one of the operator's ``pingback_allow_cidrs``. The check runs when the URL
is registered and again before each POST, and the POST connects to the address that was
checked (a DNS answer that changes in between, "rebinding", cannot redirect it). TLS is
verified against the URL's host name. Redirects are never followed: a 3xx is a failure.
The connection is opened before the request is written (``connect``, then ``post``), so the
sender can record the charge in between: the answer leaves only over an open connection.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from collections.abc import Sequence
from urllib.parse import urlsplit

from solverfleet.textcheck import text_problem

MAX_URL = 2048  # characters: the length the collector stores
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Refused(ValueError):
    """A pingback URL that may not be registered or called; the message says why."""


def parse_cidrs(cidrs: Sequence[str]) -> tuple[Network, ...]:
    """The operator's allowed ranges; ValueError naming a bad CIDR."""
    nets = []
    for cidr in cidrs:
        try:
            nets.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ValueError(f"pingback_allow_cidrs: not a CIDR: {cidr!r}") from None
    return tuple(nets)


def check_syntax(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of a well-formed http(s) URL; Refused otherwise."""
    if not url or len(url) > MAX_URL or not url.isascii() or text_problem(url, multiline=False):
        raise Refused(f"not a URL of 1 to {MAX_URL} printable ASCII characters")
    if " " in url:
        raise Refused("spaces must be percent-encoded")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise Refused("not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise Refused("only http and https URLs")
    if parts.username is not None or parts.password is not None:
        raise Refused("credentials in the URL are not accepted")
    host = parts.hostname
    if not host:
        raise Refused("the URL has no host")
    return scheme, host, port or (443 if scheme == "https" else 80)


def _embedded_v4(ip: Address) -> ipaddress.IPv4Address | None:
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_allowed(ip: Address, allow: Sequence[Network]) -> bool:
    """Public (or in an allowed range); an embedded IPv4 address must pass too."""
    if any(ip.version == net.version and ip in net for net in allow):
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return address_allowed(ip.ipv4_mapped, allow)  # the IPv4 address itself, on the wire
    inner = _embedded_v4(ip)
    if inner is not None and not address_allowed(inner, allow):
        return False
    return ip.is_global and not ip.is_multicast


def resolve(host: str, port: int, allow: Sequence[Network]) -> Address:
    """The address to connect to: ``host`` resolved, every answer checked; Refused if any
    answer is refused, or none."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise Refused(f"{host} does not resolve") from None
    addresses = []
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if not address_allowed(ip, allow):
            raise Refused(f"{host} resolves to {ip}, a private or reserved address")
        addresses.append(ip)
    if not addresses:
        raise Refused(f"{host} does not resolve")
    return addresses[0]


def check(url: str, allow: Sequence[Network]) -> Address:
    """A URL that may be registered and called, and its checked address; Refused otherwise."""
    _, host, port = check_syntax(url)
    return resolve(host, port, allow)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a fixed address, verified against (and with SNI for) the URL's host."""

    def __init__(self, address: str, host: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class Connection:
    """An open connection to a pingback URL's checked address (``connect``), ready for one
    POST (``post``); close it either way."""

    def __init__(self, url: str, allow: Sequence[Network], timeout: float) -> None:
        scheme, host, port = check_syntax(url)
        address = str(resolve(host, port, allow))
        parts = urlsplit(url)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        netloc = host if ":" not in host else f"[{host}]"
        default = (scheme == "https" and port == 443) or (scheme == "http" and port == 80)
        self.host_header = netloc if default else f"{netloc}:{port}"
        self.conn: http.client.HTTPConnection
        if scheme == "https":
            self.conn = _PinnedHTTPS(address, host, port, timeout)
        else:
            self.conn = http.client.HTTPConnection(address, port, timeout=timeout)
        try:
            self.conn.connect()  # TCP (and TLS): nothing of the answer has left yet
        except BaseException:
            self.conn.close()
            raise

    def post(self, body: bytes, content_type: str) -> int:
        """Send the POST; the HTTP status (a redirect is just its status). OSError
        (``http.client.HTTPException`` included) when no answer came."""
        headers = {
            "Host": self.host_header,
            "Content-Type": content_type,
            "User-Agent": "solverfleet-pingback",
        }
        try:
            self.conn.request("POST", self.target, body=body, headers=headers)
            resp = self.conn.getresponse()
            resp.read(64 * 1024)  # a bounded read: only the status matters
            return resp.status
        except http.client.HTTPException as exc:
            raise OSError(str(exc)) from None

    def close(self) -> None:
        self.conn.close()


def connect(url: str, allow: Sequence[Network], timeout: float) -> Connection:
    """A connection to ``url``'s freshly checked address; Refused, or OSError when it cannot
    be opened."""
    return Connection(url, allow, timeout)
