"""A real OpenAI-compatible chat server on 127.0.0.1 for the endpoint tests, and a port
nobody listens on (a refused connection)."""

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Chat(BaseHTTPRequestHandler):
    answer: Callable[[dict], str | int]  # the request body → the reply's content, or an HTTP error status
    calls: list[dict]

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.calls.append(body)
        content = type(self).answer(body)
        if isinstance(content, int):
            self.send_response(content)
            self.end_headers()
            return
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@contextmanager
def chat_server(answer: Callable[[dict], str | int]) -> Iterator[tuple[str, list[dict]]]:
    """``(base URL ending in /v1, the request bodies received)`` of a server answering with ``answer``."""
    calls: list[dict] = []
    handler = type("Chat", (_Chat,), {"answer": staticmethod(answer), "calls": calls})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", calls
    finally:
        httpd.shutdown()


def refused_url() -> str:
    """A base URL on a port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
