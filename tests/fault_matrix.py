"""The fault-injection matrix: faults injected into a standard normal, and the outcome each cell must give.

Backend and chain method x phase (initialisation, warmup, sampling) x fault.
BlackJAX's cells run ``robusthmc.blackjax``: ``init``, ``window_adaptation``
(warmup), and a compiled sampling loop the user owns, settled with
``robusthmc.blackjax.settle`` (a compiled loop has no Ctrl-C cell: it is the
user's).
A fault is active everywhere (initialisation) or beyond x = 0.5 (warmup,
sampling: about a third of the posterior's mass, so the chain meets it at
once), and only in its phase.  Every numerical cell runs under
``Guard(on_nonfinite="raise")``, the strictest policy: what it must give is an
explicit error naming the site and the chain, and the draws made before the
fault, bit-identical to an unfaulted run's, and ``mcmc.get_samples()`` after
the stop giving the same draws as the error.  A user's exception must come out
unchanged; Ctrl-C must give :class:`~robusthmc.SamplingInterrupted` with the
draws.

    python -m tests.fault_matrix [numpyro|pyro]   # runs the cells and prints the table
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np

PHASES = ("initialization", "warmup", "sampling")
NUMERIC_FAULTS = ("nan", "nan_gradient", "+inf", "-inf")
NUMPYRO_METHODS = ("sequential", "vectorized", "parallel")
PYRO_METHODS = ("one process", "worker processes")
BLACKJAX_METHODS = ("one chain", "vmapped chains")


class Cell(NamedTuple):
    backend: str
    method: str
    phase: str
    fault: str

    @property
    def expected(self) -> str:
        if self.fault == "user exception":
            return "ZeroDivisionError, unchanged"
        if self.fault == "SIGINT":
            return "SamplingInterrupted with the draws"
        if self.phase == "initialization":
            if self.method == "vmapped chains":  # a start under vmap is not known, so init cannot raise
                return "NonFiniteError at the first transition"
            return "InitializationError"
        if self.phase == "warmup":
            return "NonFiniteError at the end of warmup"
        return "NonFiniteError with the draws before it"


def cells() -> list[Cell]:
    out = []
    for backend, methods, faults in (
        ("numpyro", NUMPYRO_METHODS, NUMERIC_FAULTS),
        ("pyro", PYRO_METHODS, (*NUMERIC_FAULTS, "numerical exception")),
        ("blackjax", BLACKJAX_METHODS, NUMERIC_FAULTS),
    ):
        for method in methods:
            for phase in PHASES:
                out.extend(Cell(backend, method, phase, fault) for fault in faults)
            user_phases = PHASES if backend == "pyro" else ("initialization", "sampling")
            out.extend(Cell(backend, method, phase, "user exception") for phase in user_phases)
            if backend != "blackjax":
                out.append(Cell(backend, method, "sampling", "SIGINT"))
    return out


class Outcome(NamedTuple):
    error: BaseException | None
    samples: dict  # the draws the error carries (grouped by chain), or the run's
    reference: dict  # an unfaulted run's draws, same seeds
    after_stop: dict | None = None  # mcmc.get_samples(group_by_chain=True) after the stop, where checked


def matches(cell: Cell, outcome: Outcome) -> str:
    """What is wrong with ``outcome`` for ``cell`` ("" if it is as expected)."""
    import robusthmc

    error = outcome.error
    if cell.fault == "user exception":
        ok = type(error) is ZeroDivisionError and "user's own" in str(error)
        return "" if ok else f"expected the user's ZeroDivisionError, got {error!r}"
    if cell.fault == "SIGINT":
        if not isinstance(error, robusthmc.SamplingInterrupted):
            return f"expected SamplingInterrupted, got {error!r}"
    elif cell.phase == "initialization" and cell.method == "vmapped chains":
        if not isinstance(error, robusthmc.NonFiniteError) or "iteration 0" not in str(error).splitlines()[0]:
            return f"expected NonFiniteError at iteration 0, got {error!r}"
        if "position['x']" not in str(error).splitlines()[0]:
            return "the error's first line does not name position['x']"
        return ""
    elif cell.phase == "initialization":
        if not isinstance(error, robusthmc.InitializationError):
            return f"expected InitializationError, got {error!r}"
        named = "position['x']" if cell.backend == "blackjax" else "fault"
        if named not in str(error).splitlines()[0] and cell.fault != "numerical exception":
            return f"the error's first line does not name {named!r}"
        return ""
    else:
        if not isinstance(error, robusthmc.NonFiniteError):
            return f"expected NonFiniteError, got {error!r}"
        where = f"chain {error.diagnosis.chain}, {cell.phase}"
        if where not in str(error):
            return f"the error does not say {where!r}"
        if cell.phase == "warmup":
            if "at the end of warmup" not in str(error):
                return "not raised at the end of warmup"
            shapes = {name: np.shape(draws)[:2] for name, draws in outcome.samples.items()}
            if cell.backend == "blackjax":  # the adaptation's error: no draws were made
                return "" if not shapes else f"a stop in BlackJAX's adaptation carries no draws, got {shapes}"
            if set(shapes) != {"x"} or any(shape[1] != 0 for shape in shapes.values()):
                return f"a stop in warmup must carry one empty array a site, (chains, 0), got {shapes}"
            return (
                ""
                if outcome.after_stop is None or _same_arrays(outcome.after_stop, outcome.samples)
                else ("get_samples() after the stop differs from the draws the error carries")
            )
    if outcome.after_stop is not None and not _same_arrays(outcome.after_stop, outcome.samples):
        return "get_samples() after the stop differs from the draws the error carries"
    return _same_draws_before_the_fault(outcome)


def _same_arrays(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


def _same_draws_before_the_fault(outcome: Outcome) -> str:
    draws, reference = np.asarray(outcome.samples.get("x", [])), np.asarray(outcome.reference["x"])
    made = 0
    for chain in range(draws.shape[0] if draws.ndim == 2 else 0):
        kept = draws[chain][~np.isnan(draws[chain])]
        reference_chain = reference[min(chain, reference.shape[0] - 1)]
        common = min(len(kept), len(reference_chain))  # a Ctrl-C run was longer than its reference
        if not np.array_equal(kept[:common], reference_chain[:common]):
            return f"chain {chain}: the draws before the fault differ from an unfaulted run's"
        made += len(kept)
    return "" if made > 0 else "no draws came with the error"


def send_ctrl_c_after(seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    return timer


# --- NumPyro ---------------------------------------------------------------------------------------


#: The numeric faults as traced arguments: every numerical cell of a chain method runs one
#: compiled program (``jit_model_args=True``), so the matrix compiles a few programs, not one a cell.
FAULT_CODES = {"nan": 0, "nan_gradient": 1, "+inf": 2, "-inf": 3}
REGIONS = {"everywhere": -np.inf, "beyond": 0.5, "nowhere": np.inf}


#: The user's bug: on while a user-exception cell's phase is traced.
USER_BUG = {"on": False}


def numpyro_model(fault_code: Any, threshold: Any) -> None:
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    x = numpyro.sample("x", dist.Normal(0.0, 1.0))
    if USER_BUG["on"]:
        raise ZeroDivisionError("division by zero in the user's own code")
    active = x > threshold

    @jax.custom_jvp
    def nan_gradient(x):
        return jnp.zeros_like(x)

    # NaN in the tangent only where this fault is active: a NaN elsewhere would leak through the select.
    nan_gradient.defjvp(
        lambda primals, tangents: (
            jnp.zeros_like(primals[0]),
            jnp.where(active & (fault_code == FAULT_CODES["nan_gradient"]), jnp.nan, 0.0) * tangents[0],
        )
    )
    value = jnp.select(
        [fault_code == code for code in FAULT_CODES.values()],
        [
            jnp.where(active, jnp.nan, 0.0),
            nan_gradient(x),
            jnp.where(active, jnp.inf, 0.0),
            jnp.where(active, -jnp.inf, 0.0),
        ],
    )
    numpyro.factor("fault", value)


def _numpyro_args(cell: Cell, region: str) -> tuple:
    code = FAULT_CODES.get(cell.fault, FAULT_CODES["nan"])
    return np.int32(code), np.float32(REGIONS[region])


def _numpyro_mcmc(method: str, num_samples: int = 60) -> Any:
    from numpyro.infer import MCMC

    import robusthmc.numpyro as rnp
    from robusthmc import Guard

    kernel = rnp.NUTS(numpyro_model, guard=Guard(on_nonfinite="raise"))
    return MCMC(
        kernel,
        num_warmup=60,
        num_samples=num_samples,
        num_chains=2,
        chain_method=method,
        progress_bar=False,
        jit_model_args=True,
    )


@contextlib.contextmanager
def persistent_compilation_cache(directory: str) -> Iterator[None]:
    """JAX's persistent compilation cache in ``directory``, every program cached, for the block.

    Each cell builds its own kernel and MCMC, so each traces its programs again; with
    the fault as a traced argument those programs are the same, and XLA compiles each
    once. It takes effect only where this process has compiled nothing before (each
    test file runs in a process of its own under ``make test``).
    """
    import jax

    options = {
        "jax_compilation_cache_dir": directory,
        "jax_persistent_cache_min_compile_time_secs": 0,
        "jax_persistent_cache_min_entry_size_bytes": -1,
    }
    previous = {name: getattr(jax.config, name) for name in options}
    for name, value in options.items():
        jax.config.update(name, value)
    try:
        yield
    finally:
        for name, value in previous.items():
            jax.config.update(name, value)


def run_numpyro(cell: Cell) -> Outcome:
    import jax
    import jax.numpy as jnp

    import robusthmc

    start = {"x": jnp.zeros(2)}
    warmup_key, sampling_key = jax.random.key(0), jax.random.key(1)
    # A Ctrl-C cell samples long enough for the signal to come while the run compiles or runs.
    faulted = _numpyro_mcmc(cell.method, 20_000 if cell.fault == "SIGINT" else 60)
    user_bug = cell.fault == "user exception"
    timer, after_stop = None, None
    try:
        if cell.phase == "initialization":
            USER_BUG["on"] = user_bug
            faulted.run(warmup_key, *_numpyro_args(cell, "everywhere"))
        else:
            region = "beyond" if cell.phase == "warmup" else "nowhere"
            faulted.warmup(warmup_key, *_numpyro_args(cell, region), init_params=start)
            # Ctrl-C while the sampling run compiles: noted, and raised when it returns, with every draw.
            timer = send_ctrl_c_after(0.3) if cell.fault == "SIGINT" else None
            region = "beyond" if cell.phase == "sampling" and timer is None else "nowhere"
            USER_BUG["on"] = user_bug
            faulted.run(sampling_key, *_numpyro_args(cell, region))
        error, samples = None, faulted.get_samples(group_by_chain=True)
    except BaseException as caught:  # what the cell raised is its outcome
        error, samples = caught, dict(getattr(caught, "samples", {}))
        if isinstance(caught, (robusthmc.RobustHMCError, robusthmc.SamplingInterrupted)) and samples:
            after_stop = {k: np.asarray(v) for k, v in faulted.get_samples(group_by_chain=True).items()}
    finally:
        USER_BUG["on"] = False
        if timer is not None:
            timer.cancel()
    return Outcome(error, samples, _numpyro_reference(cell.method), after_stop)


@functools.cache
def _numpyro_reference(method: str) -> dict:
    """An unfaulted run's draws: the same kernel, seeds and start as every cell of ``method``."""
    import jax
    import jax.numpy as jnp

    mcmc = _numpyro_mcmc(method)
    unfaulted = _numpyro_args(Cell("numpyro", method, "sampling", "nan"), "nowhere")
    mcmc.warmup(jax.random.key(0), *unfaulted, init_params={"x": jnp.zeros(2)})
    mcmc.run(jax.random.key(1), *unfaulted)
    return mcmc.get_samples(group_by_chain=True)


