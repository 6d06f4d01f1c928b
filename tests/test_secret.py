"""The store's key: created 0600 on first use outside any cache folder, refused when others
could read it, shared by a team only when named on purpose."""

import os
import stat

import pytest

from sktransfer.frozen import secret
from sktransfer.frozen.files import StoreWarning
from sktransfer.frozen.secret import StoreKeyError, key_file, seal, secret_key, unseal

posix_only = pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX owners and modes")


@pytest.fixture
def key_path(tmp_path, monkeypatch):
    path = tmp_path / "config" / "store.key"
    monkeypatch.setenv("SKTRANSFER_KEY_FILE", str(path))
    return path


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@posix_only
def test_key_created_once_0600_in_a_private_folder(key_path):
    key = secret_key()
    assert len(key) == 32 and mode(key_path) == 0o600 and mode(key_path.parent) == 0o700
    assert secret_key() == key
    assert bytes.fromhex(key_path.read_text().strip()) == key


def test_default_key_file_is_in_the_user_config_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("SKTRANSFER_KEY_FILE")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert key_file() == (tmp_path / "xdg" / "sktransfer" / "store.key", False)
    secret_key()
    assert (tmp_path / "xdg" / "sktransfer" / "store.key").is_file()


@posix_only
@pytest.mark.parametrize("bits", [0o640, 0o604, 0o620])
def test_default_key_file_readable_by_others_is_refused(tmp_path, monkeypatch, bits):
    monkeypatch.delenv("SKTRANSFER_KEY_FILE")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    secret_key()
    path, _ = key_file()
    os.chmod(path, bits)
    with pytest.raises(StoreKeyError, match=rf"mode {bits:04o}.*chmod 600"):
        secret_key()


@posix_only
def test_named_team_key_may_be_group_readable_but_not_world_readable(key_path):
    secret_key()
    os.chmod(key_path, 0o640)  # a team's key: the group reads it
    assert len(secret_key()) == 32
    for bits in (0o644, 0o660):  # anyone can read it / the group can swap it
        os.chmod(key_path, bits)
        with pytest.raises(StoreKeyError, match="no one outside its group"):
            secret_key()


@posix_only
def test_default_key_file_owned_by_someone_else_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("SKTRANSFER_KEY_FILE")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    secret_key()
    monkeypatch.setattr(secret, "_KEYS", {})
    monkeypatch.setattr(os, "getuid", lambda: os.stat(tmp_path).st_uid + 1)
    with pytest.raises(StoreKeyError, match="owned by you"):
        secret_key()


def test_malformed_key_is_refused_with_the_fix(key_path):
    key_path.parent.mkdir()
    key_path.write_text("not a key")
    key_path.chmod(0o600)
    with pytest.raises(StoreKeyError, match="64 hexadecimal characters.*token_hex"):
        secret_key()


def test_key_that_cannot_be_created_gives_a_process_key_and_one_warning(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("SKTRANSFER_KEY_FILE", str(tmp_path / "a-file" / "store.key"))
    monkeypatch.setattr(secret, "_PROCESS_KEY", [])
    with pytest.warns(StoreWarning, match="key for this process only") as caught:
        first, second = secret_key(), secret_key()
    assert first == second and len(caught) == 1


def test_sealed_data_needs_the_same_key_and_name(key_path, tmp_path, monkeypatch):
    data = seal(b"TESTKIND", "entry", b"payload")
    assert unseal(b"TESTKIND", "entry", data) == b"payload"
    assert unseal(b"TESTKIND", "other entry", data) is None
    assert unseal(b"OTHERKND", "entry", data) is None
    monkeypatch.setenv("SKTRANSFER_KEY_FILE", str(tmp_path / "someone-else.key"))
    assert unseal(b"TESTKIND", "entry", data) is None  # written without this user's key
