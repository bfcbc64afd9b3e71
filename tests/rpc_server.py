"""Test infrastructure for outages: the embedded EVM (eth-tester) served over real HTTP JSON-RPC on
127.0.0.1, and a TCP proxy in front of it that can be stopped (connections refused, open ones cut)
and started again on the same port.

The server answers each JSON-RPC request through eth-tester's own request/result formatters (the
middleware web3's EthereumTesterProvider runs in process), so a web3 HTTPProvider client sees what
it would see from any node: a revert comes back as JSON-RPC error 3 with the ABI-encoded reason,
which web3 raises as ContractLogicError. Every request and every `mine()` runs under one lock:
eth-tester is not thread-safe."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from adapters.chain.evm import EmbeddedEVM


class EmbeddedRPCServer:
    """`EmbeddedEVM` on http://127.0.0.1:<port>/ (port 0: any free one)."""

    def __init__(self, evm: EmbeddedEVM | None = None, port: int = 0):
        from web3.middleware import combine_middleware
        from web3.providers.eth_tester import EthereumTesterProvider

        self.evm = evm or EmbeddedEVM()
        self.lock = threading.RLock()
        provider = self.evm.w3.provider
        # only the provider's own formatters: the client's web3 applies its own on its side
        self._request = combine_middleware(middleware=EthereumTesterProvider._middleware, w3=self.evm.w3,
                                           provider_request_fn=provider.make_request)
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real nodes: the proxy must cut open connections
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    req = json.loads(body)
                    out = ([server.answer(r) for r in req] if isinstance(req, list) else server.answer(req))
                except ValueError as exc:
                    out = {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": str(exc)}}
                data = _encode(out)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="rpc-server", daemon=True)

    def answer(self, req: dict) -> dict:
        from eth_abi import encode
        from eth_tester.exceptions import TransactionFailed

        rid = req.get("id")
        with self.lock:
            self.requests += 1
            try:
                resp = self._request(req["method"], req.get("params") or [])
            except TransactionFailed as exc:
                message = str(exc.args[0] if exc.args else exc)
                reason = message.removeprefix("execution reverted: ")
                data = "0x08c379a0" + encode(["string"], [reason]).hex()  # Error(string), as nodes send it
                return {"jsonrpc": "2.0", "id": rid, "error": {"code": 3, "message": message, "data": data}}
            except Exception as exc:  # noqa: BLE001 - any server-side failure is a JSON-RPC error to the client
                return {"jsonrpc": "2.0", "id": rid, "error": {"code": -32000, "message": f"{type(exc).__name__}: {exc}"}}
        resp = dict(resp)
        resp["id"] = rid
        return resp

    # chain control, from the test (in process, under the same lock as the requests)
    def mine(self, n: int = 1) -> None:
        with self.lock:
            self.evm.mine(n)

    def head(self) -> int:
        with self.lock:
            return int(self.evm.w3.eth.block_number)

    def head_time(self) -> int:
        with self.lock:
            return self.evm.head_time()

    def start(self) -> "EmbeddedRPCServer":
        self._thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _encode(obj) -> bytes:
    from web3._utils.encoding import Web3JsonEncoder

    return json.dumps(obj, cls=Web3JsonEncoder).encode()


class TCPProxy:
    """127.0.0.1:<port> forwarding to `target`. `stop()` closes the listening socket (new
    connections are refused by the kernel) and cuts every open connection; `start()` listens on
    the same port again. `connections` counts the connections forwarded."""

    def __init__(self, target: tuple[str, int], port: int = 0):
        self.target = target
        self.port = port
        self.connections = 0
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.up = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> "TCPProxy":
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self.up = True
        threading.Thread(target=self._accept, args=(listener,), name="rpc-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        with self._lock:
            self.up = False
            listener, self._listener = self._listener, None
            conns, self._open = self._open, set()
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        for s in conns:
            _close(s)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                _close(client)
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if not self.up:
                    _close(client)
                    _close(upstream)
                    continue
                self.connections += 1
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(src)
                self._open.discard(dst)
            _close(src)
            _close(dst)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()
