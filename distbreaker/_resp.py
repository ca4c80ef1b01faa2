"""Reading RESP2 replies from bytes, for the lean send path (`_transport.Lane`).

`reader()` makes hiredis's compiled `Reader` (a dependency, through ``redis[hiredis]``), or, where
hiredis cannot be imported (``pip install --no-deps``, a platform without its wheel), `PyReader`:
the same ``feed``/``gets``/``has_data`` contract in Python, for RESP2. Measured here
(benchmarks/floor.py prints both): hiredis reads an 18-field record reply in ~0.6 µs, `PyReader`
in ~4 µs and redis-py's own pure-Python parser, with its socket buffer, in ~20 µs; so hiredis is
what a default install runs, and `PyReader` keeps the hot path off redis-py's parser without it.

Both return an error reply as a `ReplyError` instance (not raised: the caller turns it into
redis-py's exception class for the connection) and raise `ProtocolError` on bytes that are not
RESP2.
"""

from __future__ import annotations

from typing import Any

__all__ = ["HIREDIS", "ProtocolError", "PyReader", "ReplyError", "reader"]

hiredis: Any
try:
    import hiredis
except ImportError:  # pragma: no cover - hiredis is a dependency; exercised by hiding it
    hiredis = None

HIREDIS: bool = hiredis is not None


class ReplyError(Exception):
    """An error reply (``-ERR ...``); ``args[0]`` is its text."""


class ProtocolError(Exception):
    """The bytes are not a RESP2 reply: the connection is out of step and must be dropped."""


class _Incomplete(Exception):
    pass


_INCOMPLETE = _Incomplete()


def reader(encoding: str | None = None, errors: str = "strict") -> Any:
    """A reader for one connection: hiredis's when installed, else `PyReader`. With `encoding`,
    bulk and simple strings are decoded (a client made with ``decode_responses=True``)."""
    if hiredis is not None:
        if encoding:
            return hiredis.Reader(protocolError=ProtocolError, replyError=ReplyError, encoding=encoding, errors=errors)
        return hiredis.Reader(protocolError=ProtocolError, replyError=ReplyError)
    return PyReader(encoding, errors)


class PyReader:
    """`hiredis.Reader`'s ``feed``/``gets``/``has_data`` for RESP2, in Python.

    ``gets()`` returns the next complete reply, or False while it has not arrived in full. A
    reply that arrives in several pieces is parsed again from its start when the next piece
    comes: cheap for the small replies of the breaker's scripts.
    """

    __slots__ = ("_buf", "_encoding", "_errors")

    def __init__(self, encoding: str | None = None, errors: str = "strict") -> None:
        self._buf = b""
        self._encoding = encoding
        self._errors = errors

    def feed(self, data: bytes | bytearray | memoryview, offset: int = 0, length: int = -1) -> None:
        """Add bytes (``data[offset:offset + length]``; the rest of `data` when `length` is -1)."""
        if offset or length != -1:
            data = memoryview(data)[offset : None if length == -1 else offset + length]
        self._buf += bytes(data)

    def has_data(self) -> bool:
        """True when bytes wait that no `gets` consumed."""
        return bool(self._buf)

    def gets(self) -> Any:
        """The next reply, or False when it is not complete yet."""
        buf = self._buf
        if not buf:
            return False
        value = _flat(buf)
        if value is None:  # not a flat array of integers and bulk strings filling the buffer
            try:
                value, end = _parse(buf, 0)
            except _Incomplete:
                return False
            self._buf = buf[end:]
        else:
            self._buf = b""
        if self._encoding:
            value = _decode(value, self._encoding, self._errors)
        return value


def _flat(buf: bytes) -> list[Any] | None:
    """The common reply, fast: an array of integers and bulk strings that is the whole buffer.
    None for anything else, a cut-short reply included (the general parser then decides)."""
    if buf[:1] != b"*" or buf[-2:] != b"\r\n":
        return None
    tokens = buf[:-2].split(b"\r\n")  # no empty token after the final CRLF
    out: list[Any] = []
    append = out.append
    it = iter(tokens)
    try:
        n = int(next(it)[1:])
        for t in it:
            kind = t[:1]
            if kind == b":":
                append(int(t[1:]))
            elif kind == b"$":
                size = int(t[1:])
                if size < 0:
                    append(None)
                    continue
                value = next(it, None)
                if value is None or len(value) != size:  # cut short, or CRLF inside the string
                    return None
                append(value)
            else:
                return None
    except ValueError:
        return None
    return out if len(out) == n else None


def _line(buf: bytes, pos: int) -> tuple[bytes, int]:
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _INCOMPLETE
    return buf[pos:end], end + 2


def _parse(buf: bytes, pos: int) -> tuple[Any, int]:
    """One RESP2 value at `pos`: (value, position after it). Raises _Incomplete or ProtocolError."""
    if pos >= len(buf):
        raise _INCOMPLETE
    line, pos = _line(buf, pos)
    kind, rest = line[:1], line[1:]
    try:
        if kind == b":":
            return int(rest), pos
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None, pos
            end = pos + size
            if len(buf) < end + 2:
                raise _INCOMPLETE
            if buf[end : end + 2] != b"\r\n":
                raise ProtocolError(f"bulk string of {size} bytes not followed by CRLF")
            return buf[pos:end], end + 2
        if kind == b"*":
            count = int(rest)
            if count < 0:
                return None, pos
            items = []
            for _ in range(count):
                item, pos = _parse(buf, pos)
                items.append(item)
            return items, pos
    except ValueError:
        raise ProtocolError(f"bad length or integer {line[:40]!r}") from None
    if kind == b"+":
        return rest, pos
    if kind == b"-":
        return ReplyError(rest.decode("utf-8", "replace")), pos
    raise ProtocolError(f"not a RESP2 reply: {line[:40]!r}")


def _decode(value: Any, encoding: str, errors: str) -> Any:
    if type(value) is bytes:
        return value.decode(encoding, errors)
    if type(value) is list:
        return [_decode(v, encoding, errors) for v in value]
    return value
