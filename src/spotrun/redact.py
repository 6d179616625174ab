"""Secrets out of everything spotrun shows: logs, errors, tables, JSON.

One helper for every part, so that what is redacted in one place is redacted in all of them: a
store URL may carry credentials in its user info or query (`s3://b/p?aws_secret_access_key=…`,
an Azure SAS token), and a job's secret values must never reach a log line. Query values are
shown only for parameters known to say *where* a store is, never *how to get in*: an unknown
parameter is redacted, so a new credential option is safe by default.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit, urlunsplit

REDACTED = "***"

PUBLIC_PARAMS = frozenset(
    {
        "endpoint",
        "aws_endpoint",
        "aws_endpoint_url",
        "region",
        "aws_region",
        "aws_default_region",
        "allow_http",
        "virtual_hosted_style_request",
        "aws_virtual_hosted_style_request",
        "account_name",
        "azure_storage_account_name",
        "use_emulator",
        "azure_storage_use_emulator",
    }
)

_URL_RE = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_MIN_SECRET = 4  # shorter values would redact ordinary words


def redact_url(url: str) -> str:
    """`url` with its user info and every query value but known-harmless ones replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL we can take apart: show nothing of it that could be a secret
        return url.split("?", 1)[0].rsplit("@", 1)[-1]
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = "&".join(_redact_param(p) for p in parts.query.split("&")) if parts.query else ""
    fragment = REDACTED if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def _redact_param(param: str) -> str:
    key, sep, value = param.partition("=")
    if not sep or not value or unquote(key).lower() in PUBLIC_PARAMS:
        return param
    return f"{key}={REDACTED}"


def url_secrets(url: str) -> set[str]:
    """The values `redact_url` hides, to scrub them from text that quotes them some other way
    (a library's error message)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return set()
    found = set()
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        found |= {userinfo, unquote(userinfo), *(unquote(p) for p in userinfo.split(":"))}
    for param in parts.query.split("&"):
        key, _, value = param.partition("=")
        if value and unquote(key).lower() not in PUBLIC_PARAMS:
            found |= {value, unquote(value)}
    if parts.fragment:
        found.add(parts.fragment)
    return {s for s in found if len(s) >= _MIN_SECRET}


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every URL in it redacted and each of `secrets` (e.g. a job's secret
    environment values) replaced by ***; longest first, so no part of one is left showing."""
    text = _URL_RE.sub(lambda m: redact_url(m.group(0)), text)
    for secret in sorted({s for s in secrets if s and len(s) >= _MIN_SECRET}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text
