"""The floor of one more hop: crossrank's proxy (reranking off) against a raw TCP relay and a
minimal aiohttp proxy (server and client, no checks), interleaved with direct calls to one
OpenSearch 2.19.6 node (a one-document index, `size: 10`), 1,100 timed requests each.

    python benchmarks/bench_proxy_floor.py
"""

# ruff: noqa: E501
import subprocess
import sys
import time

import httpx

from crossrank.adapters.nodes import EngineNode
from crossrank.adapters.processes import free_port

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
PROXY = r"""
import sys, uvicorn
from crossrank.adapters.proxy import ProxySettings, create_app
from crossrank.adapters.proxy.server import ProxyHttpProtocol
from crossrank.reranker import RerankConfig
app = create_app(ProxySettings(upstream=sys.argv[1], rerank=RerankConfig(enabled=False), preload=False))
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), http=ProxyHttpProtocol, log_level="warning", lifespan="on")
"""
with EngineNode("opensearch:2.19.6") as node:
    httpx.put(node.url + "/b", json={"settings": {"number_of_shards": 1}}).raise_for_status()
    httpx.post(node.url + "/b/_doc?refresh=true", json={"text": "hello world"}).raise_for_status()
    host, uport = node.url.removeprefix("http://").split(":")
    procs, urls = [], {}
    for kind, code, extra in (
        ("raw", RAW, [host, uport]),
        ("aiohttp", AIO, [node.url]),
        ("crossrank", PROXY, [node.url]),
    ):
        port = free_port()
        args = [*extra, str(port)] if kind != "raw" else [host, uport, str(port)]
        procs.append(subprocess.Popen([sys.executable, "-c", code, *args]))
        urls[kind] = f"http://127.0.0.1:{port}"
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
    for k, v in t.items():
        v.sort()
        p50, p90, p99 = v[len(v) // 2], v[int(len(v) * 0.9)], v[int(len(v) * 0.99)]
        print(f"{k} p50 {p50:.3f} p90 {p90:.3f} p99 {p99:.3f} ms")
    for p in procs:
        p.terminate()
