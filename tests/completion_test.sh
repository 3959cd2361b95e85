#!/usr/bin/env bash
# The bash completion (tools/completion/shmstate.bash.in, as built), sourced
# into this bash and asked as bash asks it: COMP_LINE, COMP_POINT, COMP_WORDS
# split at blanks and at ':' and '=' (COMP_WORDBREAKS), COMP_CWORD. Needs no
# bash-completion package (the completion does not use it).
# Usage: completion_test.sh COMPLETION SHMSTATE
set -uo pipefail
completion=$1
prog=$2
failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

# Sourced inside a function, as bash-completion's loader (_completion_loader)
# does: its tables must still be there afterwards (declare -g).
load() {
  # shellcheck source=/dev/null
  source "$completion"
}
load || { echo "FAIL: sourcing $completion" >&2; exit 1; }
complete -p shmstate >/dev/null 2>&1 || { echo "FAIL: no 'complete ... shmstate' after sourcing" >&2; exit 1; }

# comp TEXT: the sorted completions of "shmstate TEXT" with the cursor at its end.
comp() {
  local line="$prog $1" w
  local -a blank_split
  COMP_LINE=$line
  COMP_POINT=${#line}
  COMP_WORDS=()
  read -ra blank_split <<<"$line"
  for w in "${blank_split[@]}"; do
    while [[ $w =~ ^([^:=]*)([:=])(.*)$ ]]; do
      [[ -n ${BASH_REMATCH[1]} ]] && COMP_WORDS+=("${BASH_REMATCH[1]}")
      COMP_WORDS+=("${BASH_REMATCH[2]}")
      w=${BASH_REMATCH[3]}
    done
    [[ -n $w ]] && COMP_WORDS+=("$w")
  done
  [[ $line == *" " ]] && COMP_WORDS+=("")
  COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
  COMPREPLY=()
  _shmstate shmstate "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
  printf '%s\n' "${COMPREPLY[@]}" | sort | tr '\n' ' ' | sed 's/ $//'
}

# expect TEXT WANT: comp TEXT gives exactly WANT (sorted, space-separated).
expect() {
  local got
  got=$(comp "$1")
  [ "$got" = "$2" ] || fail "completing 'shmstate $1': got '$got', want '$2'"
}

# expect_has TEXT WORD: comp TEXT offers WORD (among others).
expect_has() {
  local got
  got=$(comp "$1")
  [[ " $got " == *" $2 "* ]] || fail "completing 'shmstate $1': '$2' not in '$got'"
}

# Commands: exactly those of `shmstate --help`.
commands=$("$prog" --help | sed -n '/^commands:$/,/^$/s/^  \([a-z][a-z-]*\) .*/\1/p' | sort | tr '\n' ' ' | sed 's/ $//')
[ -n "$commands" ] || fail "no commands in shmstate --help"
expect "" "$commands"
expect "sn" "snapshot"
expect "-" "--help --version -V"
expect "frobnicate " ""

# Segment names: only shmstate segments of /dev/shm, not other programs' files.
p="cmpl-$$"
work=$(mktemp -d "${TMPDIR:-/tmp}/shmstate-completion.XXXXXX")
cleanup() {
  "$prog" rm "$p-a" 2>/dev/null
  "$prog" rm "$p-b" 2>/dev/null
  rm -f "/dev/shm/$p-other" "/dev/shm/$p-empty"
  rm -rf "$work"
}
trap cleanup EXIT
"$prog" create "$p-a" --size 64K && "$prog" create "$p-b" --size 64K || { echo "FAIL: creating segments" >&2; exit 1; }
echo "not a segment at all" >"/dev/shm/$p-other"
: >"/dev/shm/$p-empty"
expect "get $p-" "$p-a $p-b"
expect "dump --json $p-a" "$p-a"
expect "rm $p-" "$p-a $p-b"
expect "create $p-" ""  # a new name: nothing to offer

# Object names, from the segment; one with ':' (a COMP_WORDBREAKS character).
"$prog" new "$p-a" int64 alpha && "$prog" new "$p-a" int64 beta:1 &&
  "$prog" new "$p-a" atom gamma --init '{"text": "two\nlines", "list": [1, 2, 3]}' ||
  { echo "FAIL: creating objects" >&2; exit 1; }
expect "get $p-a " "alpha beta:1 gamma"
expect "set $p-a b" "beta:1"
expect "get $p-a beta:" "1"  # bash replaces the piece after ':' only
expect "swap $p-a g" "gamma"
expect "get $p-b " ""
expect "get $p-a alpha " ""  # no third argument

# Kinds: those `new --help` lists.
kinds=$("$prog" new --help | sed -n 's/^KIND is one of: \(.*\)\.$/\1/p' | tr -d ',' | tr ' ' '\n' | sort | tr '\n' ' ' | sed 's/ $//')
[ -n "$kinds" ] || fail "no kinds in shmstate new --help"
expect "new $p-a " "$kinds"
expect "new $p-a int64 " ""

# Options, and their values are not arguments.
expect "create x --" "--help --max-objects --mode --size"
expect "list --" "--help --json"
expect "create x --size " ""
expect "create x --size=6" ""
expect_has "new $p-a int64 n --" "--init"
for o in $("$prog" new --help | sed -n '/^Options of some kinds:/,/^$/s/^  \(--[a-z-]*\).*/\1/p'); do
  expect_has "new $p-a some_kind n --" "$o"  # the kinds' own options, as new --help lists them
done
cd "$work" || exit 1
: >snap.json
expect "restore --size 1M new-seg " "snap.json"     # 1M is --size's value, not SEG
expect "restore --size=1M new-seg sn" "snap.json"
expect "snapshot $p-a s" "snap.json"

# Words, then `--` and a command to run.
expect "store " "get update"
expect "store get " "snap.json"
expect "swap $p-a alpha " "--"
expect_has "swap $p-a alpha -- ech" "echo"
expect_has "store update snap.json -- ech" "echo"
expect "swap $p-a alpha -- echo sn" "snap.json"

if [ "$failures" -ne 0 ]; then
  echo "$failures failure(s)" >&2
  exit 1
fi
echo "ok: commands, options, segments (shmstate ones only), objects (also with ':'), kinds, files and commands after --"
