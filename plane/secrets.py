"""What counts as a secret in a storage config, and how to keep secrets out of anything printed.

Pure functions, no I/O: :mod:`plane.records` (``StorageConfig.masked()``) and
:mod:`plane.storage` (every error message it builds) use them, so the CLI, the console, the
dashboard, pod logs, events and status all show the same masked forms. :data:`LOG_FILTER`
does the same for log records of third-party libraries (botocore logs request URLs and signed
headers at DEBUG): :func:`install_log_filter` puts it on them.

* :func:`is_secret_field` - whether a config field holds a secret. ``*_env`` / ``*_file`` /
  ``*_path`` fields are references (the *name* of a variable or file the pods read), not secrets.
* :func:`mask_secret` - a secret value reduced to a hint (``****XY``).
* :func:`mask_url` - URL userinfo removed (``http://user:pass@host:9000`` -> ``http://****@host:9000``)
  and secret-looking query parameters masked; host and port kept.
* :func:`mask_params` - a whole config's parameters, safe to print.
* :func:`redact` / :func:`redact_text` - known secret values, URL userinfo and credential-looking
  ``name=value`` pairs removed from arbitrary text (error messages of boto3/botocore embed the
  endpoint URL, for instance).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "SECRET_FIELDS",
    "GENERIC_SECRET_FIELDS",
    "MASK",
    "is_secret_field",
    "mask_secret",
    "mask_url",
    "mask_value",
    "mask_params",
    "secret_values",
    "redact",
    "redact_text",
    "LOG_FILTER",
    "install_log_filter",
]

MASK = "****"

# The secret fields of each storage type ModelMesh knows (SPEC section 4), and the generic ones.
SECRET_FIELDS: dict[str, frozenset[str]] = {
    "s3": frozenset({"access_key_id", "secret_access_key", "session_token", "aws_session_token"}),
    "gcs": frozenset({"base64_service_account", "service_account", "service_account_json", "private_key",
                      "private_key_id", "client_secret", "credentials", "json_key", "hmac_secret"}),
    "azure": frozenset({"account_key", "connection_string", "client_secret", "sas_token", "sas",
                        "storage_access_key"}),
    "http": frozenset({"headers"}),
    "local": frozenset(),
    "pvc": frozenset(),
}
GENERIC_SECRET_FIELDS = frozenset({"password", "passwd", "token", "secret", "api_key", "apikey", "auth",
                                   "authorization", "access_token", "refresh_token", "bearer_token",
                                   "private_key", "credentials", "client_secret"})
_ALL_SECRET_FIELDS = GENERIC_SECRET_FIELDS.union(*SECRET_FIELDS.values())
_REFERENCE_SUFFIXES = ("_env", "_file", "_path")
# Field names not listed above that still look secret (a config field we never heard of).
_SECRETISH_NAME = re.compile(r"secret|passw|token|credential|private|signature|apikey|api_key|access_key|"
                             r"account_key|connection_string|sas$|(^|_)key$", re.I)
# Query parameters whose values are credentials (pre-signed URLs, SAS URLs, tokens in URLs).
_SECRET_QUERY = re.compile(r"^(sig|signature|token|access_token|key|api_key|apikey|password|secret|code|"
                           r"x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature|"
                           r"x-goog-credential|se|sp|sv|skoid|sktid)$", re.I)
# scheme://userinfo@ - userinfo has no '/', '@' or whitespace
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/\s@'\"<>]+)@")
# name=value / name: value pairs with a credential-looking name, as found in headers, connection
# strings (AccountKey=...;), query strings and repr()s of dicts
_CRED_PAIR = re.compile(
    r"(?P<name>\b(?:authorization|proxy-authorization|x-amz-security-token|x-amz-signature|x-amz-credential|"
    r"x-goog-signature|accountkey|sharedaccesssignature|sharedaccesskey|password|passwd|"
    r"secret_access_key|aws_secret_access_key|secretaccesskey|session_token|client_secret|"
    r"private_key|account_key|connection_string|sas_token|access_token|refresh_token|api_key|apikey|"
    r"credential|sig|signature|token)\b['\"]?\s*[=:]\s*)(?P<value>b?'[^']*'|b?\"[^\"]*\"|(?:bearer|basic|token|aws4-hmac-sha256)"
    r"\s+[^\s,;&'\"]+|[^\s,;&'\"]+)",
    re.I)
_MIN_SECRET_LEN = 4  # shorter values are not searched for in text (they would match ordinary words)


def is_secret_field(name: str, storage_type: str = "") -> bool:
    """Whether the config field ``name`` holds a secret (any storage type: the union is used, so
    a field of one type misplaced in another's config is still masked)."""
    low = name.lower()
    if low.endswith(_REFERENCE_SUFFIXES):
        return False
    if low in _ALL_SECRET_FIELDS or low in SECRET_FIELDS.get(storage_type.lower(), frozenset()):
        return True
    return bool(_SECRETISH_NAME.search(low))


def mask_secret(value: Any) -> str:
    """``****XY`` style: never more than the last 2 characters, nothing of short secrets."""
    if value is None or value == "":
        return ""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if len(text) < 12:
        return MASK
    return MASK + text[-2:]


def _mask_netloc(netloc: str) -> str:
    if "@" not in netloc:
        return netloc
    return MASK + "@" + netloc.rpartition("@")[2]


def mask_url(url: str) -> str:
    """The URL without userinfo (``http://****@host:port/...``) and with secret query values masked.
    Text that is not a URL is returned unchanged except for a ``user:pass@host`` prefix."""
    if not isinstance(url, str) or not url:
        return url
    if "://" not in url:
        head, sep, rest = url.partition("/")
        return _mask_netloc(head) + sep + rest if ":" in head.rpartition("@")[0] else url
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = _mask_netloc(parts.netloc)
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_QUERY.match(k) or is_secret_field(k) for k, _ in pairs):
            query = "&".join(f"{urllib.parse.quote(k, safe='-_.')}="
                             f"{MASK if (_SECRET_QUERY.match(k) or is_secret_field(k)) else urllib.parse.quote(v)}"
                             for k, v in pairs)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def mask_value(name: str, value: Any, storage_type: str = "") -> Any:
    """One config value, safe to print: secret fields masked (every value of a mapping such as
    ``headers``, keeping the names), URLs in any other string stripped of userinfo."""
    if is_secret_field(name, storage_type):
        if isinstance(value, Mapping):  # http headers: names kept, each value (or each of a list) masked
            return {str(k): [mask_secret(x) for x in v] if isinstance(v, list | tuple) else mask_secret(v)
                    for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [mask_secret(v) for v in value]
        return mask_secret(value)
    if isinstance(value, str):
        return mask_url(value) if ("://" in value or "@" in value) else value
    if isinstance(value, Mapping):
        return {str(k): mask_value(str(k), v, storage_type) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(name, v, storage_type) for v in value]
    return value


def mask_params(params: Mapping[str, Any], storage_type: str = "") -> dict[str, Any]:
    """A config's parameters with every secret masked and every URL stripped of userinfo."""
    return {name: mask_value(name, value, storage_type) for name, value in params.items()}


def _leaves(value: Any) -> Iterable[str]:
    if isinstance(value, Mapping):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _leaves(v)
    elif value is not None and value != "":
        yield value if isinstance(value, str) else str(value)


def _userinfo_values(text: str) -> Iterable[str]:
    for m in _URL_USERINFO.finditer(text):
        info = m.group("userinfo")
        for form in {info, urllib.parse.unquote(info)}:
            yield form
            user, sep, password = form.partition(":")
            if sep and password:
                yield password
    if "://" not in text:  # host:port with user:pass@ but no scheme
        info = text.partition("/")[0].rpartition("@")[0]
        if ":" in info:
            yield info
            yield info.partition(":")[2]


def secret_values(params: Mapping[str, Any], storage_type: str = "", extra: Iterable[str] = ()) -> list[str]:
    """Every secret value a config holds (secret fields, URL userinfo and passwords in any
    string), plus ``extra`` (e.g. credentials the pod read from its environment), longest first."""
    found: set[str] = set()
    for name, value in params.items():
        if is_secret_field(name, storage_type):
            for leaf in _leaves(value):
                # as given, inside JSON text, and percent-encoded (in a URL or a query string)
                found.update((leaf, json.dumps(leaf)[1:-1], urllib.parse.quote(leaf, safe=""),
                              urllib.parse.quote_plus(leaf, safe="")))
        else:
            for leaf in _leaves(value):
                found.update(_userinfo_values(leaf))
    found.update(v for v in extra if v)
    return sorted((v for v in found if len(v) >= _MIN_SECRET_LEN), key=len, reverse=True)


def _mask_pair(m: re.Match[str]) -> str:
    value = m.group("value")
    if value[:2] in ("b'", 'b"'):  # a bytes repr
        value = value[1:]
    if value.strip("'\"").startswith(MASK) or not value.strip("'\""):
        return m.group(0)
    quote = value[0] if value[0] in "'\"" else ""
    return m.group("name") + quote + MASK + quote


def redact_text(text: str) -> str:
    """``text`` without URL userinfo and without the values of credential-looking pairs
    (``Authorization: Bearer x``, ``AccountKey=x;``, ``?sig=x``, ``'secret_access_key': 'x'``)."""
    if not text:
        return text
    text = _URL_USERINFO.sub(lambda m: m.group("scheme") + MASK + "@", text)
    return _CRED_PAIR.sub(_mask_pair, text)


def redact(text: str, params: Mapping[str, Any] | Any = None, storage_type: str = "",
           extra: Iterable[str] = ()) -> str:
    """``text`` with every secret of the config removed (``params`` is the config's parameters,
    or a ``StorageConfig``), then :func:`redact_text` applied."""
    if not text:
        return text
    if params is not None and not isinstance(params, Mapping):  # a StorageConfig
        storage_type = storage_type or getattr(params, "type", "")
        params = getattr(params, "params", {})
    for value in secret_values(params or {}, storage_type, extra):
        if value in text:
            text = text.replace(value, MASK)
    return redact_text(text)


class RedactingLogFilter(logging.Filter):
    """Removes known secret values, URL userinfo and credential pairs from log records
    (message and traceback). It never drops a record."""

    def __init__(self) -> None:
        super().__init__()
        self._values: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def add(self, values: Iterable[str]) -> None:
        with self._lock:
            merged = set(self._values) | {v for v in values if v and len(v) >= _MIN_SECRET_LEN}
            self._values = tuple(sorted(merged, key=len, reverse=True))

    def _clean(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, MASK)
        return redact_text(text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is the logging module's business
            return True
        clean = self._clean(msg)
        if clean != msg:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = self._clean(logging.Formatter().formatException(record.exc_info))
        return True


LOG_FILTER = RedactingLogFilter()
THIRD_PARTY_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3")


def install_log_filter(values: Iterable[str] = ()) -> None:
    """Redact ``values`` (and any URL userinfo) from what the third-party loggers and the root
    logger's handlers write. Idempotent; call it again with more values as configs are used."""
    LOG_FILTER.add(values)
    for name in list(logging.Logger.manager.loggerDict):
        if name.partition(".")[0] in THIRD_PARTY_LOGGERS:
            logger = logging.getLogger(name)
            if LOG_FILTER not in logger.filters:
                logger.addFilter(LOG_FILTER)
    for handler in logging.getLogger().handlers:  # catches loggers created later too
        if LOG_FILTER not in handler.filters:
            handler.addFilter(LOG_FILTER)
