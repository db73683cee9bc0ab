"""The model doctor: evaluate a model at many points before sampling, and say what will break.

Backend-neutral: the backends measure each term and its gradients at each
point (:class:`~robusthmc._diagnosis.PointEvaluation`); the summary, the causes
and the fixes are decided here, for both.
"""

from __future__ import annotations

import numbers
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from robusthmc import _backends as backends
from robusthmc._causes import Cause, known_causes
from robusthmc._diagnosis import PointEvaluation

__all__ = ["CheckReport", "SiteReport", "check", "choose_backend", "model_backend", "summarize"]

Backend = Literal["numpyro", "pyro"]


@dataclass(frozen=True)
class SiteReport:
    """What the doctor found at one sample site, over all points.

    Attributes
    ----------
    site : str
    distribution : str
        The distribution with its arguments at the first point.
    support : str
        Its support, and ``transform``: the map from unconstrained space (latents only).
    transform : str
    observed : bool
    nonfinite_share : float
        Share of points where the site's term or its gradient is NaN or infinite.
    latents : tuple of str
        Latents with respect to which its gradient was non-finite somewhere.
    causes : tuple of Cause
        Everything known to break HMC that showed up at some point (infinite
        arguments, scales that reach 0, float32 tail overflow, support
        mismatch), each with its fix.
    """

    site: str
    distribution: str
    support: str
    transform: str
    observed: bool
    nonfinite_share: float
    latents: tuple[str, ...]
    causes: tuple[Cause, ...]

    @property
    def problem(self) -> bool:
        """Whether anything here needs fixing."""
        return self.nonfinite_share > 0 or bool(self.causes)


