"""A pytest plugin that swaps robusthmc's kernels in for numpyro's, Pyro's and BlackJAX's.

It runs the upstream projects' own MCMC tests against the guarded kernels, the
way a user swaps the kernel under code they do not own::

    PYTHONPATH=tools python -m pytest -p swap_kernels path/to/numpyro/test/infer/test_mcmc.py

``make upstream-tests NUMPYRO=path/to/numpyro PYRO=path/to/pyro`` runs the
files listed in the Makefile.  The test files come from a checkout of each
project (their PyPI releases do not ship them), at the release installed;
BlackJAX's come from its source distribution on PyPI, which ships them
(``make upstream-tests-blackjax`` fetches it).
"""

import importlib.util

if importlib.util.find_spec("numpyro") is not None:
    import numpyro.infer

    import robusthmc.numpyro

    numpyro.infer.NUTS = robusthmc.numpyro.NUTS
    numpyro.infer.HMC = robusthmc.numpyro.HMC

if importlib.util.find_spec("pyro") is not None:
    import pyro.infer
    import pyro.infer.mcmc
    import pyro.infer.mcmc.hmc
    import pyro.infer.mcmc.nuts

    import robusthmc.pyro

    for module in (pyro.infer, pyro.infer.mcmc):
        module.NUTS, module.HMC = robusthmc.pyro.NUTS, robusthmc.pyro.HMC
    pyro.infer.mcmc.hmc.HMC = robusthmc.pyro.HMC
    pyro.infer.mcmc.nuts.NUTS = robusthmc.pyro.NUTS

if importlib.util.find_spec("blackjax") is not None:
    import blackjax

    import robusthmc.blackjax

    blackjax.nuts, blackjax.hmc = robusthmc.blackjax.nuts, robusthmc.blackjax.hmc
    blackjax.window_adaptation = robusthmc.blackjax.window_adaptation
