"""What a repair changed: one :class:`Repair` a site, for both backends and GPyTorch.

Which swaps are exact is the catalogue's decision
(:func:`robusthmc._causes.exact_repair`); the backends apply them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from robusthmc._causes import Cause

__all__ = ["Repair", "Repairs", "repair_site"]


@dataclass(frozen=True)
class Repair:
    """One site's distribution swapped for one that gives the same density without the failure.

    Attributes
    ----------
    site : str
        The sample site (for GPyTorch, the prior's name, e.g. ``"likelihood.noise_prior"``).
    before, after : str
        The distribution before and after, with its arguments.
    cause : str
        The kind of cause removed (:class:`robusthmc.Cause` ``kind``).
    why : str
        What the swap is and why it was needed.

    Examples
    --------
    >>> print(Repair("V", "TruncatedNormal(high=inf)", "TruncatedNormal(high=None)", "infinite_bound", "..."))
    site 'V': TruncatedNormal(high=inf) -> TruncatedNormal(high=None) (infinite_bound: ...)
    """

    site: str
    before: str
    after: str
    cause: str
    why: str

    def __str__(self) -> str:
        return f"site '{self.site}': {self.before} -> {self.after} ({self.cause}: {self.why})"

    def to_dict(self) -> dict[str, str]:
        """The repair as a dict of its fields."""
        return dataclasses.asdict(self)


class Repairs(tuple[Repair, ...]):
    """The repairs made, one line a site when printed; empty when the model needed none.

    Examples
    --------
    >>> print(Repairs())
    no repair needed
    >>> Repairs().to_dict()
    {'repairs': []}
    """

    def __str__(self) -> str:
        return "\n".join(map(str, self)) if self else "no repair needed"

    def to_dict(self) -> dict[str, Any]:
        """``{"repairs": [...]}``, each repair a dict: what ``--json`` prints."""
        return {"repairs": [repair.to_dict() for repair in self]}

    @classmethod
    def made(cls, repairs: Iterable[Repair]) -> Repairs:
        """One repair a site, in the order met (a site a loop re-runs is listed once)."""
        return cls({repair.site: repair for repair in repairs}.values())


def repair_site(
    msg: Any,
    swap: Callable[[Any], tuple[Any, Cause] | None],
    describe: Callable[[Any], str],
    made: list[Repair] | None,
) -> None:
    """Swap a sample site's distribution where ``swap`` repairs it; record the repair in ``made``.

    ``msg`` is the site's message (numpyro's or Pyro's: ``type``, ``name``,
    ``fn``); ``describe`` writes a distribution as text.
    """
    if msg["type"] != "sample":
        return
    swapped = swap(msg["fn"])
    if swapped is None:
        return
    fn, cause = swapped
    if made is not None:
        made.append(Repair(msg["name"], describe(msg["fn"]), describe(fn), cause.kind, cause.fix))
    msg["fn"] = fn
