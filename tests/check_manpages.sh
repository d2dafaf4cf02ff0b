#!/bin/bash
# The man pages (man/) and the bash completion against the programs, so
# that they cannot drift apart (make doc-check, part of make check):
#
#  - every long option a program's --help lists (a line "  --name ..." or
#    "  -x, --name ...") is an item (.TP) under OPTIONS in its page, and
#    every option an item there names is in --help: nothing missing,
#    nothing stale;
#  - every remusctl verb of its --help is an item of remusctl(8) and a case
#    of the completion, and the other way round;
#  - every [section] key the config parser accepts (the key table,
#    PAIR_CONFIG_KEYS in common/config.h, through the preprocessor) is an
#    item under its section in remus.conf(5), and every item there is a key;
#  - every page renders without a warning (groff -ww);
#  - every program prints "PROG VERSION" for --version, also with a config
#    file that cannot be read, and exits 0.
#
#   tests/check_manpages.sh [BINDIR]     (default build/bin; from the top
#                                         directory or anywhere)
# Environment: CC (the preprocessor, default cc), REMUS_VERSION (the
# version expected; default: not compared, only its form). Exit status 0
# when all agree, 1 with one line per difference.
set -u
cd "$(dirname "$0")/.." || exit 2
BINDIR=${1:-build/bin}
CC=${CC:-cc}
MAN=man
COMPLETION=configs/bash-completion/remus
failed=0

fail() {
	echo "check_manpages: $*" >&2
	failed=1
}

# A page's roff source as text: \- as -, without font and other zero-width
# escapes.
plain() {
	sed -e 's/\\-/-/g' -e 's/\\f[BIRP]//g' -e 's/\\%//g' -e 's/\\&//g' "$1"
}

# The long options a --help text lists, one per line, without the dashes.
help_options() {
	sed -nE 's/^  (-[a-zA-Z], )?--([a-z0-9][a-z0-9-]*).*/\2/p' | sort -u
}