@dataclass(frozen=True)
class CheckReport:
    """The doctor's report on a model: one :class:`SiteReport` per sample site."""

    model: str
    backend: Backend
    points: int
    sites: tuple[SiteReport, ...]

    @property
    def problems(self) -> tuple[SiteReport, ...]:
        """The sites that need fixing."""
        return tuple(site for site in self.sites if site.problem)

    @property
    def clean(self) -> bool:
        """Whether no site needs fixing."""
        return not self.problems

    def __str__(self) -> str:
        from robusthmc._render import render_check

        return render_check(self)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON types (``json.dumps(report.to_dict())``)."""
        return {
            "model": self.model,
            "backend": self.backend,
            "points": self.points,
            "clean": self.clean,
            "sites": [
                {
                    "site": site.site,
                    "distribution": site.distribution,
                    "support": site.support,
                    "transform": site.transform,
                    "observed": site.observed,
                    "nonfinite_share": site.nonfinite_share,
                    "latents": list(site.latents),
                    "problem": site.problem,
                    "causes": [
                        {"kind": c.kind, "argument": c.argument, "value": c.value, "fix": c.fix}
                        for c in site.causes
                    ],
                }
                for site in self.sites
            ],
        }


def summarize(
    evaluations: Sequence[PointEvaluation],
    sites: Sequence[tuple[str, str, str, bool]],
    *,
    model: str,
    backend: Backend,
) -> CheckReport:
    """Aggregate point evaluations into a report; ``sites`` is ``(name, support, transform, observed)``."""
    reports = []
    for name, support, transform, observed in sites:
        failing, latents, causes = 0, dict[str, None](), dict[tuple[str, str], Cause]()
        first_info = next((e.distributions.get(name) for e in evaluations if e.distributions.get(name)), None)
        for evaluation in evaluations:
            for problem in evaluation.problems():
                if problem.site == name:
                    failing += 1
                    latents.update(dict.fromkeys(label.split("[")[0] for label in problem.nonfinite_gradient))
                    for cause in problem.causes:
                        causes.setdefault((cause.kind, cause.argument), cause)
            info = evaluation.distributions.get(name)
            if info is not None:
                in_support = evaluation.values_in_support.get(name, True)
                observed_text = evaluation.nonfinite_observed.get(name, "")
                for cause in known_causes(
                    info,
                    value_in_support=in_support,
                    nonfinite_observed=observed_text,
                    observed_at_edge=evaluation.observed_at_edge.get(name, ""),
                ):
                    causes.setdefault((cause.kind, cause.argument), cause)
        reports.append(
            SiteReport(
                site=name,
                distribution=str(first_info) if first_info is not None else "?",
                support=support,
                transform=transform,
                observed=observed,
                nonfinite_share=failing / max(1, len(evaluations)),
                latents=tuple(latents),
                causes=tuple(causes.values()),
            )
        )
    return CheckReport(model=model, backend=backend, points=len(evaluations), sites=tuple(reports))


def model_backend(model: Callable) -> Backend | None:
    """The backend a model is written for: the one of numpyro and pyro its code refers to, else None.

    Helper functions the model calls are read too (those defined in the model's
    own module, not libraries).

    Examples
    --------
    >>> from robusthmc.lessons.pyro import turing
    >>> model_backend(turing), model_backend(len)
    ('pyro', None)
    """
    found: set[str] = set()
    seen: set[int] = set()
    functions = [model]
    while functions:
        function = functions.pop()
        code, namespace = getattr(function, "__code__", None), getattr(function, "__globals__", {})
        stack = [code] if code is not None and id(code) not in seen else []
        while stack:
            code = stack.pop()
            seen.add(id(code))
            stack.extend(const for const in code.co_consts if isinstance(const, types.CodeType))
            for name in code.co_names:
                value = namespace.get(name)
                if isinstance(value, types.ModuleType):
                    module = value.__name__
                else:
                    module = getattr(value, "__module__", None) or ""
                root = module.split(".")[0]
                if root in ("numpyro", "pyro"):
                    found.add(root)
                elif isinstance(value, types.FunctionType) and module == function.__module__:
                    functions.append(value)  # a helper of the model's own module
    return found.pop() if len(found) == 1 else None  # type: ignore[return-value]


def choose_backend(
    model: Callable, backend: Backend | None, spell: Callable[[str], str] = lambda name: f"backend={name!r}"
) -> Backend:
    """``backend``, or the one the model is written for (numpyro if none is found).

    A ``backend`` the model is not written for is a ``ValueError`` that says
    which to pass, spelled by ``spell`` (the command line says ``--backend pyro``).

    Examples
    --------
    >>> from robusthmc.lessons.pyro import turing
    >>> choose_backend(turing, None)
    'pyro'
    >>> choose_backend(turing, "numpyro")
    Traceback (most recent call last):
    ...
    ValueError: turing is a pyro model, not a numpyro one: pass backend='pyro'
    """
    written_for = model_backend(model)
    if backend is not None and written_for is not None and backend != written_for:
        name = getattr(model, "__name__", repr(model))
        raise ValueError(f"{name} is a {written_for} model, not a {backend} one: pass {spell(written_for)}")
    return backend or written_for or "numpyro"


def check(
    model: Callable,
    *args: Any,
    backend: Backend | None = None,
    points: int = 20,
    seed: int = 0,
    **kwargs: Any,
) -> CheckReport:
    """Examine a model before sampling: each site's term and gradient at ``2 * points`` points.

    Half the points are prior draws, half uniform(-2, 2) in unconstrained space
    (where Stan and both backends initialise). The report names, per site, the
    share of points where the term or its gradient is not finite and with
    respect to which latents, and every known cause with its fix.

    Parameters
    ----------
    model : callable
        A NumPyro or Pyro model.
    *args, **kwargs
        The model's arguments.
    backend : {"numpyro", "pyro"}, optional
        Default: the one the model's code refers to (:func:`model_backend`).
    points : int
        Points of each kind, at least 1.
    seed : int

    Returns
    -------
    CheckReport

    Examples
    --------
    >>> import robusthmc
    >>> from robusthmc.lessons.numpyro import turing
    >>> report = robusthmc.check(turing, points=4)
    >>> [(site.site, [c.kind for c in site.causes]) for site in report.problems]
    [('V', ['infinite_bound'])]
    """
    if isinstance(points, bool) or not isinstance(points, numbers.Integral) or points < 1:
        raise ValueError(f"points={points!r}: must be an integer of at least 1")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**32:
        raise ValueError(f"seed={seed!r}: must be an integer from 0 to 2**32 - 1")
    backend = choose_backend(model, backend)
    if backend not in ("numpyro", "pyro"):
        raise ValueError(f"backend={backend!r}: allowed values are 'numpyro', 'pyro'")
    doctor = backends.backend(backend, "_check")
    doctor.rehearse(model, args, kwargs)  # the model's own errors are the user's: they propagate
    evaluations, sites = doctor.evaluate_model(model, args, kwargs, points=int(points), seed=seed)
    name = getattr(model, "__qualname__", repr(model))
    return summarize(evaluations, sites, model=name, backend=backend)
