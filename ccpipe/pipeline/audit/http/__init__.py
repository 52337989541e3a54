"""The audit trail's HTTP API (OpenAPI 3.1 documented) and its web page. Read-only.

Modules, along the data flow of one request:

* :mod:`.params` — query strings and path parts → :class:`~ccpipe.pipeline.audit.query.EventFilter`
  and checked values (pure; raises :class:`.errors.BadRequest`);
* :mod:`.reader` — :class:`.reader.AuditReader`, the synchronous read side over an
  :class:`~ccpipe.pipeline.audit.query.AuditIndex` and the Merkle log store (proofs, checkpoints);
* :mod:`.custody` — a workload's events → its chain of custody, stage by stage (pure);
* :mod:`.models` — pydantic models of every response (the OpenAPI schemas come from them);
* :mod:`.app` — the aiohttp application: routes, one error mapping, the static page;
* :mod:`.limits` — request timeouts and the bound on heavy queries;
* :mod:`.openapi` — the OpenAPI document;
* :mod:`.service` — :func:`.service.serve_audit_api`, the ``ccpipe up`` service factory.

``static/`` holds the web page (plain HTML, one vanilla JS file, one stylesheet; no
framework, nothing fetched from elsewhere). Imports ``ccpipe.pipeline.audit``, ``schemas`` and
aiohttp; never a stage.
"""
