#!/bin/bash
# The bash completion of ckpt, sourced as bash-completion would, answers a
# few command lines as a user would see them: commands, options (from the
# --help texts), pids, directories.
#   test-completion.sh COMPLETION_FILE CKPT
set -u
COMPLETION=$1
PATH=$(cd "$(dirname "$2")" && pwd):$PATH

bc=
for f in /usr/share/bash-completion/bash_completion /etc/bash_completion; do
	[ -r "$f" ] && { bc=$f; break; }
done
[ -n "$bc" ] || { echo "SKIP: bash-completion is not installed"; exit 77; }
source "$bc"
source "$COMPLETION"
[ "$(complete -p ckpt 2>/dev/null)" = "complete -F _ckpt ckpt" ] ||
	{ echo "FAIL: the completion does not register _ckpt for ckpt"; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/snap" "$tmp/snap2"
touch "$tmp/sfile"
fail=0

# complete_line "LINE": COMPREPLY for the command line LINE (shell words,
# '' for an empty one; the last one is being completed), as bash would
# fill COMP_WORDS and COMP_CWORD.
complete_line() {
	eval "COMP_WORDS=($1)"
	COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
	COMP_LINE="${COMP_WORDS[*]}"
	COMP_POINT=${#COMP_LINE}
	COMPREPLY=()
	_ckpt ckpt "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
	printf '%s\n' "${COMPREPLY[@]}" | sort > "$tmp/got"
}
# has "LINE" WORD...: each WORD is among the completions of LINE.
has() {
	local line=$1 w
	shift
	complete_line "$line"
	for w; do
		grep -qxF -- "$w" "$tmp/got" || { echo "FAIL: '$line' does not offer '$w': $(tr '\n' ' ' < "$tmp/got")"; fail=1; }
	done
}
# only "LINE" WORD...: the completions of LINE are exactly WORD...
only() {
	local line=$1
	shift
	complete_line "$line"
	if [ "$(printf '%s\n' "$@" | sort)" != "$(cat "$tmp/got")" ]; then
		echo "FAIL: '$line' offers '$(tr '\n' ' ' < "$tmp/got")', not '$*'"
		fail=1
	fi
}

has "ckpt ''" dump restore checkpoint ls status verify store bench version
only "ckpt du" dump
has "ckpt dump --" --kill --stop --help
has "ckpt restore --" --no-verify --pid-wait --accept-changed-files
has "ckpt checkpoint --" --kill --stop --every --keep --mount
only "ckpt verify --q" --quick
only "ckpt store ''" ls rm gc fsck stats
only "ckpt store --store $tmp ''" ls rm gc fsck stats
has "ckpt bench engine --" --size --procs --dir --keep --kill
has "ckpt dump ''" $$
has "ckpt checkpoint ''" $$
has "ckpt status ''" $$
only "ckpt dump $$ $tmp/s" "$tmp/snap" "$tmp/snap2"
only "ckpt restore $tmp/s" "$tmp/snap" "$tmp/snap2"
only "ckpt verify --quick $tmp/snap2" "$tmp/snap2"
only "ckpt checkpoint --mount $tmp/s" "$tmp/snap" "$tmp/snap2"
has "ckpt checkpoint --every ''" off

[ "$fail" = 0 ] && echo "ok: ckpt completes commands, options, pids and directories"
exit "$fail"
