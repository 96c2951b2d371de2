from __future__ import annotations

import base64
import os
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from schedb.config import SecretsSection
from schedb.secretbox import (
    MASK,
    SECRET_VALUE_BYTES_MAX,
    MissingSecret,
    SecretBox,
    SecretKeyError,
    SecretsUnavailable,
    SecretUndecryptable,
    generate_key_text,
    load_key,
    mask,
    reference_errors,
    references,
    require_key,
    resolve,
    valid_name,
)

KEY = bytes(range(32))
BOX = SecretBox(KEY)
SECRETS = {"token": "t0k/en&x=1", "user": "alice", "pw": "p@ss word"}


def test_seal_open_round_trip_and_fresh_nonce() -> None:
    blob = BOX.seal("team-a", "token", "hunter2")
    assert BOX.open("team-a", "token", blob) == "hunter2"
    assert blob[0] == 1 and len(blob) == 1 + 12 + len("hunter2") + 16
    assert BOX.seal("team-a", "token", "hunter2") != blob
    assert b"hunter2" not in blob


def test_blob_is_bound_to_team_and_name() -> None:
    blob = BOX.seal("team-a", "token", "v")
    with pytest.raises(SecretUndecryptable):
        BOX.open("team-b", "token", blob)
    with pytest.raises(SecretUndecryptable):
        BOX.open("team-a", "other", blob)


def test_tampered_truncated_or_unknown_version_blob_fails() -> None:
    blob = bytearray(BOX.seal("t", "n", "value"))
    blob[-1] ^= 1
    for bad in (bytes(blob), b"", b"\x01short", b"\x02" + bytes(blob[1:])):
        with pytest.raises(SecretUndecryptable):
            BOX.open("t", "n", bad)


def test_wrong_key_fails_and_key_id_tells_keys_apart() -> None:
    other = SecretBox(bytes(32))
    with pytest.raises(SecretUndecryptable):
        other.open("t", "n", BOX.seal("t", "n", "v"))
    assert len(BOX.key_id) == 8 and BOX.key_id == SecretBox(KEY).key_id != other.key_id
    assert BOX.key_id not in KEY.hex()


