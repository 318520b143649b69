"""Where webhooks may go: https on public addresses only (SSRF), unless development allows
private ones.

A URL is checked when an endpoint is registered (its literal address, or what its name resolves
to) and again on every connection: the deliverer's network backend resolves the name itself,
refuses if any address is not public, and connects to the address it checked, so a name that
changes its answer between the check and the connection (DNS rebinding) gains nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import select
import socket
import ssl
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Names that mean "this machine" or a cloud metadata service whatever DNS says.
BLOCKED_NAMES = ("localhost", "metadata.google.internal", "metadata", "instance-data")
# Cloud metadata services that sit on otherwise routable-looking addresses.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
RESOLVE_TIMEOUT = 3.0


class RefusedAddress(Exception):
    """A webhook URL that points somewhere we will not send to; the message says why."""


NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052's well-known prefix


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """IPv4 addresses that an IPv6 address carries and routes to: 6to4 (2002::/16), Teredo
    (2001::/32: its server and its client) and NAT64 (64:ff9b::/96)."""
    found = []
    if address.sixtofour is not None:
        found.append(("6to4", address.sixtofour))
    if address.teredo is not None:
        found += [("Teredo", inner) for inner in address.teredo]
    if address in NAT64:
        found.append(("NAT64", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)))
    return found


def address_class(address: IPAddress) -> str | None:
    """The reason `address` is not public, or None when it is. An IPv6 address that carries
    an IPv4 address (mapped, 6to4, Teredo, NAT64) is judged by that one too."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address_class(address.ipv4_mapped)
        for kind, inner in embedded_ipv4(address):
            reason = address_class(inner)
            if reason is not None:
                return f"{reason} inside a {kind} address"
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private or address.is_reserved or address.is_unspecified:
        return "a private address"
    if address.is_multicast or not address.is_global:
        return "not a public address"
    return None


def refuse_unless_public(addresses: Iterable[IPAddress], host: str) -> None:
    for address in addresses:
        reason = address_class(address)
        if reason is not None:
            raise RefusedAddress(f"{host} is {reason} ({address})")


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _blocked_name(host: str) -> bool:
    name = host.lower().rstrip(".")
    return any(name == blocked or name.endswith("." + blocked) for blocked in BLOCKED_NAMES)


async def resolve(host: str, port: int) -> list[IPAddress]:
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(
        loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT
    )
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


async def check_url(url: str, *, allow_private: bool) -> None:
    """Raise RefusedAddress unless webhooks may be sent to `url`.

    A name that does not resolve now is accepted (DNS may not be set up yet); it is checked
    again on every delivery."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise RefusedAddress("must be an absolute https:// URL")
    if parts.username or parts.password:
        raise RefusedAddress("must not carry credentials; use the signing secret")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise RefusedAddress("has an invalid port") from exc
    if allow_private:
        return
    if parts.scheme != "https":
        raise RefusedAddress("must use https")
    host = parts.hostname
    literal = _literal(host)
    if literal is not None:
        refuse_unless_public([literal], host)
        return
    if _blocked_name(host):
        raise RefusedAddress(f"{host} names this machine or a metadata service")
    try:
        addresses = await resolve(host, port)
    except (OSError, TimeoutError, UnicodeError):
        return
    refuse_unless_public(addresses, host)


class PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks and connects to the checked address (see the module docstring)."""

    def __init__(self, allow_private: bool) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._allow_private = allow_private

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        target = host
        if not self._allow_private:
            if _blocked_name(host):
                raise httpcore.ConnectError(f"refused: {host} names this machine")
            literal = _literal(host)
            try:
                addresses = [literal] if literal else await resolve(host, port)
            except (OSError, TimeoutError, UnicodeError) as exc:
                raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
            try:
                refuse_unless_public(addresses, host)
            except RefusedAddress as exc:
                raise httpcore.ConnectError(f"refused: {exc}") from exc
            target = str(addresses[0])
        stream = await self._inner.connect_tcp(
            target,
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )
        return _Stream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks are never sent to a Unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _Stream(httpcore.AsyncNetworkStream):
    """An anyio stream that answers `is_readable` from its socket directly.

    Before every request the pool asks each idle connection whether the server closed it;
    anyio answers by building all of the socket's attributes (a getpeername call each time),
    which was a sixth of the deliverer's time in `bench/webhooks.py`."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._socket: socket.socket | None = inner.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # An idle keep-alive connection with something to read was closed by the server.
            if self._socket is None or self._socket.fileno() < 0:
                return True
            poll = select.poll()
            poll.register(self._socket, select.POLLIN)
            return bool(poll.poll(0))
        return self._inner.get_extra_info(info)


def webhook_client(*, allow_private: bool, timeout: httpx.Timeout) -> httpx.AsyncClient:
    """An httpx client that never follows redirects, ignores proxy variables, and connects only
    where `PublicOnlyBackend` allows."""
    transport = httpx.AsyncHTTPTransport(trust_env=False, retries=0)
    # httpx has no public hook for the network backend; its pool takes one.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        max_connections=200,
        max_keepalive_connections=50,
        keepalive_expiry=30,
        network_backend=PublicOnlyBackend(allow_private),
    )
    return httpx.AsyncClient(
        transport=transport, timeout=timeout, follow_redirects=False, trust_env=False
    )
