#!/usr/bin/env bash
# Run NumPyro tests against one numpyro release, in a venv of its own.
#   bash tools/numpyro_version.sh 0.20.0 tests/numpyro/test_failures.py ...
# Installs go through the constraints in PIP_CONSTRAINT (the Makefile sets it;
# constraints.txt otherwise) less their numpyro (and, for numpyro 0.20, jax: it
# does not import with jax 0.10, which dropped jax.extend's xla_pmap_p, so its
# venv takes jax 0.9.2).  The venv (.venv-numpyro-VERSION-HASH, HASH from the
# constraints and pyproject.toml) is kept for the next run with the same ones.
set -euo pipefail
version=$1
shift
constraints=${PIP_CONSTRAINT:-constraints.txt}
case $version in
    0.20.*) pinned="numpyro|jax|jaxlib" jax="jax==0.9.2 jaxlib==0.9.2" ;;
    *) pinned="numpyro" jax="" ;;
esac
venv=.venv-numpyro-$version-$(cat "$constraints" pyproject.toml | sha1sum | cut -c1-8)
if [ ! -f "$venv/.installed" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    grep -v -i -E "^($pinned)==" "$constraints" > "$venv/constraints.txt"
    export PIP_CONSTRAINT=$PWD/$venv/constraints.txt
    "$venv/bin/python" -m pip install -q --upgrade pip
    # shellcheck disable=SC2086  # $jax is a list of requirements
    "$venv/bin/python" -m pip install -q "numpyro==$version" $jax -e ".[arviz,test]"
    touch "$venv/.installed"
fi
"$venv/bin/python" -c "import numpyro, jax; print('numpyro', numpyro.__version__, 'jax', jax.__version__)"
for file in "$@"; do
    "$venv/bin/python" -m pytest -q -p no:cacheprovider "$file"
done
