"""The guarded HMC/NUTS transition, as a pair of pure functions.

:func:`guarded_hmc` mirrors :func:`numpyro.infer.hmc.hmc` (numpyro 0.20 to
0.22: :mod:`robusthmc.numpyro._compat`) operation for operation, built from
numpyro's public integrator, tree builder, adapter and step-size search, so
that on a healthy model the draws are bit-identical, and adds three things:

* the leapfrog update makes the momentum NaN wherever the potential energy is
  not finite (a select that fuses with the momentum update), so every
  numerical failure ends the trajectory as a rejected proposal (numpyro would
  accept a ``-inf`` potential), and the NaN momentum left at the tree's edge
  tells it apart from a geometric divergence;
* HMC with a fixed trajectory length stops a trajectory at the first
  non-finite step and never takes more than ``Guard.max_steps_per_transition``
  steps (with a fixed ``num_steps`` it takes those, and checks the end point);
  a heuristic step-size search that ran to the end of the float range stops
  the chain;
* a :class:`GuardRecord` in the state counts failures, keeps the position of
  the first few and of the latest, and stops ("halts") the chain when the
  guard says so.  A halted chain integrates nothing more (a tree of depth 0,
  an HMC trajectory of 0 steps), so the run ends quickly and
  :mod:`robusthmc.numpyro._hook` raises with the draws so far.

Everything added runs on every transition, so it is kept to a few scalar
operations: XLA's per-operation cost inside a loop is what a cheap model
notices.
"""

from __future__ import annotations

import inspect
import warnings
from collections import namedtuple
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import random
from jax.flatten_util import ravel_pytree
from numpyro.infer import hmc as numpyro_hmc
from numpyro.infer.hmc import HMCState, momentum_generator
from numpyro.infer.hmc_util import (
    IntegratorState,
    build_tree,
    euclidean_kinetic_energy,
    find_reasonable_step_size,
    velocity_verlet,
    warmup_adapter,
)
from numpyro.util import cond, find_stack_level, fori_loop, identity, while_loop

from robusthmc._diagnosis import Halt
from robusthmc._errors import UncheckedNumpyroWarning
from robusthmc._guard import Guard
from robusthmc._outcome import transition_halt
from robusthmc.jax._logdensity import guarded_logdensity, is_finite_tree, nan_momentum_where_not_finite
from robusthmc.numpyro._compat import CHECKED_VERSIONS, numpyro_version, transition_is_mirrored

__all__ = ["GuardRecord", "GuardedHMCState", "guarded_hmc", "new_guard_record"]


class GuardRecord(NamedTuple):
    """The guard's bookkeeping for one chain, carried in the sampler state.

    Attributes
    ----------
    halt : int32
        A :class:`~robusthmc._diagnosis.Halt` code; 0 while the chain runs.
    halted_at : int32
        The iteration (from the start of warmup) that halted it, else -1.
    nonfinite_count : int32[2]
        Non-finite transitions in warmup and in sampling.
    consecutive_failures : int32
        Non-finite transitions in a row, up to now.
    steps_capped : int32
        HMC transitions cut at ``Guard.max_steps_per_transition``.
    smallest_warmup_failure_step : float
        The smallest step size at which a warmup transition failed (inf if none):
        at the end of warmup, ``on_nonfinite="raise"`` raises if it is no larger
        than the adapted step size (larger ones were adaptation's probes).
    failure_log : float[K + 1, 2 + D]
        One row per kept failure: its iteration, its step size, then its
        unconstrained position flattened (``jax.flatten_util.ravel_pytree``).  Rows ``0..K-1`` hold the
        first ``K = max_recorded_failures`` failures, row ``K`` the latest one
        after those.  It is written with a select, not an indexed update, which
        ``vmap`` over chains would turn into a scatter.
    """

    halt: jax.Array
    halted_at: jax.Array
    nonfinite_count: jax.Array
    consecutive_failures: jax.Array
    steps_capped: jax.Array
    smallest_warmup_failure_step: jax.Array
    failure_log: jax.Array


# numpyro's fields, whatever they are, then the guard's (built at run time: no redeclaring).
_make_tuple: Callable[..., Any] = namedtuple
_HMCStateFields: Any = _make_tuple("GuardedHMCState", [*HMCState._fields, "nonfinite", "guard"])


