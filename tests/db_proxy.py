"""A TCP proxy the test controls, between the app and PostgreSQL: it forwards, refuses (closes
every connection, new ones at once), or blackholes (keeps connections open and passes nothing
on, like a network that silently drops packets)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from psycopg.conninfo import conninfo_to_dict


@dataclass
class DatabaseProxy:
    upstream_url: str
    mode: str = "forward"  # forward | refuse | blackhole
    port: int = 0
    _server: asyncio.Server | None = None
    _links: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _flowing: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> DatabaseProxy:
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self) -> str:
        info = conninfo_to_dict(self.upstream_url)
        user = info.get("user", "postgres")
        return f"postgresql://{user}@127.0.0.1:{self.port}/{info['dbname']}"

    def set(self, mode: str) -> None:
        """Switch mode; `refuse` also cuts every open connection."""
        self.mode = mode
        if mode == "blackhole":
            self._flowing.clear()
        else:
            self._flowing.set()
        if mode == "refuse":
            for writer in list(self._writers):
                writer.close()

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        info = conninfo_to_dict(self.upstream_url)
        host, port = str(info.get("host") or "127.0.0.1"), int(str(info.get("port") or 5432))
        if host.startswith("/"):
            return await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
        return await asyncio.open_connection(host, port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "refuse":
            writer.close()
            return
        self._writers.add(writer)
        try:
            if self.mode == "blackhole":
                await reader.read()  # swallow until the client gives up
                return
            up_reader, up_writer = await self._open_upstream()
            self._writers.add(up_writer)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                await self._flowing.wait()  # a blackhole holds everything back
                if self.mode == "refuse":
                    break
                sink.write(data)
                await sink.drain()
        finally:
            self._writers.discard(sink)
            sink.close()

    async def stop(self) -> None:
        self.set("refuse")
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
