"""The floor of one more hop: crossrank's proxy (``crossrank proxy --disable``: reranking off)
against a raw TCP relay and a minimal aiohttp proxy (server and client, no checks),
interleaved with direct calls to one OpenSearch 2.19.6 node (a one-document index, `size: 10`),
1,100 timed requests each.

``--stacks`` adds the same proxy application on other HTTP stacks, to show where the time
goes: uvicorn with h11 or with plain httptools, granian (a Rust ASGI server), each with httpx's
own transport or an aiohttp one (``httpx-aiohttp``); those that are not installed are skipped
with a line saying so (``pip install granian httpx-aiohttp`` for all of them).

    python benchmarks/bench_proxy_floor.py [--stacks]
"""

# ruff: noqa: E501
import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time

import httpx

from crossrank.adapters.nodes import EngineNode
from crossrank.adapters.processes import CrossrankProcess, free_port

RAW = r"""
import asyncio, sys, uvloop
up_host, up_port, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
async def pipe(r, w):
    try:
        while True:
            d = await r.read(65536)
            if not d: break
            w.write(d)
    finally:
        w.close()
async def handle(cr, cw):
    ur, uw = await asyncio.open_connection(up_host, up_port)
    await asyncio.gather(pipe(cr, uw), pipe(ur, cw))
async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", port)
    async with srv: await srv.serve_forever()
uvloop.run(main())
"""
AIO = r"""
import sys, aiohttp
from aiohttp import web
up, port = sys.argv[1], int(sys.argv[2])
async def on_start(app): app["s"] = aiohttp.ClientSession(auto_decompress=False)
async def handle(req):
    body = await req.read()
    hdrs = {k: v for k, v in req.headers.items() if k.lower() not in ("host", "connection")}
    async with req.app["s"].request(req.method, up + req.rel_url.raw_path_qs, data=body, headers=hdrs) as r:
        data = await r.read()
        h = {k: v for k, v in r.headers.items() if k.lower() not in ("connection", "transfer-encoding")}
        return web.Response(status=r.status, body=data, headers=h)
async def on_cleanup(app): await app["s"].close()
app = web.Application(); app.on_startup.append(on_start); app.on_cleanup.append(on_cleanup); app.router.add_route("*", "/{tail:.*}", handle)
web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)
"""
# The proxy application on another stack: argv = upstream, port, server, transport.
STACK_APP = r"""
import os
from crossrank.adapters.proxy import ProxySettings, create_app
from crossrank.reranker import RerankConfig
transport = None
if os.environ["STACK_TRANSPORT"] == "aiohttp":
    from httpx_aiohttp import AiohttpTransport
    transport = AiohttpTransport()
elif os.environ["STACK_TRANSPORT"] == "httpx":
    import httpx
    transport = httpx.AsyncHTTPTransport()
settings = ProxySettings(upstream=os.environ["STACK_UPSTREAM"], rerank=RerankConfig(enabled=False), preload=False)
app = create_app(settings, transport=transport)
"""
UVICORN = r"""
import sys, uvicorn, stack_app
uvicorn.run(stack_app.app, host="127.0.0.1", port=int(sys.argv[1]), http=sys.argv[2], loop="uvloop", log_level="warning", lifespan="on", proxy_headers=False)
"""
GRANIAN = r"""
import sys
from granian import Granian
Granian("stack_app:app", address="127.0.0.1", port=int(sys.argv[1]), interface="asgi", loop="uvloop", log_enabled=False).serve()
"""
STACKS = [  # name, server, transport
    ("uvicorn h11 + httpx", "h11", "httpx"),
    ("uvicorn httptools + httpx", "httptools", "httpx"),
    ("uvicorn h11 + aiohttp", "h11", "aiohttp"),
    ("uvicorn httptools + aiohttp", "httptools", "aiohttp"),
    ("granian + httpx", "granian", "httpx"),
    ("granian + aiohttp", "granian", "aiohttp"),
]


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--stacks", action="store_true", help="also the proxy on other HTTP stacks")
stack_runs = parser.parse_args().stacks
with EngineNode("opensearch:2.19.6") as node, tempfile.TemporaryDirectory() as tmp:
    httpx.put(node.url + "/b", json={"settings": {"number_of_shards": 1}}).raise_for_status()
    httpx.post(node.url + "/b/_doc?refresh=true", json={"text": "hello world"}).raise_for_status()
    host, uport = node.url.removeprefix("http://").split(":")
    procs, urls = [], {}
    for kind, code, args in (("raw", RAW, [host, uport]), ("aiohttp", AIO, [node.url])):
        port = free_port()
        procs.append(subprocess.Popen([sys.executable, "-c", code, *args, str(port)]))
        urls[kind] = f"http://127.0.0.1:{port}"
    crossrank = CrossrankProcess("proxy", ["--upstream", node.url, "--disable", "--log-level", "warning"])
    urls["crossrank"] = crossrank.start(180.0).url
    if stack_runs:
        with open(os.path.join(tmp, "stack_app.py"), "w") as f:
            f.write(STACK_APP)
        for name, server, transport in STACKS:
            missing = [m for m in (("granian",) if server == "granian" else ()) + (("httpx_aiohttp",) if transport == "aiohttp" else ()) if not _installed(m)]
            if missing:
                print(f"{name}: skipped, {', '.join(missing)} not installed")
                continue
            port = free_port()
            env = {**os.environ, "STACK_UPSTREAM": node.url, "STACK_TRANSPORT": transport, "PYTHONPATH": tmp}
            code = GRANIAN if server == "granian" else UVICORN
            procs.append(subprocess.Popen([sys.executable, "-c", code, str(port), server], env=env, cwd=tmp))
            urls[name] = f"http://127.0.0.1:{port}"
    for url in urls.values():  # each answers a search through to the engine, or 60 s pass
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.post(url + "/b/_search", json={}, timeout=5).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    clients = {k: httpx.Client(base_url=u, timeout=30) for k, u in urls.items()}
    clients["direct"] = httpx.Client(base_url=node.url)
    t = {k: [] for k in clients}
    body = {"query": {"match": {"text": "hello"}}, "size": 10}
    for i in range(1200):
        for k, c in clients.items():
            s = time.perf_counter()
            c.post("/b/_search", json=body).raise_for_status()
            if i >= 100:
                t[k].append((time.perf_counter() - s) * 1000)
    direct = sorted(t["direct"])
    d50, d99 = direct[len(direct) // 2], direct[int(len(direct) * 0.99)]
    for k, v in t.items():
        v.sort()
        p50, p90, p99 = v[len(v) // 2], v[int(len(v) * 0.9)], v[int(len(v) * 0.99)]
        print(f"{k:28s} p50 {p50:.3f} (+{p50 - d50:.3f}) p90 {p90:.3f} p99 {p99:.3f} (+{p99 - d99:.3f}) ms")
    for p in procs:
        p.terminate()
    crossrank.stop()
