"""KServe V2 REST (HTTP/JSON) on every pod, with the same routing as gRPC.

``start_rest(pod, host, port, ssl_context=rest_ssl_context(settings))`` serves the V2 REST routes
on the pod's own event loop; ``await server.close()`` stops it. :mod:`plane.rest.codec` converts
JSON (and the binary tensor data extension) to the protobuf the pod's router takes, and back;
:mod:`plane.rest.errors` maps the pod's errors to HTTP statuses.
"""

from plane.rest.server import RestLimits, RestServer, rest_ssl_context, start_rest

__all__ = ["RestLimits", "RestServer", "rest_ssl_context", "start_rest"]
