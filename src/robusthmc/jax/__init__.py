"""The guard on its own, for any JAX sampler: a checked log density and a checked start.

robusthmc's NumPyro kernels and :mod:`robusthmc.blackjax` are built on these;
a sampler of your own can use them the same way.  Needs only jax.

* :func:`guarded_logdensity` wraps a log density (or a potential energy) so
  that a non-finite value also gives a NaN gradient: an HMC trajectory that
  reaches such a point then has a NaN momentum, ends there, and its proposal
  is rejected, and the NaN at the trajectory's edge tells the failure apart
  from a geometric divergence.  Where the value is finite the value and
  gradient are the function's own, bit for bit.
* Inside an integrator, the NumPyro kernels and :mod:`robusthmc.blackjax`
  mark a failure on the momentum instead (a leapfrog step whose new point is
  not finite leaves a NaN momentum), which keeps a healthy model's compiled
  program, and so its draws, the sampler's own.
* :func:`check_position` raises :class:`~robusthmc.InitializationError`
  naming each coordinate (its pytree path, e.g. ``position['tau']``) where a
  start, or its gradient, is not finite.

Examples
--------
>>> import jax, jax.numpy as jnp
>>> from robusthmc.jax import guarded_logdensity
>>> logdensity = guarded_logdensity(lambda x: jnp.log(x))
>>> float(jax.grad(logdensity)(2.0)), float(jax.grad(logdensity)(0.0))
(0.5, nan)
"""

from robusthmc.jax._logdensity import check_position, guarded_logdensity

__all__ = ["check_position", "guarded_logdensity"]
