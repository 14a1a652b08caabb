"""Which hosts a fetch may reach: IP literals read the way the network stack reads them, names by resolution.

The C resolver and most URL parsers accept IPv4 in shorthand (``127.1``, ``10.1``), as one number
(``2130706433``), in hex (``0x7f000001``) and in octal (``0177.0.0.1``), and IPv6 can carry an IPv4 address
inside it (``::ffff:127.0.0.1``, NAT64, 6to4, Teredo). Every spelling is turned into the address it denotes
and judged on that address; a host name is judged on every address it resolves to, and the caller connects
to exactly those addresses, so a second lookup cannot answer differently.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence

from engine.errors import EngineError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]
"""``(host, port) -> addresses`` as strings; the default asks the system (``getaddrinfo``)."""

_DIGITS = {10: set("0123456789"), 8: set("01234567"), 16: set("0123456789abcdef")}
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_WITH_IPV4_IN_LAST_32_BITS = tuple(
    ipaddress.ip_network(prefix) for prefix in ("::ffff:0:0/96", "::/96", "64:ff9b::/96", "::ffff:0:0:0/96")
)
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")


class AddressError(EngineError):
    """A host that may not be fetched from, cannot be read as a host, or does not resolve."""


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolves ``host`` to, for a TCP connection to ``port``."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise AddressError(f"cannot resolve {host}: {exc}") from None
    return [str(info[4][0]) for info in found]


def _ipv4_part(part: str) -> int | None:
    """One dot-separated part of a numeric IPv4 host (decimal, ``0x`` hex or ``0`` octal), or None."""
    if part[:2] == "0x":
        digits, base = part[2:], 16
    elif len(part) > 1 and part.startswith("0"):
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    if not digits:
        return 0 if base == 16 else None
    return int(digits, base) if set(digits) <= _DIGITS[base] else None


def _numeric_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a numeric host in any inet_aton spelling denotes; None for a host name.

    A host whose last label is a number but which is not a valid address (``1.2.3.256``, ``1.2.3.4.5``) is
    an error: resolvers disagree about such names, so none of them is fetched.
    """
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    if not parts or _ipv4_part(parts[-1]) is None:
        return None
    numbers = [_ipv4_part(part) for part in parts]
    if len(parts) > 4 or any(number is None for number in numbers):
        raise AddressError(f"{host!r} is neither a host name nor an IPv4 address")
    *leading, last = [number for number in numbers if number is not None]
    if any(number > 255 for number in leading) or last >= 256 ** (5 - len(parts)):
        raise AddressError(f"{host!r} is out of range for an IPv4 address")
    value = last
    for position, number in enumerate(leading):
        value += number << (8 * (3 - position))
    return ipaddress.IPv4Address(value)


def ip_literal(host: str) -> IPAddress | None:
    """The address ``host`` spells (IPv6 with or without brackets and zone, IPv4 in any spelling), or None."""
    bare = host.lower().removeprefix("[").removesuffix("]")
    if ":" in bare:
        try:
            return ipaddress.IPv6Address(bare)
        except ValueError:
            raise AddressError(f"{host!r} is not a valid IPv6 address") from None
    return _numeric_ipv4(bare)


def host_key(host: str) -> str:
    """``host`` in one canonical spelling: an address as ``ipaddress`` writes it, a name lowercased without a
    trailing dot. Two spellings of one host have the same key."""
    literal = ip_literal(host)
    return str(literal) if literal is not None else host.lower().rstrip(".")


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries: mapped, compatible, NAT64, translated, 6to4, Teredo."""
    if isinstance(address, ipaddress.IPv4Address):
        return []
    found = [
        ipaddress.IPv4Address(int(address) & 0xFFFFFFFF) for prefix in _WITH_IPV4_IN_LAST_32_BITS if address in prefix
    ]
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    return found


def refusal(address: IPAddress) -> str | None:
    """Why a fetch may not reach ``address`` (``"loopback"``, ``"private"``, ...), or None for a public one."""
    if address.is_loopback or address.is_unspecified:
        return "loopback" if address.is_loopback else "unspecified"
    for inner in _embedded_ipv4(address):
        reason = refusal(inner)
        if reason is not None:
            return f"{reason}, as {inner}"
    checks = (
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (isinstance(address, ipaddress.IPv4Address) and address in _SHARED, "shared carrier-grade NAT"),
        (isinstance(address, ipaddress.IPv6Address) and address.is_site_local, "site-local"),
        (isinstance(address, ipaddress.IPv6Address) and address in _LOCAL_NAT64, "local-use NAT64"),
        (address.is_private, "private"),
        (address.is_reserved, "reserved"),
        (not address.is_global, "not globally reachable"),
    )
    return next((reason for refused, reason in checks if refused), None)


def check_host(host: str) -> IPAddress | None:
    """Refuse ``localhost`` names and non-public or malformed IP literals; return the literal's address, or
    None for a host name (which is judged once it is resolved)."""
    key = host_key(host)
    if key == "localhost" or key.endswith(".localhost"):
        raise AddressError(f"refusing to fetch from {host}")
    literal = ip_literal(host)
    if literal is not None and (reason := refusal(literal)) is not None:
        raise AddressError(f"refusing to fetch from non-public address {host} ({literal}: {reason})")
    return literal


def resolve(host: str, port: int, resolver: Resolver) -> list[IPAddress]:
    """Every address ``host`` denotes, unjudged: the literal itself, or what ``resolver`` answers."""
    literal = ip_literal(host)
    if literal is not None:
        return [literal]
    addresses = []
    for text in resolver(host, port):
        try:
            addresses.append(ipaddress.ip_address(text))
        except ValueError:
            raise AddressError(f"{host} resolved to {text!r}, which is not an address") from None
    if not addresses:
        raise AddressError(f"{host} resolves to no address")
    return addresses


def public_addresses(host: str, port: int, resolver: Resolver) -> list[IPAddress]:
    """The addresses to connect to for ``host``, all of them public, or AddressError naming the one that is not."""
    check_host(host)
    addresses = resolve(host, port, resolver)
    for address in addresses:
        reason = refusal(address)
        if reason is not None:
            raise AddressError(f"refusing to fetch from {host}: it resolves to {address} ({reason})")
    return addresses
