"""Search engines meet the reranker: everything that knows Elasticsearch and OpenSearch.

In the order a search flows:

- :mod:`.elasticsearch`, :mod:`.opensearch`: drop-in wrappers of the official clients
  (sync and async), thin shells over :mod:`._client`;
- :mod:`.proxy`: the transparent search proxy (ASGI);
- :mod:`.core`: what both share, engine-neutral and without I/O — plan the request, build
  the pairs from the hits, run the flow, rewrite the response;
- :mod:`.training`, :mod:`.evaluation`: fine-tuning from an index and measuring on a
  judged collection; :mod:`.nodes`: real engine nodes without Docker; :mod:`.connect`;
- :mod:`.cli`: every ``crossrank`` command (eval, train, demo, nodes, serve, proxy).
"""
