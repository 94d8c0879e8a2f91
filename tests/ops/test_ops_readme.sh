#!/usr/bin/env bash
# Issue 8 item 11: the README is self-contained: no pointer outside the
# repository, every document it links exists, the architecture page exists.
. "$(dirname "$0")/lib.sh"
ops_init readme
src=${VERITY_SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
readme=$src/README.md
check "README does not point to ../shared" eval '! grep -q "\.\./shared" "$readme"'
check "README does not send users to the issues command" eval '! grep -qi "issues all\|(\`issues" "$readme"'
check "docs/ARCHITECTURE.md exists and is linked" \
    eval 'test -s "$src/docs/ARCHITECTURE.md" && grep -q "docs/ARCHITECTURE.md" "$readme"'
missing=""
for f in $(grep -oE '\]\((docs/[A-Za-z_]+\.md)\)' "$readme" | sed -E 's/.*\((.*)\)/\1/' | sort -u); do
    [ -e "$src/$f" ] || missing="$missing $f"
done
check "every linked document exists (missing:${missing:- none})" test -z "$missing"
check "docs/ARCHITECTURE.md has no pointer outside the repository" \
    eval '! grep -q "\.\./shared" "$src/docs/ARCHITECTURE.md"'
ops_done