class GuardedHMCState(_HMCStateFields):  # type: ignore[misc,valid-type]
    """numpyro's :data:`~numpyro.infer.hmc.HMCState` plus ``nonfinite`` and ``guard``.

    ``nonfinite`` is true for a transition whose trajectory met a non-finite
    potential energy or gradient (such a transition is not counted in
    ``diverging``, which keeps only geometric divergences); ``guard`` is the
    chain's :class:`GuardRecord`.
    """

    __slots__ = ()


def _int(value: Any) -> jax.Array:
    return jnp.asarray(value, dtype=jnp.int32)


def new_guard_record(z: Any, max_recorded: int, *, init_valid: Any = True) -> GuardRecord:
    """A fresh record for a chain starting at ``z``; halted if the start is not valid."""
    init_valid = jnp.asarray(init_valid)
    flat_z = ravel_pytree(z)[0]
    return GuardRecord(
        halt=jnp.where(init_valid, _int(Halt.RUNNING), _int(Halt.INITIALIZATION)),
        halted_at=jnp.where(init_valid, _int(-1), _int(0)),
        nonfinite_count=jnp.zeros(2, dtype=jnp.int32),
        consecutive_failures=_int(0),
        steps_capped=_int(0),
        smallest_warmup_failure_step=jnp.asarray(jnp.inf, flat_z.dtype),
        failure_log=jnp.full((max_recorded + 1, 2 + flat_z.shape[0]), -1, flat_z.dtype),
    )


def _nan_momentum_on_failure(vv_update: Callable) -> Callable:
    """Wrap a leapfrog update so that a non-finite potential energy leaves a NaN momentum.

    See :func:`robusthmc.jax.nan_momentum_where_not_finite`.  A model with no
    continuous latent has no momentum to mark and no trajectory to fail.
    """

    def update(step_size, inverse_mass_matrix, state):
        new_state = vv_update(step_size, inverse_mass_matrix, state)
        return new_state._replace(r=nan_momentum_where_not_finite(new_state.r, new_state.potential_energy))

    return update


def _guarded_generator(potential_fn_gen: Callable) -> Callable:
    def generate(*model_args, **model_kwargs):
        return guarded_logdensity(potential_fn_gen(*model_args, **model_kwargs))

    return generate


_warned_unchecked = False


def _warn_unchecked_numpyro() -> None:
    global _warned_unchecked
    if _warned_unchecked:
        return
    _warned_unchecked = True
    warnings.warn(
        f"numpyro {numpyro_version()}'s HMC transition is not one robusthmc was checked against "
        f"({', '.join(CHECKED_VERSIONS)}): robusthmc's kernels use numpyro's own transition here, "
        "around a guarded potential energy. Failures are still rejected, capped and explained, "
        "but non-finite transitions are counted with the divergences on this numpyro.",
        UncheckedNumpyroWarning,
        stacklevel=find_stack_level(),
    )


def _num_steps(step_size, trajectory_length):
    """Leapfrog steps for a trajectory of ``trajectory_length`` (numpyro's rule)."""
    return jnp.ceil(trajectory_length / step_size).astype(jnp.result_type(int))


def _search_failed(step_size):
    """Whether numpyro's step-size search ran to the end of the float range (or to NaN)."""
    finfo = jnp.finfo(jnp.result_type(step_size))
    return ~((step_size > finfo.tiny) & (step_size < finfo.max))


