"""Per-team secrets: sealed with AES-256-GCM in the replicated state, opened by the executor at delivery only.

Jobs name a secret as ``{{secrets/NAME}}``, so plain values never reach the job spec, the Raft log or a snapshot;
the key comes from each node's config and never travels through Raft.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from yarl import URL

from schedb.config import SecretsSection
from schedb.fsm.tenancy import NAME_PATTERN
from schedb.jobspec import SECRET_REFERENCE

SECRET_NAME_PATTERN = NAME_PATTERN  # the form of team names (schedb.fsm.tenancy)
SECRET_VALUE_BYTES_MAX = 4096
REFERENCE = SECRET_REFERENCE
MASK = "********"
KEY_BYTES = 32
_VERSION = b"\x01"
_NONCE_BYTES = 12
_KEY_SETTING = "secrets.key (SCHEDB_SECRETS_KEY)"


class SecretsUnavailable(Exception):
    """This node has no usable key, so the secrets API is off rather than storing plain values."""


class SecretKeyError(ValueError):
    """The configured key is not 32 bytes of base64: refusing it beats sealing with a key nodes disagree on."""


class SecretUndecryptable(ValueError):
    """A blob that fails authentication: a different key, another team's or name's blob, or tampering."""


class MissingSecret(Exception):
    """A job references a secret its team does not have (deleted since the job was accepted)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"secret {name!r} does not exist")
        self.name = name


def valid_name(name: str) -> bool:
    return isinstance(name, str) and SECRET_NAME_PATTERN.fullmatch(name) is not None


def generate_key_text() -> str:
    """A fresh key for operators and the dev cluster, in the form load_key accepts."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def load_key(section: SecretsSection) -> bytes | None:
    """The key from secrets.key (normally the environment) or else secrets.key_file; None if neither is set.

    The inline key wins so an operator can override a file baked into an image without editing it."""
    if section.key:
        return _decode_key(section.key, _KEY_SETTING)
    if not section.key_file:
        return None
    setting = f"secrets.key_file ({section.key_file})"
    try:
        text = Path(section.key_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretsUnavailable(f"{setting} cannot be read: {exc}") from exc
    return _decode_key(text, setting)


def require_key(section: SecretsSection) -> bytes:
    """load_key for callers that cannot go on without a key (the secrets API, the executor)."""
    key = load_key(section)
    if key is None:
        raise SecretsUnavailable("no secrets key: set SCHEDB_SECRETS_KEY (secrets.key) or secrets.key_file")
    return key


def _decode_key(text: str, setting: str) -> bytes:
    """Accept standard or urlsafe base64, padded or not: operators paste keys from many tools."""
    text = "".join(text.split()).replace("-", "+").replace("_", "/")
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SecretKeyError(f"{setting} is not base64") from exc
    if len(key) != KEY_BYTES:
        raise SecretKeyError(f"{setting} must encode {KEY_BYTES} bytes, got {len(key)}")
    return key


class SecretBox:
    """Seals values as version byte + 12-byte random nonce + AES-GCM ciphertext, bound to (team, name)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise SecretKeyError(f"a secrets key must be {KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)
        self._key_id = hashlib.sha256(b"schedb-key-id" + key).hexdigest()[:8]

    @property
    def key_id(self) -> str:
        """A non-secret fingerprint, so nodes can report whether they all hold the same key."""
        return self._key_id

    def seal(self, team: str, name: str, value: str) -> bytes:
        data = value.encode()
        if len(data) > SECRET_VALUE_BYTES_MAX:
            raise ValueError(f"a secret value must be at most {SECRET_VALUE_BYTES_MAX} bytes of UTF-8")
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, data, _aad(team, name))

    def open(self, team: str, name: str, blob: bytes) -> str:
        if blob[:1] != _VERSION or len(blob) < 1 + _NONCE_BYTES + 16:
            raise SecretUndecryptable(f"secret {name!r} is not a sealed secret of a known format")
        nonce, ciphertext = blob[1:1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES:]
        try:
            return self._aead.decrypt(nonce, ciphertext, _aad(team, name)).decode()
        except InvalidTag:
            raise SecretUndecryptable(f"secret {name!r} cannot be decrypted with this node's key") from None


