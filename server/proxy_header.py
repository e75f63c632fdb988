"""The PROXY protocol header (HAProxy's, versions 1 and 2) that an L4 proxy sends first
on each connection it forwards, naming the client's address; `temposplit serve
--proxy-protocol` reads it so that its per-client limits see the edges, not the proxy
(docs/protocol.md, "Connections through a proxy").

The header is read with exact-length reads from the raw socket before anything else
wraps it, so that not one byte of the TLS handshake behind it is consumed. Every read
is bounded: a version 1 line is at most 107 bytes, a version 2 block at most
``MAX_V2_BODY`` bytes after its 16-byte head.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Awaitable, Callable

from temposplit.protocol import ProtocolError

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest version 1 line, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
MAX_V2_BODY = 4096  # addresses (at most 216 bytes) and TLVs; HAProxy sends far less
# Version 2 address families: (length of the address block, address length) by family nibble.
_V2_INET, _V2_INET6, _V2_UNIX = 1, 2, 3


class ProxyHeaderError(ProtocolError):
    """The connection did not start with a valid PROXY protocol header."""


Recv = Callable[[int], Awaitable[bytes]]  # exactly n bytes, or raises


async def read_proxy_header(recv_exactly: Recv) -> str | None:
    """Read one PROXY header through ``recv_exactly`` and return the client's address
    as text (``"203.0.113.7"``, ``"2001:db8::1"``), or None when the header names no
    address (version 1 ``UNKNOWN``, version 2 ``LOCAL`` such as a proxy's health check,
    or an unspecified or Unix family): the connection is then the proxy's own."""
    start = await recv_exactly(len(V1_PREFIX))
    if start == V1_PREFIX:
        return await _read_v1(recv_exactly)
    if start == V2_SIGNATURE[: len(V1_PREFIX)]:
        return await _read_v2(recv_exactly)
    raise ProxyHeaderError("the connection did not start with a PROXY protocol header (--proxy-protocol is on)")


async def _read_v1(recv_exactly: Recv) -> str | None:
    line = bytearray(V1_PREFIX)
    while not line.endswith(b"\r\n"):
        if len(line) >= V1_MAX:
            raise ProxyHeaderError(f"a PROXY version 1 line longer than {V1_MAX} bytes")
        line += await recv_exactly(1)
    try:
        fields = line[:-2].decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise ProxyHeaderError("a PROXY version 1 line that is not ASCII") from None
    if len(fields) >= 2 and fields[1] == "UNKNOWN":
        return None
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"a malformed PROXY version 1 line: {bytes(line[:-2])!r}")
    version = 4 if fields[1] == "TCP4" else 6
    src = _address(fields[2], version)
    _address(fields[3], version)  # the proxy's own address: checked, not used
    for port in fields[4:6]:
        if not (port.isdigit() and len(port) <= 5 and int(port) <= 65535 and (port == "0" or port[0] != "0")):
            raise ProxyHeaderError(f"a PROXY version 1 port that is not one: {port!r}")
    return src


async def _read_v2(recv_exactly: Recv) -> str | None:
    rest = await recv_exactly(len(V2_SIGNATURE) + 4 - len(V1_PREFIX))
    head = V2_SIGNATURE[: len(V1_PREFIX)] + rest
    if head[: len(V2_SIGNATURE)] != V2_SIGNATURE:
        raise ProxyHeaderError("the connection did not start with a PROXY protocol header (--proxy-protocol is on)")
    ver_cmd, family, length = struct.unpack(">BBH", head[len(V2_SIGNATURE) :])
    if ver_cmd >> 4 != 2:
        raise ProxyHeaderError(f"PROXY protocol version {ver_cmd >> 4} is not supported (1 or 2)")
    command = ver_cmd & 0x0F
    if command not in (0, 1):
        raise ProxyHeaderError(f"PROXY version 2 command {command} is neither LOCAL (0) nor PROXY (1)")
    if length > MAX_V2_BODY:
        raise ProxyHeaderError(f"a PROXY version 2 block of {length} bytes (at most {MAX_V2_BODY})")
    body = await recv_exactly(length) if length else b""
    if command == 0:  # LOCAL: the proxy's own connection (a health check); the block is ignored
        return None
    af, transport = family >> 4, family & 0x0F
    if af not in (0, _V2_INET, _V2_INET6, _V2_UNIX) or transport not in (0, 1, 2):
        raise ProxyHeaderError(f"PROXY version 2 address family byte 0x{family:02x} is not defined")
    if af == _V2_INET:
        if length < 12:
            raise ProxyHeaderError(f"a PROXY version 2 IPv4 block of {length} bytes (at least 12)")
        return str(ipaddress.IPv4Address(body[:4]))
    if af == _V2_INET6:
        if length < 36:
            raise ProxyHeaderError(f"a PROXY version 2 IPv6 block of {length} bytes (at least 36)")
        return _unmapped(ipaddress.IPv6Address(body[:16]))
    return None  # UNSPEC or a Unix socket: no client address to count by


def _address(text: str, version: int) -> str:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyHeaderError(f"a PROXY version 1 address that is not one: {text!r}") from None
    if addr.version != version:
        raise ProxyHeaderError(f"a PROXY version 1 TCP{version} line with the address {text!r}")
    return _unmapped(addr) if version == 6 else str(addr)


def _unmapped(addr) -> str:
    """An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) is the IPv4 client it maps."""
    mapped = getattr(addr, "ipv4_mapped", None)
    return str(mapped if mapped is not None else addr)