# --- Pyro ------------------------------------------------------------------------------------------

#: The fault's switch: on in the phase of the cell (set by the hook, in the process that draws).
FAULT_ON = {"on": False}


class _NanGradient:
    """A function whose value is 0 and whose gradient is NaN (torch)."""

    @staticmethod
    def apply(x: Any) -> Any:
        import torch

        class NanGradient(torch.autograd.Function):
            @staticmethod
            def forward(ctx: Any, value: Any) -> Any:
                return torch.zeros_like(value)

            @staticmethod
            def backward(ctx: Any, grad: Any) -> Any:
                return grad * float("nan")

        return NanGradient.apply(x)


def pyro_model(fault: str, region: str) -> None:
    import pyro
    import pyro.distributions as dist
    import torch

    x = pyro.sample("x", dist.Normal(0.0, 1.0))
    if region == "nowhere" or not FAULT_ON["on"] or not (region == "everywhere" or bool(x.detach() > 0.5)):
        return
    if fault == "user exception":
        raise ZeroDivisionError("division by zero in the user's own code")
    if fault == "numerical exception":
        raise torch.linalg.LinAlgError("linalg.cholesky: The factorization could not be completed")
    value = {
        "nan": torch.tensor(float("nan")),
        "nan_gradient": _NanGradient.apply(x),
        "+inf": torch.tensor(float("inf")),
        "-inf": torch.tensor(float("-inf")),
    }[fault]
    pyro.factor("fault", value)


