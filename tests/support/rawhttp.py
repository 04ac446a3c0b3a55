"""Raw HTTP/1.1 exchanges for hostile-input tests: bytes an ordinary client refuses to send."""

from __future__ import annotations

import asyncio


async def exchange(url: str, head: bytes, body_parts: list[bytes] = (), timeout: float = 5.0) -> bytes:  # type: ignore[assignment]
    """Send `head` then `body_parts` on a new connection (the body need not be complete); return the
    first bytes the server answers within `timeout` s. An answer to an unfinished body proves the
    server did not wait for the rest."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head)
        for part in body_parts:
            writer.write(part)
            await writer.drain()
        return await asyncio.wait_for(reader.read(65536), timeout=timeout)
    finally:
        writer.close()


def status_of(answer: bytes) -> int:
    """The status code of a raw HTTP/1.1 answer (0 when there is none)."""
    parts = answer.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
