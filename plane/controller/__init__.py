"""The KServe controller: InferenceServices and Predictors in ModelMesh mode, reconciled into the
plane's registry, with their status written back (``mesh controller``).

A ModelMesh user keeps their YAML, their ``storage-config`` Secret and their scripts: the
controller does what kserve/modelmesh-serving's predictor controller does for them (one vmodel per
resource, owned by ``isvc`` or ``ksp``, targeting a concrete model whose id changes with the spec;
status in KServe's shape), and what modelmesh-runtime-adapter's puller does with the storage
parameters, through :class:`plane.api.PlaneClient`, so every registration rule stays in
:mod:`plane.operations`.

Layers (the decisions are pure, the I/O wraps them):

* :mod:`~plane.controller.kserve` - resources -> :class:`~plane.controller.kserve.Predictor`; type labels, model ids
* :mod:`~plane.controller.storage` - the puller's storage resolution against the Secret's documents
* :mod:`~plane.controller.status` - registry records -> model state -> InferenceService / Predictor status
* :mod:`~plane.controller.reconcile` - :func:`~plane.controller.reconcile.plan`: what to register and remove
* :mod:`~plane.controller.kube_io` - list, watch, read Secrets, patch status (the ``kubernetes`` client)
* :mod:`~plane.controller.runner` - :class:`~plane.controller.runner.Controller`: one pass, and the watch loop

Importing this package imports neither the ``kubernetes`` client nor etcd's: the runner does, when it runs.
"""

from __future__ import annotations

from plane.controller.kserve import Predictor, from_inference_service, from_predictor
from plane.controller.reconcile import Plan, RegistryView, plan
from plane.controller.status import inference_service_status, model_state, predictor_status

__all__ = [
    "Predictor",
    "from_inference_service",
    "from_predictor",
    "Plan",
    "RegistryView",
    "plan",
    "model_state",
    "inference_service_status",
    "predictor_status",
]