def _switch(phase: str, warmup_steps: int) -> Callable:
    """A ``hook_fn`` that turns the fault off when warmup ends (warmup cells), or on after 10 draws."""

    def hook(kernel: Any, params: Any, stage: str, i: int) -> None:
        if phase == "warmup" and stage.startswith("Warmup") and i == warmup_steps - 1:
            FAULT_ON["on"] = False
        if phase == "sampling" and stage.startswith("Sample") and i == 9:
            FAULT_ON["on"] = True

    return hook


def run_pyro(cell: Cell) -> Outcome:
    import pyro
    import pyro.infer.mcmc.api as api
    import torch
    from pyro.infer import MCMC

    import robusthmc
    import robusthmc.pyro as rp
    from robusthmc import Guard

    workers = cell.method == "worker processes"
    chains = 2 if workers else 1
    cpu_count = api.mp.cpu_count
    if workers:
        api.mp.cpu_count = lambda: 8

    def mcmc(phase: str, num_samples: int = 60) -> Any:
        pyro.set_rng_seed(0)
        kernel = rp.NUTS(pyro_model, guard=Guard(on_nonfinite="raise", max_init_attempts=10))
        start = (
            None
            if cell.phase == "initialization"
            else {"x": torch.zeros(chains) if workers else torch.zeros(())}
        )
        return MCMC(
            kernel,
            num_samples=num_samples,
            warmup_steps=60,
            num_chains=chains,
            disable_progbar=True,
            hook_fn=_switch(phase, 60),
            initial_params=start,
        )

    region = "everywhere" if cell.phase == "initialization" else "beyond"
    after_stop = None
    try:
        FAULT_ON["on"] = False
        reference = mcmc("none")
        reference.run(cell.fault, "nowhere")
        FAULT_ON["on"] = cell.phase in ("initialization", "warmup")
        faulted = mcmc(cell.phase, 100_000 if cell.fault == "SIGINT" else 60)
        timer = send_ctrl_c_after(5.0) if cell.fault == "SIGINT" else None
        try:
            faulted.run(cell.fault, "nowhere" if cell.fault == "SIGINT" else region)
            error, samples = None, {k: v.numpy() for k, v in faulted.get_samples(group_by_chain=True).items()}
        except BaseException as caught:  # what the cell raised is its outcome
            error, samples = caught, dict(getattr(caught, "samples", {}))
            if isinstance(caught, (robusthmc.NonFiniteError, robusthmc.SamplingInterrupted)):
                after_stop = {k: v.numpy() for k, v in faulted.get_samples(group_by_chain=True).items()}
        finally:
            if timer is not None:
                timer.cancel()
    finally:
        api.mp.cpu_count = cpu_count
        FAULT_ON["on"] = False
    reference_draws = {k: v.numpy() for k, v in reference.get_samples(group_by_chain=True).items()}
    if error is not None and getattr(error, "diagnosis", None) is not None and workers:
        # A worker's error carries its own chain only.
        chain = error.diagnosis.chain
        reference_draws = {k: v[chain : chain + 1] for k, v in reference_draws.items()}
    return Outcome(error, samples, reference_draws, after_stop)


