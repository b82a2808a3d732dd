#!/bin/sh
# The manual pages match the --help texts: every command and option that
# `ckpt --help`, each `ckpt COMMAND --help` (and each sub-command's) and
# `ckptfs --help` name appears in the page's scdoc source, so that a new
# option without a man line fails here. Where the pages were built and
# man(1) is installed, they also render without a warning.
#   test-man.sh CKPT CKPTFS MAN_SOURCE_DIR [MAN_BUILD_DIR]
set -eu
CKPT=$1 CKPTFS=$2 SRC=$3 BUILT=${4:-}
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The page as text, without scdoc's bold markers: "*ckpt dump* [*--kill*]"
# reads "ckpt dump [--kill]".
tr -d '*' < "$SRC/ckpt.1.scd" > "$tmp/ckpt.1"
tr -d '*' < "$SRC/ckptfs.8.scd" > "$tmp/ckptfs.8"

# The sub-commands a help text lists under "Commands:" or "Benchmarks:".
subcommands() {
	awk '/^(Commands|Benchmarks):$/ { on = 1; next } on && /^$/ { exit } on && /^  [a-z]/ { print $1 }'
}
# The options a help text names: --long, -x, and "-o name=" / "-o name".
options() {
	grep -oE -- '(^|[][ ,|(])--?[A-Za-z][A-Za-z-]*' | sed -E 's/^[][ ,|(]//' | sort -u
}
mount_options() {
	grep -oE -- '-o [a-z_]+=?' | sort -u
}
# need PAGE WORD FROM: WORD must stand in PAGE as a word of its own (so
# "-q" is not found inside "--quick"); "-o store=" may run on into _DIR_.
need() {
	case $2 in *=) tail= ;; *) tail='([^[:alnum:]-]|$)' ;; esac
	grep -qE -- "(^|[^[:alnum:]-])$2$tail" "$tmp/$1" ||
		{ echo "FAIL: $1 does not mention '$2' (named by '$3')"; fail=1; }
}
# check PAGE FROM ARGS...: runs ARGS (a --help) and needs what it names.
check() {
	page=$1 from=$2
	shift 2
	"$@" > "$tmp/help"
	for o in $(options < "$tmp/help"); do need "$page" "$o" "$from"; done
	mount_options < "$tmp/help" > "$tmp/mopts"
	while IFS= read -r o; do need "$page" "$o" "$from"; done < "$tmp/mopts"
}

check ckpt.1 "ckpt --help" "$CKPT" --help
for c in $("$CKPT" --help | subcommands); do
	need ckpt.1 "ckpt $c" "ckpt --help"
	check ckpt.1 "ckpt $c --help" "$CKPT" "$c" --help
	for s in $("$CKPT" "$c" --help | subcommands); do
		need ckpt.1 "ckpt $c $s" "ckpt $c --help"
		check ckpt.1 "ckpt $c $s --help" "$CKPT" "$c" "$s" --help
	done
done
check ckptfs.8 "ckptfs --help" "$CKPTFS" --help

# A test that finds nothing to check would pass silently.
n=$("$CKPT" --help | subcommands | wc -l)
[ "$n" -ge 5 ] || { echo "FAIL: found only $n commands in 'ckpt --help'"; fail=1; }

if [ -n "$BUILT" ] && [ -f "$BUILT/ckpt.1" ] && command -v man >/dev/null; then
	for p in ckpt.1 ckptfs.8; do
		w=$(MANWIDTH=80 man --warnings -E UTF-8 -l "$BUILT/$p" 2>&1 >/dev/null)
		[ -z "$w" ] || { echo "FAIL: $p renders with warnings: $w"; fail=1; }
	done
else
	echo "note: built pages or man(1) missing: rendering not checked"
fi
[ "$fail" = 0 ] && echo "ok: every command and option of the --help texts is in ckpt.1 and ckptfs.8"
exit "$fail"