def _aad(team: str, name: str) -> bytes:
    """Binds a blob to its team and name, so copying it elsewhere in the state does not decrypt.

    Names cannot hold NUL, so the split point of team and name is unambiguous."""
    if not valid_name(name):
        raise ValueError(f"{name!r} is not a valid secret name")
    return f"{team}\0{name}".encode()


def references(webhook: dict[str, Any]) -> set[str]:
    """Every secret name the webhook uses, so the API can check they exist in the team."""
    texts = [webhook.get("url") or "", *(webhook.get("headers") or {}).values(), *_strings(webhook.get("body")),
             webhook.get("signing_secret") or ""]
    return {m.group(1) for text in texts if isinstance(text, str) for m in REFERENCE.finditer(text)}


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


class _Resolver:
    """Looks each name up once and remembers the plain values, which the caller must mask in logs."""

    def __init__(self, lookup: Callable[[str], str]) -> None:
        self._lookup = lookup
        self.values: dict[str, str] = {}

    def sub(self, text: str, url: bool = False) -> str:
        return REFERENCE.sub(lambda m: quote(self._value(m[1]), safe="") if url else self._value(m[1]), text)

    def _value(self, name: str) -> str:
        if name not in self.values:
            try:
                self.values[name] = self._lookup(name)
            except KeyError:
                raise MissingSecret(name) from None
        return self.values[name]

    def body(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.sub(value)
        if isinstance(value, dict):
            return {self.body(key): self.body(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.body(item) for item in value]
        return value


def resolve(webhook: dict[str, Any], lookup: Callable[[str], str]) -> tuple[dict[str, Any], list[str]]:
    """The webhook as it goes on the wire, plus the plain values used; one pass, so values are never re-expanded.

    In the URL a value is percent-quoted since it sits in the query; a header value may not gain CR, LF or
    NUL, which would split the request."""
    resolver = _Resolver(lookup)
    out = dict(webhook)
    if isinstance(webhook.get("url"), str):
        out["url"] = resolver.sub(webhook["url"], url=True)
    if "headers" in webhook:
        out["headers"] = {name: resolver.sub(value) for name, value in (webhook["headers"] or {}).items()}
        for name, value in out["headers"].items():
            if any(c in value for c in "\r\n\0"):
                raise ValueError(f"header {name}: a secret it references contains CR, LF or NUL")
    if "body" in webhook:
        out["body"] = resolver.body(webhook["body"])
    if isinstance(webhook.get("signing_secret"), str):  # the HMAC key itself may be a team secret
        out["signing_secret"] = resolver.sub(webhook["signing_secret"])
    return out, list(resolver.values.values())


def mask(text: str, values: Iterable[str]) -> str:
    """Hide secret values (raw, URL-quoted or JSON-escaped) in text bound for logs, errors or the API.

    Longest first, so a value containing a shorter one is hidden whole. A value made of '*' cannot be hidden."""
    forms = {form for value in values if value for form in (value, quote(value, safe=""), json.dumps(value)[1:-1],
                                                            _as_url_shows(value))}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, MASK)
    return text


def _as_url_shows(value: str) -> str:
    """The value as it appears in a URL an HTTP client prints: yarl re-normalizes the quoted
    query (e.g. `%2F` back to `/`), so the quoted form alone would not match."""
    return URL("http://h/?k=" + quote(value, safe="")).raw_query_string[2:]


def reference_errors(webhook: dict[str, Any]) -> list[dict[str, str]]:
    """Problems for references outside the URL's query and header values.

    A secret in the host or path would decide where the request goes (and leak into DNS, proxies and egress
    logs); one in a header name would put the value where nothing masks it."""
    errors = []
    url = webhook.get("url")
    if isinstance(url, str):
        before_fragment = url.split("#", 1)[0]
        start = before_fragment.find("?") + 1 or len(url) + 1
        if any(m.start() < start or m.end() > len(before_fragment) for m in REFERENCE.finditer(url)):
            errors.append({"field": "webhook.url", "message": "a secret may be referenced only in the query"})
    for name in webhook.get("headers") or {}:
        if REFERENCE.search(name):
            errors.append({"field": f"webhook.headers.{name}",
                           "message": "a secret may be referenced only in a header value"})
    return errors
