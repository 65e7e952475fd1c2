"""The gateway refuses early: authentication before any of the body is read, the size limit
while reading, one error shape everywhere (and in the OpenAPI document), strict intake fields.

The ASGI app is called directly with a `receive` that counts what it hands out, so "not read"
is exact; one test also runs the real server and streams 100 MB at it over a socket.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import orjson
import pytest
import uvicorn

from counterpoint.bus.decode import InputLimits
from counterpoint.infra.broker import free_port
from counterpoint.infra.gateway import create_app
from counterpoint.infra.gateway_auth import parse_approvers
from counterpoint.schemas.events import SimpleAlert, Ticket
from tests.unit.test_gateway import DEAD, TICKET, client, fields

CHUNK = 1 << 20  # what the counting body hands out per receive()
ROUTES = [("POST", "/v1/tickets"), ("POST", "/v1/alerts/alertmanager"), ("POST", "/v1/events"),
          ("POST", "/v1/approvals/0123456789"), ("GET", "/v1/requests/r-1")]
# Signed by the provider instead of a bearer token, but bounded in size all the same.
WEBHOOKS = [("POST", "/v1/webhooks/github"), ("POST", "/v1/webhooks/pagerduty")]


def secured(**kw: Any) -> Any:
    return create_app(DEAD, track=False, token="s3cret",
                      approvers=parse_approvers('{"alice": "alice-token"}'),
                      webhook_secrets={"github": b"gh", "pagerduty": b"pd"}, **kw)


class Body:
    """An endless body of CHUNK-sized messages (up to `chunks`), counting what was taken."""

    def __init__(self, chunks: int = 100) -> None:
        self.chunks, self.taken = chunks, 0

    async def receive(self) -> dict[str, Any]:
        if self.taken >= self.chunks:
            return {"type": "http.disconnect"}
        self.taken += 1
        return {"type": "http.request", "body": b"x" * CHUNK,
                "more_body": self.taken < self.chunks}


async def call(app: Any, method: str, path: str, body: Body,
               headers: list[tuple[bytes, bytes]]) -> tuple[int, dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 1), "server": ("gw", 80)}
    await app(scope, body.receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    raw = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], orjson.loads(raw)


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("auth", [None, b"Bearer wrong", b"Basic czNjcmV0"])
async def test_no_or_a_wrong_token_is_401_before_any_of_the_body_is_read(
        method: str, path: str, auth: bytes | None) -> None:
    body = Body()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"104857600")]
    if auth is not None:
        headers.append((b"authorization", auth))
    status, error = await call(secured(), method, path, body, headers)
    assert status == 401 and set(error) == {"error", "fields"}
    assert body.taken == 0  # not one byte of the 100 MB was asked for


@pytest.mark.parametrize(("method", "path"), ROUTES + WEBHOOKS)
async def test_a_body_over_the_limit_is_413_while_reading_not_after(
        method: str, path: str) -> None:
    app = secured(limits=InputLimits(max_bytes=3 * CHUNK))
    auth = [(b"authorization", b"Bearer alice-token"), (b"x-hub-signature-256", b"sha256=00"),
            (b"x-pagerduty-signature", b"v1=00")]
    declared = Body()
    status, error = await call(app, method, path, declared,
                               [*auth, (b"content-length", str(100 * CHUNK).encode())])
    assert status == 413 and declared.taken == 0 and "limit" in error["error"]
    if method == "GET":
        return  # a route that reads no body never holds one
    chunked = Body()  # no Content-Length: counted as the route reads it
    status, error = await call(app, method, path, chunked,
                               [*auth, (b"transfer-encoding", b"chunked")])
    assert status == 413 and chunked.taken == 4, chunked.taken
    assert error["fields"] == [{"field": "(value)", "problem": "too large"}]


def _stream_without_token(port: int, total: int) -> tuple[int, bytes]:
    """POST `total` bytes chunked to the approval route with no token, reading the answer as
    soon as there is one: (bytes of body sent by then, the response)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"POST /v1/approvals/x HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json"
                 b"\r\nTransfer-Encoding: chunked\r\n\r\n")
    piece = b"x" * 65536
    frame = b"%x\r\n" % len(piece) + piece + b"\r\n"
    sent, answer, pending = 0, b"", b""
    sock.setblocking(False)
    deadline = time.monotonic() + 60
    while sent < total and time.monotonic() < deadline:
        try:
            answer += sock.recv(65536)
            if answer:
                break
        except BlockingIOError:
            pass
        try:
            pending = pending or frame
            n = sock.send(pending)  # what the kernel took; the rest goes first next time
            pending, sent = pending[n:], sent + n
        except BlockingIOError:
            time.sleep(0.001)
        except OSError:  # the server closed the connection after answering
            break
    sock.setblocking(True)
    sock.settimeout(10)
    try:
        while b"\r\n\r\n" not in answer:
            more = sock.recv(65536)
            if not more:
                break
            answer += more
    except OSError:
        pass
    sock.close()
    return sent, answer


