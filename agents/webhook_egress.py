"""Where the webhooks agent may connect, so a callback URL cannot reach inside (no SSRF).

A result's `callback_url` comes from whoever published the request. Before a delivery, its URL
must pass the policy; by default that means a public address only:

- the scheme is http or https;
- when `COUNTERPOINT_WEBHOOK_HOSTS` is set, the host is one of its names (`hooks.example.com`,
  or `*.example.com` for any name under it). Hosts of the URLs in `COUNTERPOINT_WEBHOOKS` are
  configuration, so they are always allowed;
- every address the host resolves to is globally routable, or inside one of the networks in
  `COUNTERPOINT_WEBHOOK_NETWORKS` (`10.0.0.0/8`, `127.0.0.1/32`). Loopback, private,
  link-local, unspecified (`0`, `0.0.0.0`, `::`), multicast, shared (100.64/10), reserved and
  documentation ranges are refused, and so are cloud metadata services (169.254.169.254,
  fd00:ec2::254, 100.100.100.200), which sit in those ranges. The check runs on what the
  resolver answered, so `2130706433`, `127.1`, `0x7f.1` and `::ffff:127.0.0.1` are caught as
  the loopback address they are (an IPv4 address inside IPv6, mapped, 6to4 or NAT64, is
  checked as the IPv4 address).

The check runs twice: once before the POST (a refusal is dead-lettered without any connection
attempt), and again when the HTTP client connects. The client's network backend resolves the
host itself, checks every answer and connects to the checked address, not to the name, so a
name that resolves to a public address for the first check and to 127.0.0.1 a moment later
(DNS rebinding) is refused at connect time. TLS still verifies the certificate against the
URL's host name. No proxy from the environment and no `.netrc` is used.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Final

import httpcore
import httpx

from counterpoint.bus.errors import CounterpointError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> the IP addresses it resolves to, as text; injected in tests.
Resolver = Callable[[str, int], Awaitable[list[str]]]

SCHEMES: Final = frozenset({"http", "https"})
METADATA: Final = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "fd00:ec2::254", "100.100.100.200", "192.0.0.192"))
NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
HINT: Final = "COUNTERPOINT_WEBHOOK_NETWORKS can allow a network you trust"


class WebhookRefused(CounterpointError):
    """The callback URL is not one deliveries may go to: nothing was sent, and nothing will be."""

    reason = "webhook-refused"


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def parse_networks(text: str) -> tuple[Network, ...]:
    """`10.0.0.0/8, 127.0.0.1` -> networks; ValueError naming the entry that is not one."""
    out = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"{item!r} is not an IP network (e.g. 10.0.0.0/8): {exc}") from exc
    return tuple(out)


def parse_hosts(text: str) -> tuple[str, ...]:
    return tuple(h.strip().lower().rstrip(".") for h in text.split(",") if h.strip())


def _embedded_ipv4(ip: Address) -> Address:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64), else the address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip in NAT64:
            return ipaddress.IPv4Address(ip.packed[-4:])
    return ip


def kind_of(ip: Address) -> str | None:
    """Why `ip` is not a public address (e.g. "loopback"), or None when it is one."""
    ip = _embedded_ipv4(ip)
    for name, hit in (("a cloud metadata service", ip in METADATA),
                      ("unspecified", ip.is_unspecified), ("loopback", ip.is_loopback),
                      ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
                      ("private", ip.is_private), ("reserved", ip.is_reserved)):
        if hit:
            return name
    return None if ip.is_global else "not globally routable"


@dataclass(frozen=True)
class EgressPolicy:
    hosts: tuple[str, ...] = ()  # empty: any host name
    networks: tuple[Network, ...] = ()  # reachable even though not public
    resolve: Resolver = field(default=system_resolver, compare=False)

    def allowing_hosts_of(self, urls: Iterable[str]) -> EgressPolicy:
        """This policy, with the hosts of configured URLs allowed (only matters when `hosts`
        restricts names at all)."""
        if not self.hosts:
            return self
        extra = tuple(h for u in urls if (h := httpx.URL(u).host.lower().rstrip(".")))
        return replace(self, hosts=self.hosts + extra)

    def host_allowed(self, host: str) -> bool:
        if not self.hosts:
            return True
        name = host.lower().rstrip(".")
        return any(name == h or (h.startswith("*.") and name.endswith(h[1:]))
                   for h in self.hosts)

    def why_refused(self, ip: Address) -> str | None:
        """None when `ip` may be reached, else why not."""
        if any(ip in net or _embedded_ipv4(ip) in net for net in self.networks):
            return None
        return kind_of(ip)

    async def addresses(self, host: str, port: int) -> list[str]:
        """What `host` resolves to, every answer checked; WebhookRefused if any is refused.

        All answers must pass: a name that also resolves to an inside address is refused
        rather than tried address by address until one works.
        """
        answers = await self.resolve(host, port)  # OSError when it cannot: worth retrying
        if not answers:
            raise OSError(f"{host!r} resolves to no address")
        checked: list[str] = []
        for answer in answers:
            ip = ipaddress.ip_address(answer.split("%", 1)[0])
            why = self.why_refused(ip)
            if why is not None:
                said = "is" if answer == host else f"resolves to {answer}, which is"
                raise WebhookRefused(f"{host} {said} {why}, not a public address; {HINT}")
            if answer not in checked:
                checked.append(answer)
        return checked

    async def check(self, url: str, timeout_s: float) -> None:
        """WebhookRefused unless a POST to `url` may be sent (scheme, host, addresses);
        OSError when its host cannot be resolved within `timeout_s`."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise WebhookRefused(f"not a valid URL: {exc}") from exc
        if parsed.scheme not in SCHEMES:
            raise WebhookRefused(f"scheme {parsed.scheme!r} is not http or https")
        if not parsed.host:
            raise WebhookRefused("the URL names no host")
        if not self.host_allowed(parsed.host):
            raise WebhookRefused(f"host {parsed.host} is not in COUNTERPOINT_WEBHOOK_HOSTS")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        async with asyncio.timeout(timeout_s):
            await self.addresses(parsed.host, port)

    def client(self, *, timeout_s: float, tls: ssl.SSLContext) -> httpx.AsyncClient:
        """An HTTP client whose every connection goes to an address this policy checked."""
        return httpx.AsyncClient(transport=_CheckedTransport(self, tls), timeout=timeout_s,
                                 trust_env=False)


class _CheckedBackend(httpcore.AsyncNetworkBackend):
    """Resolves and checks at connect time, then connects to the checked address itself."""

    def __init__(self, policy: EgressPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
            self, host: str, port: int,
            timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
            local_address: str | None = None,
            socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._policy.addresses(host, port)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host!r} timed out") from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from exc
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address,
                                                      socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # `addresses` is never empty
        raise failure

    async def connect_unix_socket(
            self, path: str, timeout: float | None = None,  # noqa: ASYNC109 (httpcore's)
            socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise WebhookRefused("deliveries never use unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _CheckedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, policy: EgressPolicy, tls: ssl.SSLContext) -> None:
        super().__init__(verify=tls, trust_env=False)
        # httpx takes no network backend of its own, so its connection pool (httpcore's public
        # class, which does) is replaced by one built with ours; everything else is httpx's.
        self._pool = httpcore.AsyncConnectionPool(ssl_context=tls,
                                                  network_backend=_CheckedBackend(policy))
