"""Where a webhook may point, and how it is sent.

An organization's webhook URL is chosen by its admins, and Tollgate POSTs to it
from inside the deployment's network. Left open, that reaches what only
Tollgate can reach (a cloud's metadata service at 169.254.169.254, PostgreSQL
or Redis on localhost, services on 10.x), and the delivery log tells what
answered. So a target must be http or https, and every address its host
resolves to must be a public unicast address, unless it lies in a network named
in WEBHOOK_ALLOWED_NETWORKS (for deployments whose receivers live there).

The check runs when the URL is saved (Organization.clean: a validation error
in words) and again at each delivery, because DNS answers change. A delivery
then connects to the very address it checked: the name is not looked up a
second time, so a name that answers differently a moment later (DNS rebinding)
cannot slip a private address past the check. Redirects are not followed (a
3xx is a failed attempt, like any status outside 2xx), and connecting and
waiting for the answer each have their own time limit.

Only the status line of the answer is read: it is all a delivery needs, and a
receiver that sends its headers a byte at a time cannot hold the worker past
WEBHOOK_READ_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
SockAddr = tuple[Any, ...]

# Everything printable in ASCII but the space stays as written in the path and
# query; spaces, control characters (a CR LF would start a header of its own)
# and non-ASCII text are percent-encoded.
_PATH_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))
_STATUS_LINE = re.compile(rb"HTTP/\d(?:\.\d)? (\d{3})(?: .*)?")
_MAX_LINE = 8192
# IPv6 prefixes that carry an IPv4 address inside (besides IPv4-mapped
# ::ffff:0:0/96, 6to4 and Teredo, which ipaddress unpacks itself): NAT64.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class TargetRefused(ValueError):
    """The URL may not be used as a webhook; the message says why, in words."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # ASCII (IDNA), as sent in Host and for TLS
    port: int
    request_target: str  # path and query
    addresses: list[tuple[int, SockAddr]]  # (family, sockaddr), each checked

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def resolve(host: str, port: int) -> list[tuple[int, SockAddr]]:
    """Every address of `host` (the system's resolver: /etc/hosts, then DNS).
    Tests replace it to stand for public DNS, which this machine cannot reach."""
    return [
        (family, sockaddr)
        for family, _, _, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    ]


def allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(net, strict=False) for net in settings.WEBHOOK_ALLOWED_NETWORKS]


def address_refusal(address: IPAddress) -> str | None:
    """Why a webhook may not connect to `address` (words), or None when it may.

    An IPv6 address that carries an IPv4 address (IPv4-mapped, 6to4, Teredo,
    NAT64) is judged by that IPv4 address too: ::ffff:127.0.0.1 is loopback
    whatever the IPv6 flags say."""
    allowed = allowed_networks()
    inner = _embedded_ipv4(address)
    if any(address in net or (inner is not None and inner in net) for net in allowed):
        return None
    for candidate in (inner, address):  # the inner one first: its kind says more
        if candidate is None:
            continue
        kind = _kind(candidate)
        if kind is not None:
            shown = str(address) if candidate is address else f"{address} (IPv4 {candidate})"
            return f"{shown} is {kind}"
    return None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if address.version == 4:
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client's address
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _kind(address: IPAddress) -> str | None:
    """The kind of address that is refused, or None for a public unicast one.
    The explicit tests come first for a precise message; `is_global` last
    catches the rest of the special-purpose ranges (shared 100.64/10,
    documentation, benchmarking, ...)."""
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (cloud metadata services live there)"
    if address.is_multicast:
        return "a multicast address"
    if address.version == 6 and address.is_site_local:
        return "a site-local address"
    if address.is_reserved:
        return "a reserved address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "not a public address"
    return None


def check_url(url: str) -> Target:
    """Parse `url`, resolve its host and check every address; raises
    TargetRefused with the reason."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"The webhook URL is not valid: {exc}.") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise TargetRefused(
            f"A webhook URL must start with http:// or https://, not {scheme or 'nothing'}."
        )
    if not parts.hostname:
        raise TargetRefused("The webhook URL has no host.")
    try:
        host = parts.hostname.encode("idna").decode("ascii")
    except UnicodeError:
        raise TargetRefused(f"'{parts.hostname}' is not a valid host name.") from None
    port = port or (443 if scheme == "https" else 80)
    try:
        addresses = resolve(host.split("%")[0], port)
    except (OSError, UnicodeError):
        raise TargetRefused(f"The host '{host}' could not be resolved.") from None
    if not addresses:
        raise TargetRefused(f"The host '{host}' has no address.")
    for _, sockaddr in addresses:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        reason = address_refusal(address)
        if reason is not None:
            via = "" if host == str(address) else f"'{host}' resolves to "
            raise TargetRefused(
                f"Webhooks may not go to private or internal addresses: {via}{reason}. "
                "A deployment whose receivers live on a private network can allow it "
                "with WEBHOOK_ALLOWED_NETWORKS."
            )
    request_target = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        request_target += "?" + quote(parts.query, safe=_PATH_SAFE)
    return Target(scheme, host, port, request_target, addresses)


def post_json(url: str, body: bytes) -> int:
    """POST `body` (JSON) to a checked webhook URL and return the answer's
    status code. Raises TargetRefused, or OSError (TimeoutError included) when
    the receiver cannot be reached or does not answer in time."""
    target = check_url(url)
    connect_timeout = settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS
    sock = _connect(target, connect_timeout)
    try:
        deadline = time.monotonic() + settings.WEBHOOK_READ_TIMEOUT_SECONDS
        if target.scheme == "https":
            sock.settimeout(connect_timeout)
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=target.host)
        head = (
            f"POST {target.request_target} HTTP/1.1\r\n"
            f"Host: {target.host_header}\r\n"
            "Content-Type: application/json\r\n"
            "User-Agent: Tollgate-Alerts/1\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            sock.sendall(head.encode("ascii") + body)
        except TimeoutError:
            raise TimeoutError("The receiver did not take the request in time.") from None
        return _read_status(sock, deadline)
    finally:
        sock.close()


def _connect(target: Target, timeout: float) -> socket.socket:
    """A connection to the first checked address that accepts one."""
    error: OSError | None = None
    for family, sockaddr in target.addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    assert error is not None  # check_url refuses a host with no address
    if isinstance(error, TimeoutError):
        raise TimeoutError(f"No connection within {timeout:g} s.")
    raise error


def _read_status(sock: socket.socket, deadline: float) -> int:
    """The status code of the final answer (1xx interim answers are skipped),
    read before `deadline`."""
    buffer = b""
    in_interim = False
    while True:
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                chunk = sock.recv(4096)
            except TimeoutError:
                raise TimeoutError("The receiver did not answer in time.") from None
            if not chunk:
                raise ConnectionError("The receiver closed the connection without an answer.")
            buffer += chunk
            if len(buffer) > _MAX_LINE and b"\n" not in buffer:
                raise ConnectionError("The receiver's answer is not HTTP.")
        line, buffer = buffer.split(b"\n", 1)
        line = line.rstrip(b"\r")
        if in_interim:
            in_interim = line != b""  # an interim answer's headers end with a blank line
            continue
        match = _STATUS_LINE.fullmatch(line)
        if match is None:
            raise ConnectionError("The receiver's answer is not HTTP.")
        status = int(match.group(1))
        if status >= 200:
            return status
        in_interim = True
