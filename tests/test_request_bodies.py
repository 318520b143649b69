"""Request bodies are bounded in size and time and read before the database is touched: a huge
body is a 413 without being read, a client that stops sending is a 408, and clients dripping
their bodies hold no database connection, so everyone else is still served."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import uvicorn

from service import bootstrap
from service.app import create_app
from service.core.settings import Settings
from tests.support import Api, forget_committed, problem

MIB = 1024 * 1024


async def test_a_body_announced_over_the_limit_is_413_before_it_is_read(api: Api):
    response = await api.client.post(
        "/v1/organizations",
        content=b"x" * (MIB + 1),
        headers={**api.admin, "Content-Type": "application/json"},
    )
    body = problem(response, 413)
    assert body["detail"] == f"The request body may be at most {MIB} bytes"


async def test_a_chunked_body_is_counted_and_refused_past_the_limit(api: Api):
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"x" * (MIB // 4)

    response = await api.client.post(
        "/v1/organizations",
        content=chunks(),
        headers={**api.admin, "Content-Type": "application/json"},
    )
    problem(response, 413)


async def test_a_body_at_the_limit_is_read_and_judged_on_its_content(api: Api):
    padded = b'{"name": "' + b"x" * (MIB - 100) + b'"}'
    response = await api.client.post(
        "/v1/organizations",
        content=padded,
        headers={**api.admin, "Content-Type": "application/json"},
    )
    assert response.status_code == 422  # read whole, then refused by the schema (name length)


@pytest.fixture
def dripped_server(settings: Settings, database_url: str) -> Iterator[tuple[int, str]]:
    """A live server with a small pool and a 1 s body deadline; yields (port, admin key)."""
    app = create_app(
        settings.model_copy(
            update={
                "scheduler": False,
                "db_pool_size": 1,
                "db_pool_timeout": 1.0,
                "body_timeout": 1.0,
            }
        )
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    key = asyncio.run(bootstrap.create_key(settings, role="admin", name="dripping admin"))
    try:
        yield sock.getsockname()[1], key
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()
        forget_committed(database_url, key_names=["dripping admin"])


def _start_dripping(port: int, key: str) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port))
    client.sendall(
        b"POST /v1/organizations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: Bearer {key}\r\n".encode()
        + b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"name"'
    )
    return client


def test_clients_that_stop_sending_get_408_and_hold_no_database_connection(
    dripped_server: tuple[int, str],
):
    port, key = dripped_server
    # Twenty clients start a body and stop: with one pooled connection (two with overflow),
    # each of them holding one would starve the server.
    drippers = [_start_dripping(port, key) for _ in range(20)]
    try:
        me = httpx.get(f"http://127.0.0.1:{port}/v1/me", headers={"Authorization": f"Bearer {key}"})
        assert me.status_code == 200
        for client in drippers:
            client.settimeout(10)
            answer = client.recv(4096).decode()
            status_line, _, rest = answer.partition("\r\n")
            assert status_line == "HTTP/1.1 408 Request Timeout", answer
            assert "application/problem+json" in rest
    finally:
        for client in drippers:
            client.close()
