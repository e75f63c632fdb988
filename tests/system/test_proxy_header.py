"""The PROXY protocol header reader (server/proxy_header.py): versions 1 and 2, the
addresses it returns, what it refuses, and that it never reads past the header."""

import asyncio
import ipaddress
import struct

import pytest

from temposplit.server.proxy_header import V2_SIGNATURE, ProxyHeaderError, read_proxy_header

TLS_HELLO = b"\x16\x03\x01\x02\x00\x01"  # what follows the header: must stay unread


def read(data: bytes):
    """Parse ``data``; returns (address, the bytes left unread)."""
    buf = bytearray(data)

    async def recv_exactly(n: int) -> bytes:
        if len(buf) < n:
            raise ConnectionError("closed")
        out = bytes(buf[:n])
        del buf[:n]
        return out

    address = asyncio.run(read_proxy_header(recv_exactly))
    return address, bytes(buf)


def v2(command: int, family: int, body: bytes) -> bytes:
    return V2_SIGNATURE + struct.pack(">BBH", 0x20 | command, family, len(body)) + body


def inet4(src: str, dst: str = "10.0.0.1") -> bytes:
    return ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed + struct.pack(">HH", 40000, 7300)


def inet6(src: str, dst: str = "::1") -> bytes:
    return ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed + struct.pack(">HH", 40000, 7300)


@pytest.mark.parametrize(
    ("header", "address"),
    [
        (b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 7300\r\n", "203.0.113.7"),
        (b"PROXY TCP6 2001:db8::7 2001:db8::1 56324 7300\r\n", "2001:db8::7"),
        (b"PROXY TCP6 ::ffff:203.0.113.7 ::1 1 65535\r\n", "203.0.113.7"),
        (b"PROXY UNKNOWN\r\n", None),
        (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", None),
        (v2(1, 0x11, inet4("198.51.100.9")), "198.51.100.9"),
        (v2(1, 0x11, inet4("198.51.100.9") + b"\x04\x00\x01x"), "198.51.100.9"),  # a TLV after the addresses
        (v2(1, 0x21, inet6("2001:db8::9")), "2001:db8::9"),
        (v2(1, 0x21, inet6("::ffff:198.51.100.9")), "198.51.100.9"),
        (v2(0, 0x00, b""), None),  # LOCAL: a health check
        (v2(0, 0x11, inet4("198.51.100.9")), None),  # LOCAL ignores its block
        (v2(1, 0x00, b""), None),  # UNSPEC
        (v2(1, 0x31, bytes(216)), None),  # a Unix socket
    ],
)
def test_a_header_names_the_client_and_leaves_what_follows_unread(header, address):
    assert read(header + TLS_HELLO) == (address, TLS_HELLO)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (TLS_HELLO + bytes(20), "did not start with a PROXY protocol header"),
        (b"\r\n\r\n\x00\r\nQUIX\n" + bytes(8), "did not start with a PROXY protocol header"),
        (b"PROXY TCP4 " + b"1" * 120 + b"\r\n", "longer than 107 bytes"),
        (b"PROXY TCP4 203.0.113.7 10.0.0.1 56324\r\n", "malformed"),
        (b"PROXY UDP4 203.0.113.7 10.0.0.1 1 2\r\n", "malformed"),
        (b"PROXY TCP4 203.0.113.300 10.0.0.1 1 2\r\n", "address that is not one"),
        (b"PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n", "TCP4 line with the address"),
        (b"PROXY TCP4 203.0.113.7 10.0.0.1 65536 2\r\n", "port that is not one"),
        (b"PROXY TCP4 203.0.113.7 10.0.0.1 007 2\r\n", "port that is not one"),
        (b"PROXY TCP4 203.0.113.7 10.0.0.\xff 1 2\r\n", "not ASCII"),
        (V2_SIGNATURE + struct.pack(">BBH", 0x11, 0x11, 12) + inet4("1.2.3.4"), "version 1 is not supported"),
        (V2_SIGNATURE + struct.pack(">BBH", 0x22, 0x11, 12) + inet4("1.2.3.4"), "command 2"),
        (V2_SIGNATURE + struct.pack(">BBH", 0x21, 0x11, 5000), "block of 5000 bytes"),
        (v2(1, 0x11, bytes(8)), "IPv4 block of 8 bytes"),
        (v2(1, 0x21, bytes(20)), "IPv6 block of 20 bytes"),
        (v2(1, 0x41, bytes(12)), "family byte 0x41"),
    ],
)
def test_a_bad_header_is_a_protocol_error_that_says_why(data, words):
    with pytest.raises(ProxyHeaderError, match=words):
        read(data)


def test_a_truncated_header_ends_with_the_connection():
    for data in (b"PROXY TCP4 1.2.3.4", v2(1, 0x11, inet4("1.2.3.4"))[:20], V2_SIGNATURE[:9]):
        with pytest.raises(ConnectionError):
            read(data)