def test_seal_limits() -> None:
    BOX.seal("t", "n", "x" * SECRET_VALUE_BYTES_MAX)
    with pytest.raises(ValueError, match="at most"):
        BOX.seal("t", "n", "é" * (SECRET_VALUE_BYTES_MAX // 2 + 1))
    with pytest.raises(ValueError, match="not a valid secret name"):
        BOX.seal("t", "bad\0name", "v")
    with pytest.raises(SecretKeyError):
        SecretBox(b"short")


def test_names() -> None:
    assert valid_name("a") and valid_name("A1_.-x") and valid_name("9" * 64)
    assert not valid_name("") and not valid_name("_a") and not valid_name("a" * 65) and not valid_name("a/b")


def test_key_from_env_text_wins_over_file(tmp_path: Path) -> None:
    env_key, file_key = os.urandom(32), os.urandom(32)
    path = tmp_path / "key"
    path.write_text(base64.b64encode(file_key).decode() + "\n")
    assert load_key(SecretsSection(key_file=str(path))) == file_key
    assert load_key(SecretsSection(key_file=str(path), key=base64.b64encode(env_key).decode())) == env_key
    assert load_key(SecretsSection()) is None


def test_key_accepts_urlsafe_and_unpadded_base64() -> None:
    key = b"\xfb\xff" * 16
    assert load_key(SecretsSection(key=base64.urlsafe_b64encode(key).decode().rstrip("="))) == key
    assert load_key(SecretsSection(key=f"  {base64.b64encode(key).decode()}\n")) == key
    assert len(load_key(SecretsSection(key=generate_key_text())) or b"") == 32


@pytest.mark.parametrize("text", ["not base64!", base64.b64encode(b"x" * 16).decode(), ""])
def test_bad_key_names_the_setting(tmp_path: Path, text: str) -> None:
    if text:
        with pytest.raises(SecretKeyError, match="SCHEDB_SECRETS_KEY"):
            load_key(SecretsSection(key=text))
    path = tmp_path / "key"
    path.write_text(text)
    with pytest.raises(SecretKeyError, match=r"secrets\.key_file"):
        load_key(SecretsSection(key_file=str(path)))


def test_unreadable_key_file_or_no_key_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(SecretsUnavailable, match=r"secrets\.key_file"):
        load_key(SecretsSection(key_file=str(tmp_path / "missing")))
    with pytest.raises(SecretsUnavailable, match="SCHEDB_SECRETS_KEY"):
        require_key(SecretsSection())
    assert require_key(SecretsSection(key=base64.b64encode(KEY).decode())) == KEY


WEBHOOK = {
    "url": "https://api.example.com/v1/hook?token={{secrets/token}}&u={{ secrets/user }}",
    "method": "POST",
    "headers": {"Authorization": "Bearer {{secrets/pw}}", "X-Plain": "{{notasecret}}"},
    "body": {"{{secrets/user}}": [1, None, {"deep": ["x{{secrets/token}}y"]}], "n": 3, "b": True},
    "timeout_s": 5.0,
}


def test_references_everywhere() -> None:
    assert references(WEBHOOK) == {"token", "user", "pw"}
    assert references({"url": "https://h/", "headers": {}, "body": None}) == set()
    assert references({"url": "https://h/", "body": ["{{secrets/a}}", {"k": {"{{secrets/b}}": 1}}]}) == {"a", "b"}
    assert references({"url": "https://h/?x={{secrets/" + "a" * 65 + "}}"}) == set()


def test_resolve_replaces_everywhere_and_quotes_in_the_url() -> None:
    out, values = resolve(WEBHOOK, SECRETS.__getitem__)
    assert out["url"] == f"https://api.example.com/v1/hook?token={quote('t0k/en&x=1', safe='')}&u=alice"
    assert out["headers"] == {"Authorization": "Bearer p@ss word", "X-Plain": "{{notasecret}}"}
    assert out["body"] == {"alice": [1, None, {"deep": ["xt0k/en&x=1y"]}], "n": 3, "b": True}
    assert out["method"] == "POST" and out["timeout_s"] == 5.0
    assert sorted(values) == sorted(SECRETS.values())
    assert WEBHOOK["headers"]["Authorization"] == "Bearer {{secrets/pw}}"  # the input is untouched


def test_resolve_looks_up_once_and_never_re_expands() -> None:
    calls: list[str] = []

    def lookup(name: str) -> str:
        calls.append(name)
        return "{{secrets/b}}"

    out, values = resolve({"url": "https://h/", "headers": {"A": "{{secrets/a}}{{secrets/a}}"}, "body": None}, lookup)
    assert calls == ["a"] and out["headers"]["A"] == "{{secrets/b}}{{secrets/b}}" and values == ["{{secrets/b}}"]


def test_resolve_missing_secret() -> None:
    with pytest.raises(MissingSecret) as info:
        resolve({"url": "https://h/?a={{secrets/gone}}"}, {}.__getitem__)
    assert info.value.name == "gone"


@pytest.mark.parametrize("bad", ["a\r\nX-Evil: 1", "a\nb", "a\0"])
def test_resolve_refuses_header_splitting(bad: str) -> None:
    with pytest.raises(ValueError, match="X-Auth"):
        resolve({"url": "https://h/", "headers": {"X-Auth": "{{secrets/s}}"}}, {"s": bad}.__getitem__)
    out, _ = resolve({"url": "https://h/", "body": {"s": "{{secrets/s}}"}}, {"s": bad}.__getitem__)
    assert out["body"] == {"s": bad}  # JSON escapes it in a body


def test_mask_hides_raw_quoted_and_json_forms_longest_first() -> None:
    text = "GET https://h/?t=t0k%2Fen%26x%3D1 failed: t0k/en&x=1, body {\"q\": \"a\\\"b\"} alice alice2"
    masked = mask(text, ["t0k/en&x=1", 'a"b', "alice", "", "alice2"])
    assert masked == f"GET https://h/?t={MASK} failed: {MASK}, body {{\"q\": \"{MASK}\"}} {MASK} {MASK}"
    assert mask("nothing here", []) == "nothing here"


def test_reference_errors() -> None:
    assert reference_errors(WEBHOOK) == []
    assert reference_errors({"url": "https://h/p?a=1#x"}) == []
    for url in ("https://{{secrets/h}}/p", "https://h:{{secrets/p}}/", "https://h/{{secrets/p}}?a=1",
                "{{secrets/s}}://h/", "https://h/p#{{secrets/f}}", "https://h/p#x?{{secrets/f}}"):
        assert reference_errors({"url": url}) == [
            {"field": "webhook.url", "message": "a secret may be referenced only in the query"}], url
    errors = reference_errors({"url": "https://h/", "headers": {"X-{{secrets/n}}": "v", "Ok": "{{secrets/v}}"}})
    assert errors == [{"field": "webhook.headers.X-{{secrets/n}}",
                       "message": "a secret may be referenced only in a header value"}]


@given(team=st.text(max_size=20), value=st.text(max_size=300))
def test_property_seal_open_round_trips(team: str, value: str) -> None:
    assume(len(value.encode()) <= SECRET_VALUE_BYTES_MAX)
    assert BOX.open(team, "name", BOX.seal(team, "name", value)) == value


@given(value=st.text(min_size=1), before=st.text(), after=st.text(), quoted=st.booleans())
def test_property_mask_never_leaves_the_value(value: str, before: str, after: str, quoted: bool) -> None:
    assume("*" not in value)  # a value made of the mask's own characters cannot be hidden by it
    text = before + (quote(value, safe="") if quoted else value) + after + value
    masked = mask(text, [value])
    assert value not in masked and quote(value, safe="") not in masked


def test_mask_hides_the_form_an_http_client_prints_in_a_url() -> None:
    value = "s3cr3t value/with+slash@x:y!"
    printed = "url='http://h/hook?k=s3cr3t%20value/with%2Bslash@x:y!'"  # yarl's normalization of quote(value)
    assert mask(printed, [value]) == "url='http://h/hook?k=********'"
