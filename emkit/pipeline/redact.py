"""Keep secrets out of what emkit prints and records (provenance, run configuration, messages).

Layers on ``gs://`` and ``s3://`` authenticate the way CloudVolume does — secrets files in
``~/.cloudvolume/secrets/`` (``google-secret.json``, ``aws-secret.json``, ...) or the provider's
standard environment variables and application-default credentials — so their URLs carry no
secret. An ``https://`` layer may still carry one in its URL (``https://user:password@host/...``,
``...?token=...``), and a secret may sit in an environment variable. Everything emkit writes
beside its outputs or prints passes through :func:`redact`, which replaces

- the password (or a bare token) of a URL's user-info: ``https://user:***@host/path``;
- every query and fragment value of a URL: ``?token=***&sig=***``;
- the value of any environment variable whose name looks secret (``*SECRET*``, ``*TOKEN*``,
  ``*PASSWORD*``, ``*CREDENTIAL*``, ``*ACCESS_KEY*``, ``*API_KEY*``, ``*PRIVATE_KEY*``, ...)
  wherever it appears in a string;
- every secret seen in a URL before (this process remembers them, :func:`remember`) wherever it
  appears, also where a library quotes it without its URL (``url: /image?token=.../info``), and
  ``token=``/``sig=``/``key=``... values in any text.

A redacted URL is only for showing: the layer is opened with the URL as given.
"""
from __future__ import annotations

import os
import re

__all__ = ["redact", "redact_text", "redact_url", "remember", "secrets_in", "MASK", "secret_env_values"]

MASK = "***"
#: names of environment variables whose values are treated as secrets.
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|ACCESS_KEY|API_KEY|APIKEY|"
                         r"PRIVATE_KEY|SESSION_KEY|AUTH|SAS|SIGNATURE", re.IGNORECASE)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
_MIN_SECRET = 6      # shorter values ("1", "true") are not searched for as literals
_PARAM = re.compile(r"(?i)([?&;][\w.-]*(?:token|sig|signature|secret|password|passwd|key|credential|auth)[\w.-]*=)"
                    r"[^&\s'\"#/]+")
#: secrets seen in URLs by :func:`remember` (this process).
_KNOWN: set[str] = set()


def redact_url(url: str) -> str:
    """``url`` without its secrets: user-info password / token, query and fragment values.

    >>> redact_url("https://me:pw@host/a/b?token=abc&x=1#k=v")
    'https://me:***@host/a/b?token=***&x=***#k=***'
    >>> redact_url("gs://bucket/image")
    'gs://bucket/image'
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", rest):     # precomputed://https://...
        return f"{scheme}://{redact_url(rest)}"
    end = len(rest)
    for ch in "/?#":
        i = rest.find(ch)
        if i != -1:
            end = min(end, i)
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        userinfo, host = authority.rsplit("@", 1)
        user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
        authority = f"{user}:{MASK}@{host}" if user else f"{MASK}@{host}"
    path, qsep, query = tail.partition("?")
    if not qsep:
        path, fsep, fragment = tail.partition("#")
        return f"{scheme}://{authority}{path}" + (f"#{_values(fragment)}" if fsep else "")
    query, fsep, fragment = query.partition("#")
    return (f"{scheme}://{authority}{path}?{_values(query)}" + (f"#{_values(fragment)}" if fsep else ""))


def secrets_in(obj) -> set[str]:
    """The secrets the URLs in ``obj`` (str / nested dict, list) carry: user-info passwords or tokens,
    query and fragment values (those of at least 6 characters)."""
    found: set[str] = set()
    if isinstance(obj, str):
        for m in _URL.finditer(obj):
            url = m.group(0)
            while re.match(r"[A-Za-z][A-Za-z0-9+.-]*://[A-Za-z][A-Za-z0-9+.-]*://", url):
                url = url.partition("://")[2]
            rest = url.partition("://")[2]
            authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
            if "@" in authority:
                userinfo = authority.rsplit("@", 1)[0]
                found.add(userinfo.split(":", 1)[1] if ":" in userinfo else userinfo)
            for params in re.findall(r"[?#]([^#]*)", rest):
                found.update(v for _, _, v in (p.partition("=") for p in params.split("&")))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            found |= secrets_in(k) | secrets_in(v)
    elif isinstance(obj, (list, tuple, set)):
        for v in obj:
            found |= secrets_in(v)
    return {f for f in found if len(f) >= _MIN_SECRET}


def remember(obj) -> set[str]:
    """Remember the secrets in the URLs of ``obj`` (e.g. a configuration): :func:`redact` masks them
    from now on wherever they appear. Returns them."""
    found = secrets_in(obj)
    _KNOWN.update(found)
    return found


def _values(params: str) -> str:
    out = []
    for part in params.split("&"):
        key, eq, value = part.partition("=")
        out.append(f"{key}={MASK}" if eq else (MASK if part else part))
    return "&".join(out)


def secret_env_values(environ=None) -> list[str]:
    """Values of the environment variables whose names look secret, longest first."""
    env = os.environ if environ is None else environ
    vals = {v for k, v in env.items() if SECRET_NAME.search(k) and len(v) >= _MIN_SECRET}
    return sorted(vals, key=len, reverse=True)


def redact_text(text: str, environ=None) -> str:
    """``text`` with its secrets masked: every URL through :func:`redact_url`, secret environment
    values, the secrets :func:`remember` saw, ``token=``-like parameter values."""
    if not isinstance(text, str) or not text:
        return text
    remember(text)
    for value in sorted(set(secret_env_values(environ)) | _KNOWN, key=len, reverse=True):
        if value in text:
            text = text.replace(value, MASK)
    if "://" in text:
        text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    return _PARAM.sub(lambda m: m.group(1) + MASK, text)


def redact(obj, environ=None):
    """A copy of ``obj`` (str, dict, list, tuple, nested) with :func:`redact_text` applied to every string.

    Dictionary keys are redacted too; other values (numbers, None, ...) are kept as they are. The
    secrets of every URL in ``obj`` are remembered first (:func:`remember`), so a secret is masked
    also where ``obj`` quotes it apart from its URL (e.g. in an error message).
    """
    remember(obj)
    if isinstance(obj, str):
        return redact_text(obj, environ)
    if isinstance(obj, dict):
        return {redact(k, environ): redact(v, environ) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v, environ) for v in obj)
    return obj