# The first word of each .TP item of a page (its tag line), one per line,
# with the section (.SH/.SS title) it is under: "SECTION<TAB>WORD".
items() {
	plain "$1" | awk '
		/^\.S[HS] / { sec = $0; sub(/^\.S[HS] +/, "", sec); gsub(/"/, "", sec); next }
		tp && /^\./ && !/^\.(B|I|BI|BR|IB|IR|RB|RI) / { tp = 0 }
		tp { line = $0; sub(/^\.[A-Z]+ +/, "", line); gsub(/"/, "", line);
		     split(line, w, /[ =,]/); print sec "\t" w[1]; tp = 0; next }
		/^\.TP/ { tp = 1 }'
}

# The long options an OPTIONS item of the page names in its tag line
# (".BR \-v , \-\-verbose" names --verbose), one per line, without dashes.
option_items() {
	plain "$1" | awk '
		/^\.S[HS] / { in_opts = ($0 ~ /^\.SH "?OPTIONS"?$/); next }
		tp { while (match($0, /--[a-z0-9][a-z0-9-]*/)) {
			print substr($0, RSTART + 2, RLENGTH - 2); $0 = substr($0, RSTART + RLENGTH) }
		     tp = 0; next }
		in_opts && /^\.TP/ { tp = 1 }' | sort -u
}

check_program() {
	local prog=$1 page=$2 help opt documented
	if [ ! -x "$BINDIR/$prog" ]; then
		fail "$BINDIR/$prog: not built (make all)"
		return
	fi
	help=$("$BINDIR/$prog" --help) || fail "$prog --help: exit status $?"
	documented=$(option_items "$page")
	for opt in $(help_options <<< "$help"); do
		grep -qx -- "$opt" <<< "$documented" ||
			fail "$page: option --$opt (in $prog --help) is not an item under OPTIONS"
	done
	for opt in $documented; do
		help_options <<< "$help" | grep -qx -- "$opt" ||
			fail "$page: option --$opt is an item under OPTIONS, but $prog --help has no such option"
	done
}

check_version() {
	local prog=$1 out
	out=$("$BINDIR/$prog" --version 2>&1) || fail "$prog --version: exit status $?"
	if [ -n "${REMUS_VERSION:-}" ]; then
		[ "$out" = "$prog $REMUS_VERSION" ] ||
			fail "$prog --version: '$out', expected '$prog $REMUS_VERSION'"
	else
		[[ "$out" =~ ^$prog\ [0-9][0-9A-Za-z.+~-]*$ ]] ||
			fail "$prog --version: '$out' is not '$prog VERSION'"
	fi
	if [ "$prog" != remusctl ]; then
		out=$("$BINDIR/$prog" --config /nonexistent/remus.conf --version 2>&1) ||
			fail "$prog --config /nonexistent/remus.conf --version: exit status $?"
		[[ "$out" == "$prog "* ]] ||
			fail "$prog --version with an unreadable --config printed '$out'"
	fi
}

# remusctl: its verbs, from the "Verbs:" part of --help.
remusctl_verbs() {
	"$BINDIR/remusctl" --help | awk '/^Verbs:/ { on = 1; next } on && /^$/ { exit }
		on { print $1 }'
}

# The words of the completion's case patterns made of plain words
# ("status | pause)"), one per line.
completion_cases() {
	grep -E '^[[:space:]]*[a-z][a-z |-]*\)$' "$COMPLETION" | tr -d ' )' | tr '|' '\n'
}

check_remusctl_verbs() {
	local page=$MAN/remusctl.8 verb verbs
	verbs=$(remusctl_verbs)
	[ -n "$verbs" ] || fail "remusctl --help: no verbs found"
	for verb in $verbs; do
		items "$page" | grep -qxF "$(printf 'VERBS\t%s' "$verb")" ||
			fail "$page: verb '$verb' (in remusctl --help) is not an item under VERBS"
		completion_cases | grep -qx -- "$verb" ||
			fail "$COMPLETION: verb '$verb' (in remusctl --help) has no case"
	done
	for verb in $(items "$page" | awk -F'\t' '$1 == "VERBS" { print $2 }'); do
		grep -qx -- "$verb" <<< "$verbs" ||
			fail "$page: verb '$verb' is an item, but remusctl --help has no such verb"
	done
}

# The parser's keys, "section key" per line, from its key table.
parser_keys() {
	printf '#include "config.h"\n#define KEY_OF(id, sec, key, ...) KEY sec key\nPAIR_CONFIG_KEYS(KEY_OF)\n' |
		"$CC" -E -P -D_GNU_SOURCE -Icommon -x c - |
		grep -oE 'KEY "[a-z-]+" "[a-z-]+"' | tr -d '"' | awk '{ print $2, $3 }' | sort -u
}

check_config_keys() {
	local page=$MAN/remus.conf.5 keys documented
	keys=$(parser_keys)
	if [ "$(wc -l <<< "$keys")" -lt 20 ]; then
		fail "common/config.h: found only $(wc -l <<< "$keys") keys (is $CC there?)"
		return
	fi
	documented=$(items "$page" | awk -F'\t' '$1 ~ /^\[[a-z-]+\]$/ {
		sec = $1; gsub(/[][]/, "", sec); print sec, $2 }' | sort -u)
	while read -r key; do
		grep -qxF "$key" <<< "$documented" ||
			fail "$page: key '${key#* }' of [${key% *}] (in common/config.h) is missing"
	done <<< "$keys"
	while read -r key; do
		grep -qxF "$key" <<< "$keys" ||
			fail "$page: key '${key#* }' under [${key% *}] is not a key of the parser"
	done <<< "$documented"
}

check_rendering() {
	local page out
	for page in "$MAN"/*.[1-8]; do
		out=$(groff -ww -z -man -Tutf8 "$page" 2>&1)
		[ -z "$out" ] || fail "$page: groff warns: $out"
		head -20 "$page" | grep -qE "^\.TH $(basename "$page" | sed -E 's/\.([0-9])$/ \1/' |
			tr '[:lower:]' '[:upper:]' | sed 's/\./\\./g') " ||
			fail "$page: its .TH does not name it"
	done
}

# The daemons' options come from their --help at completion time; the
# completion must still name the daemons and the option values it offers.
check_completion() {
	local prog
	for prog in remus-replicator remus-agent remusctl; do
		grep -q -- "$prog" "$COMPLETION" || fail "$COMPLETION: nothing for $prog"
	done
	bash -n "$COMPLETION" || fail "$COMPLETION: bash syntax error"
}

if ! command -v groff > /dev/null; then
	echo "check_manpages: groff is missing (apt-get install groff-base)" >&2
	exit 1
fi
check_program remus-replicator "$MAN/remus-replicator.8"
check_program remus-agent "$MAN/remus-agent.8"
check_program remusctl "$MAN/remusctl.8"
for p in remus-replicator remus-agent remusctl; do
	check_version "$p"
done
check_remusctl_verbs
check_config_keys
check_rendering
check_completion
if [ "$failed" = 0 ]; then
	echo "doc-check: man pages, completion and --version agree with the programs"
fi
exit "$failed"
