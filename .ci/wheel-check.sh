#!/usr/bin/env bash
# A user's install, not a clone's: build the wheel, install it without -e into a fresh virtual environment, and
# from an empty directory elsewhere run the README's main job at a tiny size and a shipped study's dry run.
# The environment borrows the already-installed dependencies (torch is several GB) through a plain path entry,
# so the editable install's import hook in the same site-packages is never loaded and cannot mask the wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/optuna-nas-wheel.XXXXXX)
trap 'rm -rf "$work"' EXIT

python -m pip wheel --no-deps --no-build-isolation -q -w "$work/dist" .
wheel=$(ls "$work"/dist/optuna_nas-*.whl)
shipped=$(cd optuna_nas && ls spaces/*.yaml studies/*.yaml | sort)
packed=$(python -c "import sys, zipfile; print('\n'.join(sorted(n.removeprefix('optuna_nas/') for n in \
zipfile.ZipFile(sys.argv[1]).namelist() if n.endswith('.yaml'))))" "$wheel")
if [[ "$shipped" != "$packed" ]]; then
    echo "wheel-check: the wheel's YAML files differ from optuna_nas/spaces and optuna_nas/studies" >&2
    diff <(echo "$shipped") <(echo "$packed") >&2 || true
    exit 1
fi

python -m venv "$work/venv"
venv_site=$("$work/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
# every site-packages directory this Python imports from (a system one, a virtual environment's, ...)
python -c "import sys; print('\n'.join(p for p in sys.path if p.endswith(('site-packages', 'dist-packages'))))" \
    > "$venv_site/borrowed-dependencies.pth"
"$work/venv/bin/python" -m pip install -q --no-deps --no-index "$wheel"

mkdir "$work/elsewhere"
cd "$work/elsewhere"
nas="$work/venv/bin/optuna-nas"
"$work/venv/bin/python" - "$venv_site" <<'EOF'
import sys
import optuna_nas
assert optuna_nas.__file__.startswith(sys.argv[1]), f"optuna_nas imported from {optuna_nas.__file__}, not the wheel"
EOF
"$nas" --version
"$nas" info --space a_darts | tee info.txt
grep -q "9.3e+29 architectures" info.txt
"$nas" run a_darts_table2 --dry-run --storage "sqlite:///$work/elsewhere/never.db" | tee dry-run.txt
grep -q "42 trials (14 configurations x 3 seeds)" dry-run.txt
test ! -e never.db
"$nas" search darts --dataset digits --activation-mode factorized --epochs 1 --channels 4 --layers 3 \
    --storage "sqlite:///$work/elsewhere/wheel.db" --study-name a-darts-digits --quiet | tee search.txt
grep -q "trial 0: search val_acc" search.txt
echo "wheel-check: the installed wheel finds every shipped space and study from $work/elsewhere"
