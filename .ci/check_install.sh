#!/usr/bin/env bash
# The install a user makes: `pip install .` (not editable, without constraints.txt) into a fresh venv. The base
# install names the extra `index` needs at once; with the search, export and int8 extras, the README's Python and
# command-line examples run as written from a folder outside the repository. Needs the repo's .venv (`make` makes
# it) to build the checkpoint, whose weights live in the repository.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
"$py" -m pip install -q "$repo" 2>&1 | grep -v "^WARNING: Location" || true
cd "$work"
if "$work/venv/bin/aio-reid" index "$repo/demo/pku_sketch/photo" --out base.index 2> base.err; then
  echo "error: aio-reid index ran without faiss installed" >&2; exit 1
fi
grep -q "pip install 'aio-reid\[search\]'" base.err || { cat base.err >&2; exit 1; }
echo "base install: aio-reid index names the search extra at once"
"$py" -m pip install -q "$repo[search,export,db,int8]" 2>&1 | grep -v "^WARNING: Location" || true
"$repo/.venv/bin/python" "$repo/scripts/build_checkpoint.py" --out "$work/checkpoint" > build.log
export AIO_REID_MODEL="$work/checkpoint" HF_HUB_OFFLINE=1
mkdir crops
cp "$repo"/demo/pku_sketch/photo/*.jpg crops/
cp "$repo/demo/pku_sketch/sketch/7.jpg" sketch.jpg
"$py" "$repo/.ci/readme_examples.py" "$repo/README.md" python > example.py
"$py" example.py
"$py" "$repo/.ci/readme_examples.py" "$repo/README.md" bash > example.sh
PATH="$work/venv/bin:$PATH" bash -euo pipefail example.sh
test -s result.png && test -s result.html
echo "README examples: ran as written from $work with the installed wheel"
