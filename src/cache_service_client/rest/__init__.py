"""The REST API's contract, shared by the gateway and the HTTP repository.

- :mod:`cache_service_client.rest.wire`: paths, JSON bodies, the encoding of device ids, and the
  error table (every error code with its status and the library's exception).
- :mod:`cache_service_client.rest.endpoints`: every endpoint, declared once (method, path,
  bodies, query parameters, the repository operation it serves, its documentation).

The gateway's routes, the HTTP repository's requests, the OpenAPI document and both error
translations are made from them. Neither imports a web framework or an HTTP client.
"""
