#!/usr/bin/env bash
# Runs the tests that exercise TRL against every TRL release dmpo-trl supports (`make test-trl`).
#
# TRL_VERSIONS below is the one list of tested releases; setup.cfg pins `trl` to the range they span. Each release is
# installed (pure Python, --no-deps, from PyPI) into its own folder .cache/trl-<version> and put first on PYTHONPATH,
# so the environment's own TRL is left untouched. One line per release, then exit status 1 if any failed.
#
#   .ci/test_trl.sh                               # every supported release
#   TRL_VERSIONS="1.15.0 1.16.0" .ci/test_trl.sh  # try other releases (e.g. before widening the pin)
#   PYTHON=/path/to/python .ci/test_trl.sh        # whose packages (torch, transformers...) to use; default .venv
set -uo pipefail
cd "$(dirname "$0")/.."

TRL_VERSIONS="${TRL_VERSIONS:-1.16.0}"
# Every test file that runs TRL code: the trainer, prefix sharing, the collator, the losses, (Q)LoRA, the scoring
# (TRL's tokenization), model loading (TRL's ModelConfig and config helpers), the recipe (TrlParser, training), the
# architecture matrix (K=1 against TRL's DPOTrainer), TRL's options and the host-copy count against TRL's step; and
# the docstring examples of the scoring, model-loading and recipe modules (collected by tests/conftest.py).
TRL_TESTS="tests/unit/test_trainer.py tests/unit/test_sharing.py tests/unit/test_collator.py tests/unit/test_losses.py
tests/unit/test_qlora.py tests/unit/test_evaluation.py tests/unit/test_models.py tests/integration/test_recipe.py
tests/unit/test_architectures.py tests/unit/test_trl_options.py tests/unit/test_host_syncs.py dmpo_trl/evaluation.py
dmpo_trl/scoring.py dmpo_trl/models.py dmpo_trl/recipe.py dmpo_trl/recipe_cli.py"
# The project's venv (what `make install` builds) unless PYTHON says otherwise
if [ -z "${PYTHON:-}" ]; then
    PYTHON=python3
    [ -x .venv/bin/python ] && PYTHON=.venv/bin/python
fi
export HF_HUB_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false

mkdir -p .cache
failed=0
for version in $TRL_VERSIONS; do
    target=".cache/trl-$version"
    log=".cache/trl-$version.log"
    if [ ! -d "$target/trl-$version.dist-info" ]; then
        rm -rf "$target"
        if ! "$PYTHON" -m pip install -q --disable-pip-version-check --no-deps --target "$target" "trl==$version" \
            >"$log" 2>&1; then
            echo "trl $version: FAIL (pip install, see $log)"
            failed=1
            continue
        fi
    fi
    path="$PWD/$target:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    # trl must come from $target, not from the environment (a stale folder or a wrong path would test the wrong one)
    if ! PYTHONPATH="$path" "$PYTHON" -c "
import sys, trl
if trl.__version__ != '$version' or not trl.__file__.startswith('$PWD/$target/'):
    sys.exit(f'imported trl {trl.__version__} from {trl.__file__}')
" >"$log" 2>&1; then
        echo "trl $version: FAIL ($(tail -n 1 "$log"))"
        failed=1
        continue
    fi
    # shellcheck disable=SC2086  # TRL_TESTS is a list of paths
    PYTHONPATH="$path" "$PYTHON" -m pytest -q -x -p no:cacheprovider $TRL_TESTS >"$log" 2>&1
    status=$?
    summary=$(grep -E '^=* ?[0-9]+ (passed|failed|error)' "$log" | tail -n 1 | sed -E 's/^=+ | =+$//g')
    if [ "$status" -eq 0 ]; then
        echo "trl $version: pass ($summary)"
    else
        first_error=$(grep -m 1 -E '^E ' "$log" | sed -E 's/^E +//' | cut -c 1-150)
        echo "trl $version: FAIL (${summary:-pytest exit $status}; first error: ${first_error:-see log}; log: $log)"
        failed=1
    fi
done
exit "$failed"
