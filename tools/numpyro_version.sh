#!/usr/bin/env bash
# Run NumPyro tests against one numpyro release, in a venv of its own.
#   bash tools/numpyro_version.sh 0.20.0 tests/numpyro/test_failures.py ...
# The venv (.venv-numpyro-VERSION) is kept for the next run.  numpyro 0.20
# does not import with jax 0.10 (jax.extend dropped xla_pmap_p), so its venv
# takes the last jax before that.
set -euo pipefail
version=$1
shift
venv=.venv-numpyro-$version
case $version in
    0.20.*) jax="jax<0.10 jaxlib<0.10" ;;
    *) jax="" ;;
esac
if [ ! -f "$venv/.installed" ]; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    # shellcheck disable=SC2086  # $jax is a list of requirements
    "$venv/bin/python" -m pip install -q --constraint constraints.txt "numpyro==$version" $jax -e ".[arviz,test]"
    touch "$venv/.installed"
fi
"$venv/bin/python" -c "import numpyro, jax; print('numpyro', numpyro.__version__, 'jax', jax.__version__)"
for file in "$@"; do
    "$venv/bin/python" -m pytest -q -p no:cacheprovider "$file"
done
