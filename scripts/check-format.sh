#!/usr/bin/env bash
# Fails (exit 1) when a tracked C++ file (*.h, *.cc) is not formatted as
# .clang-format says; lists the files. Fix with:
#   clang-format -i $(git ls-files '*.h' '*.cc')
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

if ! command -v clang-format >/dev/null 2>&1; then
  scripts/install-deps.sh
fi

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files -- '*.h' '*.cc')
else
  mapfile -t files < <(find . -path ./build -prune -o -type f \
    \( -name '*.h' -o -name '*.cc' \) -print | sed 's|^\./||' | sort)
fi
if ((${#files[@]} == 0)); then
  echo "check-format: no C++ files to check"
  exit 0
fi

bad=()
for f in "${files[@]}"; do
  [[ -f "$f" ]] || continue  # deleted in the work tree, not yet in git
  clang-format --dry-run --Werror --style=file "$f" >/dev/null 2>&1 || bad+=("$f")
done
if ((${#bad[@]})); then
  echo "check-format: ${#bad[@]} of ${#files[@]} files need clang-format:" >&2
  printf '  %s\n' "${bad[@]}" >&2
  echo "check-format: fix with: clang-format -i ${bad[*]}" >&2
  exit 1
fi
echo "check-format: ${#files[@]} files formatted ($(clang-format --version))"
