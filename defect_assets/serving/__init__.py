"""The scoring web service (FastAPI on uvicorn) and its client.

- ``settings``: ServiceSettings, read from environment variables;
- ``models``: the served model (scorer + production threshold) and its hot reload;
- ``batching``: concurrent requests micro-batched into one model call, off the event loop;
- ``inspection``: sliding windows over a large photo, heatmap, located defects (pure NumPy);
- ``uploads``: multipart bodies parsed in memory; ``schemas``: the JSON shapes for OpenAPI;
- ``app``: ``create_app(settings)``, the routes and their JSON errors;
- ``client``: ``DefectClient``, the small Python client (standard library only);
- ``smoke``: the deployment check over HTTP (wait for a version, golden patches);
- ``tiny``: a tiny SYNTHETIC dent detector for tests and the benchmark.
"""