# --- BlackJAX --------------------------------------------------------------------------------------


def blackjax_logdensity(fault: str, threshold: float) -> Callable:
    """A standard normal over ``{"x": ...}`` with ``fault`` beyond ``threshold``."""
    import jax
    import jax.numpy as jnp

    @jax.custom_jvp
    def nan_gradient(x):
        return jnp.zeros_like(x)

    nan_gradient.defjvp(
        lambda primals, tangents: (
            jnp.zeros_like(primals[0]),
            jnp.where(primals[0] > threshold, jnp.nan, 0.0) * tangents[0],
        )
    )

    def logdensity(position):
        x = position["x"]
        if USER_BUG["on"]:
            raise ZeroDivisionError("division by zero in the user's own code")
        active = x > threshold
        value = {
            "nan": lambda: jnp.where(active, jnp.nan, 0.0),
            "nan_gradient": lambda: nan_gradient(x),
            "+inf": lambda: jnp.where(active, jnp.inf, 0.0),
            "-inf": lambda: jnp.where(active, -jnp.inf, 0.0),
        }[fault if fault in FAULT_CODES else "nan"]()
        return -0.5 * x**2 + value

    return logdensity


def run_blackjax(cell: Cell) -> Outcome:
    import jax
    import jax.numpy as jnp

    import robusthmc.blackjax as rb
    from robusthmc import Guard

    guard = Guard(on_nonfinite="raise")
    chains = 2 if cell.method == "vmapped chains" else None
    start = {"x": jnp.zeros(()) if chains is None else jnp.zeros(chains)}
    region = {"initialization": "everywhere", "warmup": "beyond", "sampling": "nowhere"}[cell.phase]

    def sample(logdensity):
        algorithm = rb.nuts(logdensity, 0.8, jnp.ones(1), guard=guard)
        state = algorithm.init(start) if chains is None else jax.vmap(algorithm.init)(start)
        step = algorithm.step if chains is None else jax.vmap(algorithm.step)

        def one_step(state, key):
            state, info = step(key, state)
            return state, (state, info)

        keys = jax.random.split(jax.random.key(1), 60 if chains is None else (60, chains))
        return jax.jit(lambda s: jax.lax.scan(one_step, s, keys)[1])(state)

    def grouped(positions):  # (draws[, chains]) -> (chains, draws)
        x = np.asarray(positions["x"])
        return {"x": x[None] if chains is None else x.T}

    reference = grouped(sample(blackjax_logdensity(cell.fault, REGIONS["nowhere"]))[0].position)
    USER_BUG["on"] = cell.fault == "user exception"
    try:
        logdensity = blackjax_logdensity(cell.fault, REGIONS[region])
        if cell.phase == "warmup":
            one = {"x": jnp.zeros(())}
            rb.window_adaptation(rb.nuts, logdensity, guard=guard).run(jax.random.key(0), one, 60)
            states, infos = sample(blackjax_logdensity(cell.fault, REGIONS["nowhere"]))
        else:
            if cell.phase == "sampling":
                logdensity = blackjax_logdensity(cell.fault, REGIONS["beyond"])
            states, infos = sample(logdensity)
        rb.settle(states, infos, guard, logdensity_fn=logdensity, chain_axis=None if chains is None else 1)
        error, samples = None, grouped(states.position)
    except BaseException as caught:  # what the cell raised is its outcome
        error, samples = caught, {}
        kept = getattr(caught, "samples", {}).get("position")
        if kept is not None:  # the draws of the chain that stopped, before it stopped
            samples = {"x": np.asarray(kept["x"])[None]}
            if chains is not None:
                chain = caught.diagnosis.chain
                reference = {"x": reference["x"][chain : chain + 1]}
    finally:
        USER_BUG["on"] = False
    return Outcome(error, samples, reference)


