"""Guarded BlackJAX: ``nuts``, ``hmc`` and ``window_adaptation`` as BlackJAX's, plus the guard.

Swap ``blackjax.nuts`` for ``robusthmc.blackjax.nuts`` (same arguments and
defaults, ``guard=`` added): a healthy model's draws are BlackJAX's bit for
bit, and the info of each step gains ``nonfinite`` (the trajectory met a
non-finite log density or gradient and its proposal was rejected), apart from
``is_divergent`` (geometric divergences only; BlackJAX folds both together).
``init`` at a non-finite start raises, naming the coordinates; the guarded
``window_adaptation`` raises when the step size collapses; :func:`settle`
turns the states and infos of your own compiled loop into the same errors and
warnings as a NumPyro or Pyro run.  Needs ``pip install "robusthmc[blackjax]"``.

Examples
--------
>>> import jax, jax.numpy as jnp
>>> from robusthmc import blackjax as rb
>>> logdensity = lambda p: -0.5 * jnp.sum(p["x"] ** 2)
>>> (state, parameters), _ = rb.window_adaptation(rb.nuts, logdensity).run(
...     jax.random.key(0), {"x": jnp.ones(3)}, num_steps=200
... )
>>> algo = rb.nuts(logdensity, **parameters)
>>> def one_step(state, key):
...     state, info = algo.step(key, state)
...     return state, (state, info)
>>> _, (states, infos) = jax.lax.scan(one_step, state, jax.random.split(jax.random.key(1), 200))
>>> rb.settle(states, infos, logdensity_fn=logdensity)
>>> int(infos.nonfinite.sum()), int(infos.is_divergent.sum())
(0, 0)
"""

from robusthmc._backends import require

require("blackjax")

from robusthmc.blackjax._adaptation import window_adaptation  # noqa: E402
from robusthmc.blackjax._kernels import GuardedHMCInfo, GuardedNUTSInfo, hmc, nuts  # noqa: E402
from robusthmc.blackjax._settle import settle  # noqa: E402

__all__ = ["GuardedHMCInfo", "GuardedNUTSInfo", "hmc", "nuts", "settle", "window_adaptation"]
