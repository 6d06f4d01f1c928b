"""Fixtures for every test and doctest (tests/ and the package's docstrings)."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_store_key(tmp_path_factory):
    """The store's key file (:mod:`sktransfer.frozen.secret`) in a temporary folder, never the
    user's: set for the whole session, so worker processes (n_jobs) inherit the same key."""
    key_file = tmp_path_factory.mktemp("store-key") / "store.key"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SKTRANSFER_KEY_FILE", str(key_file))
        yield key_file
