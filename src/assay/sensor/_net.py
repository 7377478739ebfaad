"""Socket addresses as the kernel hands them over, turned into ECS network fields.

Loopback and private destinations are kept (a sensor that drops them misses lateral movement and local C2).
An IPv4-mapped IPv6 address (``::ffff:10.0.0.1``, what a dual-stack socket shows) is reported as the IPv4
address so that a rule on ``DestinationIp`` matches whichever socket family the program used.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

AF_UNIX = int(socket.AF_UNIX)
AF_INET = int(socket.AF_INET)
AF_INET6 = int(socket.AF_INET6)

_FAMILY: dict[int, str] = {AF_UNIX: "unix", AF_INET: "ipv4", AF_INET6: "ipv6"}
_SOCK_STREAM, _SOCK_DGRAM, _SOCK_RAW, _SOCK_SEQPACKET = 1, 2, 3, 5
_IPPROTO = {6: "tcp", 17: "udp", 1: "icmp", 58: "ipv6-icmp", 132: "sctp", 136: "udplite"}


def family_name(family: int) -> str | None:
    return _FAMILY.get(family)


def ip_text(raw: bytes, family: int) -> str:
    if family == AF_INET:
        return socket.inet_ntop(AF_INET, raw[:4])
    addr = ipaddress.IPv6Address(raw[:16])
    mapped = addr.ipv4_mapped
    return str(mapped) if mapped is not None else str(addr)


def normalize_ip(text: str) -> str:
    """The form used in events: IPv4-mapped IPv6 as IPv4, IPv6 compressed."""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return text
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def transport(family: int, sock_type: int, protocol: int) -> str | None:
    if family == AF_UNIX:
        return "unix"
    if protocol in _IPPROTO:
        return _IPPROTO[protocol]
    if sock_type == _SOCK_STREAM:
        return "tcp"
    if sock_type == _SOCK_DGRAM:
        return "udp"
    if sock_type == _SOCK_RAW:
        return "raw"
    return None


def parse_sockaddr(blob: bytes) -> tuple[int, str | None, int | None]:
    """(family, ip or unix path, port) of a sockaddr passed to connect/bind (None where unknown)."""
    if len(blob) < 2:
        return 0, None, None
    family = struct.unpack_from("<H", blob)[0]
    if family == AF_INET and len(blob) >= 8:
        port = struct.unpack_from(">H", blob, 2)[0]
        return family, socket.inet_ntop(AF_INET, blob[4:8]), port
    if family == AF_INET6 and len(blob) >= 24:
        port = struct.unpack_from(">H", blob, 2)[0]
        return family, ip_text(blob[8:24], AF_INET6), port
    if family == AF_UNIX:
        path = blob[2:]
        if path[:1] == b"\0":  # abstract namespace: shown as @name, like ss(8)
            name = path[1:].split(b"\0", 1)[0]
            return family, "@" + name.decode("utf-8", "backslashreplace"), None
        return family, path.split(b"\0", 1)[0].decode("utf-8", "backslashreplace"), None
    return family, None, None


def sockaddr_fields(action: str, blob: bytes, out: dict[str, Any]) -> None:
    """Fields from the address the program passed: the destination of a connect, the local end of a bind."""
    family, addr, port = parse_sockaddr(blob)
    if not family:
        return
    fam = family_name(family)
    if fam:
        out["network.family"] = fam
    if family == AF_UNIX:
        if addr is not None:
            out["unix.path"] = addr
        out["network.transport"] = "unix"
        return
    side = "destination" if action == "connect" else "source"
    if addr is not None:
        out[f"{side}.ip"] = addr
    if port is not None:
        out[f"{side}.port"] = port