async def test_over_a_real_socket_a_100_mb_body_without_a_token_is_refused_unread() -> None:
    """Finding 3: 100 MB with no token were read and parsed before the 401 (10-12 s,
    435-778 MB). Now the 401 comes while the body is still being sent."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(secured(), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.05)
        total = 100 * CHUNK
        sent, answer = await asyncio.to_thread(_stream_without_token, port, total)
    finally:
        server.should_exit = True
        await serving
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    # Kernel socket buffers take some megabytes before anyone reads; the rest is never sent.
    assert sent < total // 4, f"{sent:,} of {total:,} bytes went out before the 401"


# --- one error shape ------------------------------------------------------------------------


async def test_unknown_paths_and_methods_answer_in_the_error_shape() -> None:
    async with client(secured()) as http:
        auth = {"Authorization": "Bearer s3cret"}
        r = await http.get("/v1/nothing", headers=auth)
        assert r.status_code == 404 and fields(r) == {"path": "Not Found"}
        r = await http.get("/v1/approvals/x", headers=auth)
        assert r.status_code == 405 and fields(r) == {"path": "Method Not Allowed"}
        r = await http.get("/nowhere")
        assert r.status_code == 404 and "error" in r.json()
        r = await http.post("/v1/tickets", headers={**auth, "content-length": "abc"},
                            content=b"{}")
        assert r.status_code == 400 and "Content-Length" in fields(r)


async def test_the_openapi_document_gives_every_route_its_error_responses() -> None:
    async with client(secured()) as http:
        doc = (await http.get("/openapi.json")).json()
    ref = "#/components/schemas/ErrorBody"
    assert set(doc["components"]["schemas"]["ErrorBody"]["properties"]) == {"error", "fields"}
    for path, ops in doc["paths"].items():
        if not path.startswith("/v1/") or path.startswith("/v1/webhooks/"):
            continue  # provider webhooks are signed by the provider, not a bearer token
        for method, op in ops.items():
            codes = {c for c, r in op["responses"].items()
                     if r.get("content", {}).get("application/json", {}).get("schema", {})
                     .get("$ref") == ref}
            assert {"401", "413", "422"} <= codes, (method, path, sorted(codes))
            assert op.get("security"), (method, path)
    approvals = doc["paths"]["/v1/approvals/{approval_id}"]["post"]["responses"]
    assert {"400", "403", "404", "409", "503"} <= set(approvals)


# --- strict intake fields -------------------------------------------------------------------


@pytest.mark.parametrize("budget", [False, True, "inf", "Infinity", "NaN", "1.5", -1])
async def test_budget_must_be_a_finite_number_not_below_zero(budget: Any) -> None:
    async with client(secured()) as http:
        r = await http.post("/v1/tickets", headers={"Authorization": "Bearer s3cret"},
                            json=dict(TICKET, budget_usd=budget))
    assert r.status_code == 422 and "budget_usd" in fields(r), r.text
    for fine in (0, 0.25, 3):
        assert Ticket.model_validate(dict(TICKET, budget_usd=fine)).budget_usd == fine
    with pytest.raises(ValueError, match="budget_usd"):
        Ticket.model_validate_json(b'{"id": "T", "body": "b", "budget_usd": 1e400}')


BAD_URLS = ["http://[::1", "http://host:99999/hook", "http://exa mple.com/", "http://:80/",
            "ftp://files.example/x", "http:/one-slash", "https://" + "a" * 64 + ".example/",
            "http://a..b/", "https://ex%ample.com/"]


@pytest.mark.parametrize("url", BAD_URLS)
async def test_an_invalid_callback_url_is_a_422_at_intake_not_a_202(url: str) -> None:
    async with client(secured()) as http:
        r = await http.post("/v1/tickets", headers={"Authorization": "Bearer s3cret"},
                            json=dict(TICKET, callback_url=url))
    assert r.status_code == 422 and "callback_url" in fields(r), r.text
    with pytest.raises(ValueError, match="callback_url"):
        SimpleAlert.model_validate({"id": "A", "service": "s", "summary": "x",
                                    "callback_url": url})


def test_valid_callback_urls_are_kept_as_sent() -> None:
    for url in ("https://crm.example/hook?x=1", "http://127.0.0.1:8080/cb", "http://[::1]:9/",
                "https://user@hooks.example.com./path"):
        assert Ticket.model_validate(dict(TICKET, callback_url=url)).callback_url == url