def guarded_hmc(
    potential_fn: Callable | None = None,
    potential_fn_gen: Callable | None = None,
    kinetic_fn: Callable | None = None,
    algo: str = "NUTS",
    guard: Guard | None = None,
) -> tuple[Callable, Callable]:
    """Guarded twin of :func:`numpyro.infer.hmc.hmc`: ``(init_kernel, sample_kernel)``.

    Same arguments as numpyro's, plus ``guard``; the states are
    :class:`GuardedHMCState`.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> init_kernel, sample_kernel = guarded_hmc(lambda z: 0.5 * jnp.sum(z**2), algo="NUTS")
    >>> state = init_kernel(jnp.zeros(2), num_warmup=10, rng_key=jax.random.key(0))
    >>> state = sample_kernel(state)
    >>> bool(state.nonfinite), int(state.guard.halt)
    (False, 0)
    """
    guard = Guard() if guard is None else guard
    if kinetic_fn is None:
        kinetic_fn = euclidean_kinetic_energy
    mirrored = transition_is_mirrored()
    if not mirrored:
        _warn_unchecked_numpyro()
        potential_fn = potential_fn and guarded_logdensity(potential_fn)
        potential_fn_gen = potential_fn_gen and _guarded_generator(potential_fn_gen)
    # numpyro's own init_kernel makes the first state (and checks the arguments).
    upstream_init, upstream_sample = numpyro_hmc.hmc(potential_fn, potential_fn_gen, kinetic_fn, algo)
    upstream_signature = inspect.signature(upstream_init)
    max_delta_energy = 1000.0
    # Set by init_kernel, read by sample_kernel, as in numpyro.
    config: dict[str, Any] = {}

    def init_kernel(init_params, num_warmup, *args, **kwargs):
        state = upstream_init(init_params, num_warmup, *args, **kwargs)
        call = upstream_signature.bind(init_params, num_warmup, *args, **kwargs)
        call.apply_defaults()
        options = call.arguments
        pe_fn = potential_fn
        if potential_fn_gen:
            pe_fn = potential_fn_gen(*options["model_args"], **(options["model_kwargs"] or {}))
        num_steps, trajectory_length = options["num_steps"], options["trajectory_length"]
        max_tree_depth = options["max_tree_depth"]
        find_reasonable_ss = None
        if options["find_heuristic_step_size"]:
            # numpyro's search stops at the ends of the float range: it cannot hang.
            find_reasonable_ss = partial(find_reasonable_step_size, pe_fn, kinetic_fn, momentum_generator)
        _, wa_update = warmup_adapter(
            num_warmup,
            adapt_step_size=options["adapt_step_size"],
            adapt_mass_matrix=options["adapt_mass_matrix"],
            dense_mass=options["dense_mass"],
            target_accept_prob=options["target_accept_prob"],
            find_reasonable_step_size=find_reasonable_ss,
            regularize_mass_matrix=options["regularize_mass_matrix"],
        )
        config.update(
            forward_mode_ad=options["forward_mode_differentiation"],
            wa_steps=num_warmup,
            wa_update=wa_update,
            vv_update=velocity_verlet(pe_fn, kinetic_fn, options["forward_mode_differentiation"])[1],
            max_treedepth=max_tree_depth if isinstance(max_tree_depth, tuple) else (max_tree_depth,) * 2,
            fixed_num_steps=num_steps,
            # HMC with both num_steps and trajectory_length integrates with their ratio:
            # the adapted step size is never used, so its collapse is harmless (as in numpyro).
            guard_step_size=options["adapt_step_size"]
            and not (algo == "HMC" and num_steps is not None and trajectory_length is not None),
            step_size_searched=options["find_heuristic_step_size"],
        )
        init_valid = jnp.isfinite(state.potential_energy) & is_finite_tree(state.z_grad)
        record = new_guard_record(state.z, guard.max_recorded_failures, init_valid=init_valid)
        search_failed = options["find_heuristic_step_size"] & _search_failed(state.adapt_state.step_size)
        record = record._replace(
            halt=jnp.where(search_failed, _int(Halt.STEP_SIZE_SEARCH), record.halt),
            halted_at=jnp.where(search_failed, _int(0), record.halted_at),
        )
        return GuardedHMCState(*state, jnp.array(False), record)

    def _update_fn(model_args, model_kwargs):
        # HMC with a fixed num_steps checks only the end point (see _hmc_next).
        marked = not (algo == "HMC" and config["fixed_num_steps"] is not None)
        if potential_fn_gen:
            pe_fn = potential_fn_gen(*model_args, **model_kwargs)
            _, vv_update = velocity_verlet(pe_fn, kinetic_fn, config["forward_mode_ad"])
        else:
            vv_update = config["vv_update"]
        return _nan_momentum_on_failure(vv_update) if marked else vv_update

    def _hmc_next(step_size, inverse_mass_matrix, vv_state, vv_update, rng_key, halted, trajectory_length):
        fixed_num_steps = config["fixed_num_steps"]
        capped = jnp.array(False)
        if fixed_num_steps is not None:
            num_steps = fixed_num_steps
        elif len(inverse_mass_matrix) == 0:
            num_steps = 1
        else:
            num_steps = _num_steps(step_size, trajectory_length)
            capped = num_steps > guard.max_steps_per_transition
            num_steps = jnp.minimum(num_steps, guard.max_steps_per_transition)
        if trajectory_length is not None:
            # numpyro keeps the trajectory length; a capped trajectory keeps the step size.
            step_size = jnp.where(capped, step_size, trajectory_length / num_steps)
        if fixed_num_steps is not None:
            # A static trip count, as numpyro's: XLA compiles it unlike a while loop, and the
            # momentum's NaN marker in it would change the draws' last bits.  Only the end
            # point enters the acceptance test, so it is checked there; a NaN gradient on the
            # way propagates to it.  A halted chain still takes these few steps.
            vv_state_new = fori_loop(
                0,
                fixed_num_steps,
                lambda _, state: vv_update(step_size, inverse_mass_matrix, state),
                vv_state,
            )
            failed = ~(jnp.isfinite(vv_state_new.potential_energy) & is_finite_tree(vv_state_new.r))
        else:
            num_steps = jnp.where(halted, 0, num_steps)  # a halted chain integrates nothing

            def leapfrog(carry):
                i, state = carry
                return i + 1, vv_update(step_size, inverse_mass_matrix, state)

            _, vv_state_new = while_loop(
                lambda carry: (carry[0] < num_steps) & is_finite_tree(carry[1].r),
                leapfrog,
                (jnp.zeros((), dtype=jnp.result_type(int)), vv_state),
            )
            failed = ~is_finite_tree(vv_state_new.r)
        energy_old = vv_state.potential_energy + kinetic_fn(inverse_mass_matrix, vv_state.r)
        energy_new = vv_state_new.potential_energy + kinetic_fn(inverse_mass_matrix, vv_state_new.r)
        delta_energy = energy_new - energy_old
        # A failed trajectory is rejected (numpyro would accept a -inf potential energy).
        delta_energy = jnp.where(jnp.isnan(delta_energy) | failed, jnp.inf, delta_energy)
        accept_prob = jnp.clip(jnp.exp(-delta_energy), None, 1.0)
        diverging = delta_energy > max_delta_energy
        transition = random.bernoulli(rng_key, accept_prob)
        vv_state, energy = cond(
            transition, (vv_state_new, energy_new), identity, (vv_state, energy_old), identity
        )
        return (
            vv_state,
            energy,
            num_steps,
            accept_prob,
            diverging,
            failed,
            ravel_pytree(vv_state_new.z)[0],
            capped,
        )

    def _nuts_next(
        step_size, inverse_mass_matrix, vv_state, vv_update, rng_key, halted, max_treedepth_current
    ):
        tree = build_tree(
            vv_update,
            kinetic_fn,
            vv_state,
            inverse_mass_matrix,
            step_size,
            rng_key,
            max_delta_energy=max_delta_energy,
            # A halted chain builds no tree (depth 0), whether or not it is vmapped.
            max_tree_depth=(jnp.where(halted, 0, max_treedepth_current), max(config["max_treedepth"])),
        )
        accept_prob = tree.sum_accept_probs / tree.num_proposals
        new_state = IntegratorState(
            z=tree.z_proposal, r=vv_state.r, potential_energy=tree.z_proposal_pe, z_grad=tree.z_proposal_grad
        )
        # A failing leaf ends the tree, so it sits at the tree's left or right edge.
        right_failed = ~is_finite_tree(tree.r_right)
        failed = right_failed | ~is_finite_tree(tree.r_left)
        failure_z = jnp.where(right_failed, ravel_pytree(tree.z_right)[0], ravel_pytree(tree.z_left)[0])
        return (
            new_state,
            tree.z_proposal_energy,
            tree.num_proposals,
            accept_prob,
            tree.diverging,
            failed,
            failure_z,
            jnp.array(False),
        )

    _next = _nuts_next if algo == "NUTS" else _hmc_next

    def _transition(hmc_state, model_args, model_kwargs):
        wa_steps = config["wa_steps"]
        halted = hmc_state.guard.halt != Halt.RUNNING
        rng_key, rng_key_momentum, rng_key_transition = random.split(hmc_state.rng_key, 3)
        r = (
            momentum_generator(hmc_state.z, hmc_state.adapt_state.mass_matrix_sqrt, rng_key_momentum)
            if hmc_state.r is None
            else hmc_state.r
        )
        vv_state = IntegratorState(hmc_state.z, r, hmc_state.potential_energy, hmc_state.z_grad)
        if algo == "HMC":
            length_args = (hmc_state.trajectory_length,)
        else:
            max_treedepth = config["max_treedepth"]
            length_args = (jnp.where(hmc_state.i < wa_steps, max_treedepth[0], max_treedepth[1]),)
        vv_state, energy, num_steps, accept_prob, diverging, failed, failure_z, capped = _next(
            hmc_state.adapt_state.step_size,
            hmc_state.adapt_state.inverse_mass_matrix,
            vv_state,
            _update_fn(model_args, model_kwargs),
            rng_key_transition,
            halted,
            *length_args,
        )
        wa_update = config["wa_update"]
        # A halted chain's adaptation stops too: its step size stays the one that halted it.
        adapt_state = cond(
            (hmc_state.i < wa_steps) & ~halted,
            (hmc_state.i, accept_prob, vv_state, hmc_state.adapt_state),
            lambda args: wa_update(*args),
            hmc_state.adapt_state,
            identity,
        )
        itr = hmc_state.i + 1
        n = jnp.where(hmc_state.i < wa_steps, itr, itr - wa_steps)
        mean_accept_prob = hmc_state.mean_accept_prob + (accept_prob - hmc_state.mean_accept_prob) / n
        return hmc_state._replace(
            i=itr,
            z=vv_state.z,
            z_grad=vv_state.z_grad,
            potential_energy=vv_state.potential_energy,
            energy=energy,
            r=None if hmc_state.r is None else vv_state.r,
            num_steps=num_steps,
            accept_prob=accept_prob,
            mean_accept_prob=mean_accept_prob,
            diverging=diverging & ~failed,
            adapt_state=adapt_state,
            rng_key=rng_key,
            nonfinite=failed,
            guard=_record(hmc_state, adapt_state, failed, failure_z, capped),
        )

    def _record(hmc_state, adapt_state, failed, failure_z, capped):
        # Kept to a handful of fusible scalar operations and one small select.
        record = hmc_state.guard
        i = hmc_state.i
        in_warmup = i < config["wa_steps"]
        nonfinite_count = record.nonfinite_count + jnp.stack([in_warmup & failed, ~in_warmup & failed])
        consecutive = jnp.where(failed, record.consecutive_failures + 1, 0)
        recorded = guard.max_recorded_failures
        logged = jnp.sum(record.nonfinite_count)
        row = jnp.minimum(logged, recorded)
        used_step = hmc_state.adapt_state.step_size.astype(failure_z.dtype)
        entry = jnp.concatenate([i.astype(failure_z.dtype)[None], used_step[None], failure_z])
        written = failed & (jnp.arange(recorded + 1) == row)
        failure_log = jnp.where(written[:, None], entry, record.failure_log)
        step_size = adapt_state.step_size
        smallest = record.smallest_warmup_failure_step
        smallest = jnp.where(in_warmup & failed, jnp.minimum(smallest, used_step), smallest)
        halt = transition_halt(
            jnp,
            guard,
            record.halt,
            in_warmup=in_warmup,
            warmup_ends=i == config["wa_steps"] - 1,
            failed=failed,
            consecutive=consecutive,
            step_size=step_size,
            smallest_failure_step=smallest,
            step_size_adapted=config["guard_step_size"],
            # at each new window of warmup, too
            step_size_search_failed=config["step_size_searched"] and _search_failed(step_size),
        ).astype(jnp.int32)
        halts_now = (record.halt == Halt.RUNNING) & (halt != Halt.RUNNING)
        return GuardRecord(
            halt=halt,
            halted_at=jnp.where(halts_now, i.astype(jnp.int32), record.halted_at),
            nonfinite_count=nonfinite_count.astype(jnp.int32),
            consecutive_failures=consecutive.astype(jnp.int32),
            steps_capped=record.steps_capped + capped,
            smallest_warmup_failure_step=smallest.astype(record.smallest_warmup_failure_step.dtype),
            failure_log=failure_log,
        )

    def _upstream_transition(hmc_state, model_args, model_kwargs):
        # numpyro's transition around the guarded potential: failures are rejected but
        # not told apart from divergences.
        state = HMCState(*hmc_state[: len(HMCState._fields)])
        halted = hmc_state.guard.halt != Halt.RUNNING
        new_state = cond(
            halted, state, identity, state, lambda state: upstream_sample(state, model_args, model_kwargs)
        )
        unknown = jnp.array(False)
        record = _record(hmc_state, new_state.adapt_state, unknown, ravel_pytree(new_state.z)[0], unknown)
        return GuardedHMCState(*new_state, unknown, record)

    def sample_kernel(hmc_state, model_args=(), model_kwargs=None):
        """Run one guarded transition (a halted chain integrates nothing and stays put)."""
        model_kwargs = {} if model_kwargs is None else model_kwargs
        if mirrored:
            return _transition(hmc_state, model_args, model_kwargs)
        return _upstream_transition(hmc_state, model_args, model_kwargs)

    return init_kernel, sample_kernel
