"""The ``mesh`` argument parser and :func:`main`, which runs a command and maps its errors to exit codes.

Every subcommand and flag is defined here; the handlers live in one module per group of commands
(:mod:`plane.cli.plane_cmds`, :mod:`~plane.cli.demo`, :mod:`~plane.cli.models`,
:mod:`~plane.cli.vmodels`, :mod:`~plane.cli.storage`, :mod:`~plane.cli.events`, and
:mod:`~plane.cli.kube`, which adds ``install`` and ``uninstall`` itself).
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from plane.cli.demo import DEMO_DESCRIPTION, cmd_demo
from plane.cli.events import cmd_events
from plane.cli.models import (
    cmd_models_list,
    cmd_models_load,
    cmd_models_policy,
    cmd_models_register,
    cmd_models_status,
    cmd_models_unregister,
)
from plane.cli.output import EXIT_FAILED, EXIT_NO_PLANE, EXIT_USAGE, CliError, print_error
from plane.cli.plane_cmds import (
    DEFAULT_PODS,
    cmd_certs,
    cmd_console,
    cmd_dashboard,
    cmd_down,
    cmd_pod,
    cmd_probe,
    cmd_status,
    cmd_up,
)
from plane.cli.storage import cmd_storage_list, cmd_storage_remove, cmd_storage_set, cmd_storage_test
from plane.cli.vmodels import cmd_vmodels_delete, cmd_vmodels_list, cmd_vmodels_set

__all__ = ["main", "build_parser", "MeshParser"]


class MeshParser(argparse.ArgumentParser):
    """argparse with the one error form every ``mesh`` error has (``mesh: error: ...`` on
    stderr, exit 2), whichever subcommand's parser found the mistake."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print_error(f"{message} (see `{self.prog} --help`)")
        sys.exit(EXIT_USAGE)


