# bash completion for ckpt(1): commands, each command's options (read
# from its --help, so they never fall behind), pids where a command takes
# a process, directories where it takes a snapshot or a mount.

# The sub-commands a help text lists under "Commands:" or "Benchmarks:".
_ckpt_subcommands()
{
	"$@" --help 2>/dev/null | awk '/^(Commands|Benchmarks):$/ { on = 1; next }
		on && /^$/ { exit } on && /^  [a-z]/ { print $1 }'
}

_ckpt_options()
{
	"$@" --help 2>/dev/null | grep -oE -- '(^|[][ ,|(])--[a-z][a-z-]*' | sed -E 's/^[][ ,|(]//' | sort -u
}

_ckpt_pids()
{
	local p=(/proc/[0-9]*)
	COMPREPLY+=($(compgen -W "${p[*]#/proc/}" -- "$cur"))
}

_ckpt()
{
	local cur prev words cword
	_init_completion || return

	local ckpt=${words[0]} cmd= sub= i npos=0
	for ((i = 1; i < cword; i++)); do
		case ${words[i]} in
		--mount | --store | --every | --keep | --pid-wait | --size | --threads | --level | --procs | --dir)
			[[ -n $cmd ]] && ((i++)) ;; # an option's value
		-*) ;;
		*)
			if [[ -z $cmd ]]; then
				cmd=${words[i]}
			elif [[ ($cmd == store || $cmd == bench) && -z $sub ]]; then
				sub=${words[i]}
			else
				((npos++))
			fi
			;;
		esac
	done

	if [[ -z $cmd ]]; then
		COMPREPLY=($(compgen -W "$(_ckpt_subcommands "$ckpt") --help --version" -- "$cur"))
		return
	fi

	case $prev in
	--mount | --store | --dir)
		_filedir -d
		return ;;
	--every)
		COMPREPLY=($(compgen -W "30s 10m 1h off" -- "$cur"))
		return ;;
	--keep | --pid-wait | --size | --threads | --level | --procs)
		return ;;
	esac

	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$(_ckpt_options "$ckpt" $cmd $sub) --help" -- "$cur"))
		return
	fi

	case $cmd in
	dump)
		if ((npos == 0)); then _ckpt_pids; else _filedir -d; fi ;;
	checkpoint | ls | status)
		_ckpt_pids ;;
	restore | verify)
		_filedir -d ;;
	store | bench)
		[[ -z $sub ]] && COMPREPLY=($(compgen -W "$(_ckpt_subcommands "$ckpt" $cmd)" -- "$cur")) ;;
	esac
} &&
	complete -F _ckpt ckpt
