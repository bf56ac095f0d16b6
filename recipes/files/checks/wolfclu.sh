#!/bin/sh
# wolfCLU: the `wolfssl` command hashes a file, in both of its spellings, and must agree with
# sha256sum; it reports the pinned version and links the pinned wolfSSL. One PASS/FAIL line per
# check, like the C check programs; exit status 1 if any failed. quick-validate runs it with
# EXPECT_WOLFCLU and EXPECT_WOLFSSL set.
set -u
failed=0
check() {  # check OK NAME DETAIL
    if [ "$1" = 0 ]; then printf 'PASS  %-22s %s\n' "$2" "$3"; else printf 'FAIL  %-22s %s\n' "$2" "$3"; failed=1; fi
}

f=$(mktemp "${TMPDIR:-/tmp}/wolfclu-check.XXXXXX") || { check 1 "wolfCLU sha256" "mktemp failed"; exit 1; }
trap 'rm -f "$f"' EXIT
i=0
while [ $i -lt 300 ]; do echo "quick-validate line $i: wolfCLU hashes this file"; i=$((i + 1)); done > "$f"
want=$(sha256sum "$f" | cut -d' ' -f1)

got=$(wolfssl -hash sha256 -in "$f" 2>&1 | tr -d '[:space:]')
[ "$got" = "$want" ]; check $? "wolfCLU sha256" "wolfssl -hash sha256 -in FILE = sha256sum = ${got:-nothing}"
got=$(wolfssl sha256 "$f" 2>&1 | tr -d '[:space:]')
[ "$got" = "$want" ]; check $? "wolfCLU sha256 (short)" "wolfssl sha256 FILE: ${got:-nothing} (sha256sum $want)"

out=$(wolfssl -v 2>&1)
version=$(printf '%s\n' "$out" | sed -n 's/.*using version \([0-9][0-9.]*\) of the wolfssl.*/\1/p' | head -n1)
[ -n "${EXPECT_WOLFCLU:-}" ] && [ "$version" = "$EXPECT_WOLFCLU" ]
check $? "wolfCLU version" "${version:-unknown} (expected ${EXPECT_WOLFCLU:-nothing: EXPECT_WOLFCLU is not set})"
linked=$(printf '%s\n' "$out" | sed -n 's/.*Linked to wolfSSL version \([0-9][0-9.]*\).*/\1/p' | head -n1)
[ -n "${EXPECT_WOLFSSL:-}" ] && [ "$linked" = "$EXPECT_WOLFSSL" ]
check $? "wolfCLU links wolfSSL" "${linked:-unknown} (expected ${EXPECT_WOLFSSL:-nothing: EXPECT_WOLFSSL is not set})"
exit $failed
