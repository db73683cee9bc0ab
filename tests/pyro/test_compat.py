"""Every private Pyro name the backend reads exists on the installed Pyro."""

from robusthmc.pyro import _compat


def test_every_private_pyro_name_the_backend_reads_exists_here():
    assert _compat.missing_private_names() == []


def test_a_missing_name_is_reported(monkeypatch):
    monkeypatch.setattr(_compat, "PRIVATE_NAMES", (*_compat.PRIVATE_NAMES, ("pyro.infer.mcmc.api", "_Gone")))
    assert _compat.missing_private_names() == ["pyro.infer.mcmc.api._Gone"]
