"""Where a served market's authkey comes from, and that it stays secret."""

from __future__ import annotations

import stat

import pytest

from mpmarket.errors import AuthkeyError
from mpmarket.net.authkey import (
    ENV_VAR,
    create_key_file,
    default_key_path,
    load_authkey,
    new_key_text,
    require_explicit_key,
)

KEY = "0123456789abcdef-a-test-key"


@pytest.fixture(autouse=True)
def private_folders(tmp_path, monkeypatch):
    """No test reads or writes the real default key."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(ENV_VAR, raising=False)


def _key_file(path, text=KEY, mode=0o600):
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


def test_default_path_is_in_the_runtime_folder_else_the_config_folder(tmp_path, monkeypatch):
    assert default_key_path() == tmp_path / "runtime" / "mpmarket" / "authkey"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert default_key_path() == tmp_path / "home" / ".config" / "mpmarket" / "authkey"


def test_created_key_file_is_owner_only_and_random(tmp_path):
    path = tmp_path / "deep" / "er" / "authkey"
    secret = create_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_text().strip().encode() == secret
    assert len(secret) == 64 and secret != create_key_file(tmp_path / "other")
    with pytest.raises(AuthkeyError, match="already exists"):
        create_key_file(path)


def test_serve_creates_the_default_file_once_then_reuses_it():
    key, created = load_authkey(None, create=True)
    assert created and key.origin == "default" and key.path == default_key_path()
    again, created_again = load_authkey(None, create=True)
    assert not created_again and again.secret == key.secret
    worker, _ = load_authkey(None)
    assert worker.secret == key.secret


def test_serve_creates_a_named_file_that_is_missing(tmp_path):
    key, created = load_authkey(tmp_path / "k", create=True)
    assert created and key.origin == "file" and key.explicit
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


def test_precedence_file_then_environment_then_default(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "from-the-environment-0123")
    from_env, _ = load_authkey(None)
    assert from_env.secret == b"from-the-environment-0123" and from_env.origin == "env"
    from_file, _ = load_authkey(_key_file(tmp_path / "k"))
    assert from_file.secret == KEY.encode()


def test_a_worker_without_any_key_gets_one_line_naming_the_options():
    with pytest.raises(AuthkeyError, match=r"no authkey: give --authkey-file PATH or set"):
        load_authkey(None)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_others_can_access_is_refused(tmp_path, mode):
    path = _key_file(tmp_path / "k", mode=mode)
    with pytest.raises(AuthkeyError, match=r"accessible by others .*chmod 600") as raised:
        load_authkey(path)
    assert KEY not in str(raised.value)


def test_short_missing_or_binary_keys_are_refused_without_showing_them(tmp_path, monkeypatch):
    with pytest.raises(AuthkeyError, match="too short") as raised:
        load_authkey(_key_file(tmp_path / "short", "abc123"))
    assert "abc123" not in str(raised.value)
    with pytest.raises(AuthkeyError, match="does not exist"):
        load_authkey(tmp_path / "missing")
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe" * 20)
    binary.chmod(0o600)
    with pytest.raises(AuthkeyError, match="not text"):
        load_authkey(binary)
    monkeypatch.setenv(ENV_VAR, "short")
    with pytest.raises(AuthkeyError, match=r"\$MPMARKET_AUTHKEY is too short"):
        load_authkey(None)


def test_the_key_is_never_in_a_repr(tmp_path):
    key, _ = load_authkey(_key_file(tmp_path / "k"))
    assert KEY not in repr(key) and KEY not in str(key)
    assert key.describe() == str(tmp_path / "k")


def test_new_keys_are_long_and_distinct():
    keys = {new_key_text() for _ in range(100)}
    assert len(keys) == 100 and all(len(k) == 64 for k in keys)


def _never_asked() -> bool:
    raise AssertionError("an explicit key needs no loopback check")


def test_serving_beyond_loopback_needs_an_explicit_key():
    with pytest.raises(AuthkeyError) as raised:
        require_explicit_key("0.0.0.0:7151", None, loopback=lambda: False)
    assert str(raised.value) == (
        "refusing to listen on 0.0.0.0:7151 without an explicit authkey: give "
        "--authkey-file PATH or set MPMARKET_AUTHKEY (whoever holds the key can run code "
        "in the server)"
    )
    # An empty variable is no key.
    with pytest.raises(AuthkeyError, match="refusing to listen on"):
        require_explicit_key("10.0.0.5:7151", None, loopback=lambda: False, environ={ENV_VAR: ""})


def test_loopback_needs_no_explicit_key():
    require_explicit_key("127.0.0.1:7151", None, loopback=lambda: True)


def test_a_key_file_or_the_variable_is_explicit(tmp_path, monkeypatch):
    require_explicit_key("0.0.0.0:7151", tmp_path / "key", loopback=_never_asked)
    require_explicit_key("0.0.0.0:7151", None, loopback=_never_asked, environ={ENV_VAR: KEY})
    monkeypatch.setenv(ENV_VAR, KEY)
    require_explicit_key("0.0.0.0:7151", None, loopback=_never_asked)