def run(cell: Cell) -> Outcome:
    return {"numpyro": run_numpyro, "pyro": run_pyro, "blackjax": run_blackjax}[cell.backend](cell)


def backend_tests(backend: str) -> tuple[Callable, Callable]:
    """The two pytest tests of one backend's cells (each backend's run in a process of its own)."""
    import pytest

    chosen = [cell for cell in cells() if cell.backend == backend]

    def test_the_matrix_has_its_cells():
        assert len(cells()) >= 90 and len(chosen) >= 28

    @pytest.mark.timeout(120)
    @pytest.mark.parametrize("cell", chosen, ids=lambda cell: f"{cell.method}-{cell.phase}-{cell.fault}")
    def test_cell(cell):
        assert matches(cell, run(cell)) == ""

    return test_the_matrix_has_its_cells, test_cell


if __name__ == "__main__":
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    backend = sys.argv[1] if len(sys.argv) > 1 else ""
    with tempfile.TemporaryDirectory() as directory, persistent_compilation_cache(directory):
        print(f"{'backend':8} {'chains':17} {'phase':15} {'fault':20} {'expected':40} as expected")
        for cell in cells():
            if cell.backend.startswith(backend):
                problem = matches(cell, run(cell))
                print(
                    f"{cell.backend:8} {cell.method:17} {cell.phase:15} {cell.fault:20} {cell.expected:40} "
                    f"{'yes' if not problem else 'NO: ' + problem}",
                    flush=True,
                )
