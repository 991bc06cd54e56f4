"""The proxy's HTTP server side: uvicorn with the httptools (llhttp, C) parser.

uvicorn's own httptools protocol hands the application the *parsed path* of the request
target, so an absolute-form target (``GET http://other/x``) would reach the proxy as ``/x``.
:class:`ProxyHttpProtocol` gives the application the target as it was sent (as uvicorn's h11
protocol does), so :func:`.routing.check_target` refuses every non-origin form, and it answers
what the parser refuses — a malformed request, a request line or headers over the engines'
limits — with the engine's error JSON (the engines' own limits and texts: a 4,096-byte request
line, 16,384 bytes of headers, as Elasticsearch's defaults) instead of uvicorn's plain text.

Why not h11: it is pure Python; with a fast upstream client it measured about 0.3 ms more per
request (``benchmarks/bench_proxy_floor.py --stacks``; benchmarks/README.md, "Proxy overhead").
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from crossrank.adapters.proxy.errors import BadRequest, ProxyError, error_for

__all__ = ["MAX_HEADER_BYTES", "MAX_LINE_BYTES", "ProxyHttpProtocol"]

#: The engines' ``http.max_initial_line_length`` default.
MAX_LINE_BYTES = 4096
#: Elasticsearch's ``http.max_header_size`` default (OpenSearch's is 8 KiB: it answers itself).
MAX_HEADER_BYTES = 16384


class _Refused(Exception):
    """Raised in a parser callback; the parser stops and :meth:`send_400_response` answers."""


class ProxyHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the request target as sent and engine-shaped 400s."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0
        self._refusal: ProxyError | None = None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) + 16 > MAX_LINE_BYTES:  # method, spaces and version
            self._refuse(
                BadRequest(
                    f"An HTTP line is larger than {MAX_LINE_BYTES} bytes.",
                    kind="too_long_http_line_exception",
                )
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > MAX_HEADER_BYTES:
            self._refuse(
                BadRequest(
                    f"HTTP header is larger than {MAX_HEADER_BYTES} bytes.",
                    kind="too_long_http_header_exception",
                )
            )

    def on_headers_complete(self) -> None:
        target = self.url
        if not target.startswith(b"/"):
            self.url = b"/"  # parsable for uvicorn; the application sees ``target`` below
        super().on_headers_complete()
        if self.scope is not None:  # the same dict the request's task will read
            self.scope["raw_path"] = target.partition(b"?")[0]

    def _refuse(self, error: ProxyError) -> None:
        self._refusal = error
        raise _Refused(error.reason)

    def send_400_response(self, msg: str) -> None:
        """The parser refused the request: the engine's error JSON, then close."""
        refusal = self._refusal or BadRequest(f"invalid HTTP request: {msg}")
        status, body = error_for(refusal)
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[status],
                    b"content-type: application/json; charset=UTF-8\r\n",
                    b"content-length: " + str(len(body)).encode() + b"\r\n",
                    b"connection: close\r\n\r\n",
                    body,
                ]
            )
        )
        self.transport.close()
