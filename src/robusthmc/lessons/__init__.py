"""The two lessons of docs/lessons.md as runnable code.

Nothing here is needed to sample: it is what the command line, the tests, the
benchmarks and the notebooks run to show the failures robusthmc fixes.

- :mod:`robusthmc.lessons.data`: the example data and exact references (NumPy and SciPy only);
- :mod:`robusthmc.lessons.numpyro`, :mod:`robusthmc.lessons.pyro`: the example models
  (the Turing.jl model, a float32 truncated regression, eight schools, a logistic regression);
- :mod:`robusthmc.lessons.gpytorch`: GPyTorch's fully Bayesian GP recipe (lesson 2);
- :mod:`robusthmc.lessons.repro`: the cases ``robusthmc repro`` runs, each in a child
  process under a watchdog, and the table it prints.
"""