def _common(p: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    p.add_argument("--state-dir", help="embedded plane state dir (default: the user's state dir; MESH_STATE_DIR)")
    p.add_argument("--etcd", help="etcd endpoint host:port of a running plane (MESH_ETCD)")
    p.add_argument("--prefix", help="registry root prefix (MESH_ETCD_PREFIX, default 'mesh')")
    if json_flag:
        p.add_argument("--json", action="store_true", help="machine-readable output (see docs/cli-json.md)")


def build_parser() -> argparse.ArgumentParser:
    parser = MeshParser(prog="mesh", description="Multi-model serving plane: ONNX, scikit-learn, XGBoost and "
                        "LightGBM models on runtime pods that share an etcd registry.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("up", help="start etcd and runtime pods on this machine")
    _common(p)
    p.add_argument("--pods", type=int, help=f"number of runtime pods (default {DEFAULT_PODS})")
    p.add_argument("--capacity", help="model cache per pod, e.g. 256MiB (default MESH_CAPACITY or 256MiB)")
    p.add_argument("--port", type=int, help="gRPC port of the first pod (default 8033; the next pods follow)")
    p.add_argument("--tls", action="store_true",
                   help="generate a CA and certificates; etcd, pods and clients then speak mutual TLS")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("certs", help="generate a CA with server and client certificates (PEM)")
    p.add_argument("--out", required=True, help="directory to write ca.pem, server*.pem, client*.pem")
    p.add_argument("--host", action="append", help="name or IP the server certificate is valid for (repeat)")
    p.set_defaults(func=cmd_certs)

    p = sub.add_parser("down", help="stop the embedded plane")
    _common(p)
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("status", help="pods, capacity, used, models loaded")
    _common(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("demo", help="generate real demo models (ONNX; other formats with --formats) and "
                                    "register them", description=DEMO_DESCRIPTION)
    _common(p)
    p.add_argument("--models", type=int, default=50, help="how many models (default 50)")
    p.add_argument("--formats", metavar="FORMAT[=SHARE],...",
                   help="mix model formats: onnx, sklearn, xgboost, lightgbm or all, each with an optional "
                        "relative share, e.g. onnx,sklearn (half each) or onnx=0.5,sklearn=0.2,xgboost=0.15,"
                        "lightgbm=0.15 (default: onnx only)")
    p.add_argument("--out", help="directory for the model files (default <state dir>/demo-models)")
    p.add_argument("--storage-key", default="default", help="storage key to register them under")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-register", action="store_true", help="only write the files")
    p.add_argument("--requests", type=int, default=0,
                   help="then send N requests (Zipf over the models, round robin over the pods)")
    p.set_defaults(func=cmd_demo)

    models = sub.add_parser("models", help="register, list, inspect and unregister models")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True
    p = msub.add_parser("register", help="register a model")
    _common(p)
    p.add_argument("model_id")
    p.add_argument("--path", required=True, help="file path inside the storage")
    p.add_argument("--storage", default="default", help="storage key (default 'default')")
    p.add_argument("--type", default="onnx", help="model type: onnx, sklearn, xgboost, lightgbm, or ModelMesh's "
                                                  "mt:<format>[:<version>] / rt:<runtime> (default onnx)")
    p.add_argument("--load-now", action="store_true", help="load it right away")
    p.add_argument("--sync", action="store_true", help="with --load-now: wait until loaded")
    p.add_argument("--pin", action="store_true", help="never evict it")
    p.add_argument("--min-copies", type=int, default=0, help="copies kept loaded even when idle (at most one a pod)")
    p.add_argument("--max-copies", type=int, default=0, help="at most this many copies (0: no cap)")
    p.set_defaults(func=cmd_models_register)
    p = msub.add_parser("list", help="name, status, copies, size, last used")
    _common(p)
    p.add_argument("--filter", help="only ids containing this text")
    p.add_argument("--limit", type=int, default=0, help="show at most N rows (table only)")
    p.set_defaults(func=cmd_models_list)
    p = msub.add_parser("status", help="one model in detail")
    _common(p)
    p.add_argument("model_id")
    p.set_defaults(func=cmd_models_status)
    p = msub.add_parser("unregister", help="remove a model (its copies are unloaded)")
    _common(p)
    p.add_argument("model_id")
    p.set_defaults(func=cmd_models_unregister)
    p = msub.add_parser("load", help="make sure a copy is loaded (ensureLoaded): waits for the outcome")
    _common(p)
    p.add_argument("model_id")
    p.add_argument("--no-wait", dest="wait", action="store_false",
                   help="return once a pod has started loading (exit 1 only if it has failed already)")
    p.add_argument("--sync", action="store_true", help=argparse.SUPPRESS)  # the default now: kept for scripts
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait (default %(default)s)")
    p.set_defaults(func=cmd_models_load)
    p = msub.add_parser("policy", help="pin a model, set min/max copies")
    _common(p)
    p.add_argument("model_id")
    p.add_argument("--pin", action=argparse.BooleanOptionalAction, default=None, help="never evict it (or allow it)")
    p.add_argument("--min-copies", type=int, help="copies kept loaded even when idle (at most one a pod)")
    p.add_argument("--max-copies", type=int, help="at most this many copies (0: no cap)")
    p.set_defaults(func=cmd_models_policy)

    vmodels = sub.add_parser("vmodels", help="aliases that point at a model")
    vsub = vmodels.add_subparsers(dest="vmodels_command", metavar="ACTION")
    vsub.required = True
    p = vsub.add_parser("set", help="point a vmodel at a model (target loads first, then the switch)")
    _common(p)
    p.add_argument("vmodel_id")
    p.add_argument("target", help="target model id")
    p.add_argument("--auto-delete", action="store_true", help="unregister the old model after the switch")
    p.add_argument("--owner", default="", help="the vmodel's owner (ModelMesh's owner scoping)")
    p.add_argument("--sync", action="store_true",
                   help="wait until the switch is done; if the target fails to load, nothing is changed")
    p.add_argument("--force", action="store_true",
                   help="allow a vmodel id that is a registered model's id (the vmodel then takes its requests)")
    p.set_defaults(func=cmd_vmodels_set)
    p = vsub.add_parser("list", help="vmodels with their active and target models")
    _common(p)
    p.set_defaults(func=cmd_vmodels_list)
    p = vsub.add_parser("delete", help="delete a vmodel (the models it named stay registered unless it owns them)")
    _common(p)
    p.add_argument("vmodel_id")
    p.set_defaults(func=cmd_vmodels_delete)

    st = sub.add_parser("storage", help="where model files come from (secrets are masked)")
    ssub = st.add_subparsers(dest="storage_command", metavar="ACTION")
    ssub.required = True
    p = ssub.add_parser("set", help="create or replace a storage config")
    _common(p)
    p.add_argument("key")
    p.add_argument("--type", choices=["local", "s3", "http", "https", "gcs", "azure", "pvc"])
    p.add_argument("--from-file", help="JSON in the storage-config secret format")
    p.add_argument("--path", help="local: the directory")
    p.add_argument("--url", help="http: base URL; a model's path is appended to it")
    p.add_argument("--header", action="append", metavar="'NAME: VALUE'", help="http: a request header (repeat; "
                   "values are secrets, masked on output; prefer --header-env)")
    p.add_argument("--header-env", action="append", metavar="NAME=VAR",
                   help="http: header NAME with the value of this environment variable VAR (repeat)")
    p.add_argument("--pvc-name", dest="pvc_name", help="pvc: the volume, mounted on the pods at "
                   "<MESH_PVC_ROOT>/<name> (default /pvc_mounts/<name>)")
    p.add_argument("--endpoint-url", dest="endpoint_url", help="s3: e.g. http://127.0.0.1:9000")
    p.add_argument("--bucket", help="s3: default bucket")
    p.add_argument("--region")
    p.add_argument("--access-key-id", dest="access_key_id")
    sec = p.add_mutually_exclusive_group()
    sec.add_argument("--secret-access-key", help="s3 secret (prefer --secret-access-key-env/-file)")
    sec.add_argument("--secret-access-key-env", help="read the s3 secret from this environment variable")
    sec.add_argument("--secret-access-key-file", help="read the s3 secret from this file")
    sec.add_argument("--secret-from-pod-env", metavar="VAR",
                     help="store no secret: the pods read it from their environment variable VAR")
    sec.add_argument("--secret-from-pod-file", metavar="PATH",
                     help="store no secret: the pods read it from the file PATH (e.g. a mounted Secret)")
    p.set_defaults(func=cmd_storage_set)
    p = ssub.add_parser("list", help="storage configs, secrets masked")
    _common(p)
    p.set_defaults(func=cmd_storage_list)
    p = ssub.add_parser("test", help="list what the storage holds, or say why it cannot")
    _common(p)
    p.add_argument("key")
    p.add_argument("--path", help="prefix/path inside the storage")
    p.set_defaults(func=cmd_storage_test)
    p = ssub.add_parser("remove", help="remove a storage config (refused while models use it)")
    _common(p)
    p.add_argument("key")
    p.add_argument("--force", action="store_true", help="remove it even though registered models use it")
    p.set_defaults(func=cmd_storage_remove)

    p = sub.add_parser("events", help="the event log: loads, evictions, failures")
    _common(p)
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--minutes", type=float, default=0, help="only the last N minutes")
    p.add_argument("--kind", help="only this kind (load, loaded, evict, unload, load-failed, ...)")
    p.add_argument("--model")
    p.set_defaults(func=cmd_events)

    p = sub.add_parser("pod", help="run one runtime pod in the foreground (settings from MESH_*)")
    p.set_defaults(func=cmd_pod)

    p = sub.add_parser("probe", help="exit 0 if the local pod is ready / live (for Kubernetes probes)")
    p.add_argument("what", choices=["ready", "live"])
    p.add_argument("--endpoint", help="host:port (default 127.0.0.1:MESH_GRPC_PORT)")
    p.add_argument("--timeout", type=float, default=2.0)
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("dashboard", help="start the browser dashboard (Streamlit) and print its URL")
    p.add_argument("--port", type=int)
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("console", help="start the terminal console (mesh-console)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_console)

    try:
        from plane.cli import kube as cli_kube
    except ImportError:
        cli_kube = None  # type: ignore[assignment]
    if cli_kube is not None:
        cli_kube.add_commands(sub)
    from plane.cli.controller import add_command as add_controller

    add_controller(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    import grpc

    from plane.api import NotFound, ValidationError
    from plane.mgmt_client import ManagementError
    from plane.registry import EtcdUnavailable, RegistryError
    from plane.settings import MeshSettings as _S  # noqa: F401 - settings errors surface early

    raw = sys.argv[1:] if argv is None else list(argv)
    if raw[:1] == ["console"]:
        # everything after `console` belongs to mesh-console (argparse would claim its --flags)
        code = cmd_console(argparse.Namespace(rest=raw[1:]))
        if argv is None:
            sys.exit(code)
        return code
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except CliError as exc:
        print_error(exc)
        code = exc.code
    except (ValidationError, ValueError) as exc:
        print_error(exc)
        code = EXIT_USAGE
    except NotFound as exc:
        print_error(exc)
        code = EXIT_FAILED
    except EtcdUnavailable as exc:
        print_error(exc)
        code = EXIT_NO_PLANE
    except ManagementError as exc:  # a pod refused or failed it; bad input is the operator's to fix
        print_error(exc)
        code = EXIT_USAGE if exc.code == grpc.StatusCode.INVALID_ARGUMENT else EXIT_FAILED
    except RegistryError as exc:
        print_error(exc)
        code = EXIT_FAILED
    except TimeoutError as exc:  # a registry call or a pod's answer did not come in time
        print_error(f"timed out{': ' + str(exc) if str(exc) else ''}; `mesh status` shows whether the plane is up")
        code = EXIT_FAILED
    except KeyboardInterrupt:
        code = 130
    if argv is None:  # the `mesh` console script and `python -m plane.cli`
        sys.exit(code)
    return code
