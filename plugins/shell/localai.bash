# localai for bash. Load it from ~/.bashrc with:   eval "$(localai init bash)"
#
#   ?? what is my ip          ask; the answer streams; the rest of the line is the question, as
#                             typed: Enter quotes it first (`?? what's in $HOME` runs, and
#                             stays in history, as `ask -- 'what'\''s in $HOME'`)
#   ask "question"            the same, and options: ask -n 50 "..."
#   git diff | ask "write a commit message"      piped text is the question's context
#   Alt-a                     the command line, read as a description, becomes a suggested
#                             command; edit it, then Enter runs it (nothing runs before); one
#                             that deletes or overwrites (rm -r, dd, > file, ...) comes with a
#                             warning line
#   localai explain           explain the previous command (`localai explain CMD` any other)
#   localai run NAME [TEXT]   run an action (`localai actions` lists them); the previous command
#                             and its exit status go along
#   Alt-r                     offers the actions for the command line: type a number, Enter;
#                             a `commandline` action's answer replaces the line, others show
#
# Set before the eval: LOCALAI_SUGGEST_KEY (a readline key sequence, default '\ea' = Alt-a),
# LOCALAI_ACTION_KEY (default '\er' = Alt-r).
# Needs bash 4 or later for the key binding. Sourcing this runs no program.

# --- the localai program ------------------------------------------------------------------

__localai_found() {
    \builtin type -P localai >/dev/null 2>&1 && return 0
    \builtin printf '%s\n' 'localai: the localai command is not in PATH; install it (`pip install .` in a clone of localai) or fix PATH' >&2
    return 127
}

# The shell's `localai`: `localai explain` with no command explains the previous one, which
# only the shell knows; it goes to the program in LOCALAI_PREVIOUS_COMMAND.
localai() {
    local st=$?
    __localai_found || return
    if [[ ${1-} == run ]]; then
        local prev
        prev=$(\builtin fc -ln -1 -1 2>/dev/null)
        \command localai run --shell bash --last-command "${prev#"${prev%%[![:space:]]*}"}" --last-status "$st" "${@:2}"
    elif [[ ${1-} == explain ]]; then
        local prev
        prev=$(\builtin fc -ln -1 -1 2>/dev/null)  # -1 is the one before this very line
        LOCALAI_PREVIOUS_COMMAND=${prev#"${prev%%[![:space:]]*}"} \command localai explain --shell bash "${@:2}"
    else
        \command localai "$@"
    fi
}

# --- ask and ?? -----------------------------------------------------------------------------

# `??` and `ask` are aliases for `__localai_noglob; __localai_ask`: bash expands the question's
# words only when __localai_ask runs, after globbing was turned off, so `?? what is my ip?`
# needs no quotes. After a pipe (`cmd | ask ...`) __localai_noglob runs in the pipeline's
# subshell instead: there it keeps the piped text for __localai_ask, which runs next.
__localai_stash="${TMPDIR:-/tmp}/localai-stdin.$UID.$$"

__localai_noglob() {
    if [[ $BASHPID != "$$" && ! -t 0 ]]; then
        \command rm -f -- "$__localai_stash"
        \builtin set -C  # create it anew: never write through a file planted under that name
        \command cat >"$__localai_stash"
    else
        [[ -e $__localai_stash ]] && \command rm -f -- "$__localai_stash"
        [[ $- == *f* ]] || { __localai_glob=1; \builtin set -f; }
    fi
}

__localai_ask() {
    if [[ -n ${__localai_glob-} ]]; then  # the words are expanded by now: globbing back on
        \builtin set +f
        \builtin unset __localai_glob
    fi
    if [[ -f $__localai_stash && -O $__localai_stash ]]; then
        { \command rm -f -- "$__localai_stash"; __localai_found && \command localai ask "$@"; } <"$__localai_stash"
    else
        __localai_found && \command localai ask "$@"
    fi
}

\builtin alias ask='__localai_noglob; __localai_ask'
\builtin alias '??'='__localai_noglob; __localai_ask --'

# bash parses a line before any function sees it: `?? what's my ip` would wait for the quote
# to close, `$HOME` would be expanded. So Enter first runs __localai_quote_line (a readline
# macro: that, then accept-line), which turns a line that starts with `??` into
# `ask -- '<the rest of the line, quoted>'`.
__localai_quote_line() {
    local re='^[[:space:]]*[?][?][[:space:]]+(.*[^[:space:]].*)$' q
    [[ $READLINE_LINE =~ $re ]] || return 0
    q=${BASH_REMATCH[1]}
    if ((BASH_VERSINFO[0] > 4 || BASH_VERSINFO[1] >= 4)); then
        q=${q@Q}
    else
        \builtin printf -v q '%q' "$q"
    fi
    READLINE_LINE="ask -- $q"
    READLINE_POINT=${#READLINE_LINE}
}

# --- the key binding: a description becomes a command ------------------------------------

__localai_suggest() {
    if [[ -z ${READLINE_LINE//[[:space:]]/} ]]; then
        \builtin printf '%s\n' 'localai: describe a command first, then press the key' >&2
        return
    fi
    __localai_found || return
    local out
    # stdout is the command; on failure the last line is the error (download progress and the
    # like may come before either)
    if out=$(\command localai cmd --shell bash -- "$READLINE_LINE" 2>&1 </dev/null) && [[ -n ${out##*$'\n'} ]]; then
        READLINE_LINE=${out##*$'\n'}
        READLINE_POINT=${#READLINE_LINE}
        local warn=${out%$'\n'*}  # a command that deletes or overwrites: the line before it warns
        warn=${warn##*$'\n'}
        [[ $warn == 'localai: warning: '* ]] && \builtin printf '%s\n' "$warn" >&2
    else
        \builtin printf '%s\n' "${out##*$'\n'}" >&2  # the line stays as it was
    fi
}

# --- the action key: the actions offered for the command line -----------------------------

__localai_actions() {
    __localai_found || return
    local out names=() n i=1 num key
    out=$(\command localai actions --names 2>&1 </dev/null) || { \builtin printf '%s\n' "${out##*$'\n'}" >&2; return; }
    while IFS= read -r n; do names+=("$n"); done <<<"$out"
    for n in "${names[@]}"; do \builtin printf '%d) %s  ' "$i" "$n" >&2; ((i++)); done
    \builtin printf '\n' >&2
    \builtin printf 'localai: action number, Enter: ' >&2
    num=""
    while IFS= \builtin read -rsn1 key </dev/tty; do  # readline keeps the terminal raw: key by key
        [[ -z $key || $key == $'\r' || $key == $'\n' ]] && break
        [[ $key == [0-9] ]] || { num=; break; }  # any other key: never mind
        num+=$key
        \builtin printf '%s' "$key" >&2
    done
    \builtin printf '\n' >&2
    [[ $num =~ ^[0-9]+$ ]] && ((num >= 1 && num <= ${#names[@]})) || { \builtin printf '%s\n' "localai: no action number ${num:-(none)}" >&2; return; }
    if out=$(\command localai run --with-output --shell bash -- "${names[num - 1]}" "$READLINE_LINE" 2>&1 </dev/null); then
        if [[ ${out%%$'\n'*} == commandline ]]; then
            READLINE_LINE=${out#*$'\n'}
            READLINE_POINT=${#READLINE_LINE}
        else
            \builtin printf '%s\n' "${out#*$'\n'}"
        fi
    else
        \builtin printf '%s\n' "${out##*$'\n'}" >&2  # the line stays as it was
    fi
}

if [[ $- == *i* ]] && ((BASH_VERSINFO[0] >= 4)); then
    \builtin bind -m emacs -x "\"${LOCALAI_ACTION_KEY:-\\er}\": __localai_actions"
    \builtin bind -m vi-insert -x "\"${LOCALAI_ACTION_KEY:-\\er}\": __localai_actions"
    \builtin bind -m emacs -x "\"${LOCALAI_SUGGEST_KEY:-\\ea}\": __localai_suggest"
    \builtin bind -m vi-insert -x "\"${LOCALAI_SUGGEST_KEY:-\\ea}\": __localai_suggest"
    for __localai_map in emacs vi-insert vi-command; do
        \builtin bind -m "$__localai_map" -x '"\C-x\C-l\C-q": __localai_quote_line'
        \builtin bind -m "$__localai_map" '"\C-x\C-l\C-a": accept-line'
        \builtin bind -m "$__localai_map" '"\C-m": "\C-x\C-l\C-q\C-x\C-l\C-a"'
    done
    \builtin unset __localai_map
fi

# --- completion: commands, their options, model names -------------------------------------
# A table, so completing runs no program (tests/test_shell.py checks it against the CLI).

__localai_commands='ask chat run actions cmd explain complete rewrite logs models ps show pull rm serve status stop init generate tokenize bench perplexity quantize'
__localai_models='smollm2 gemma3-270m'
__localai_action_names='add-docstring cmd commit-message explain explain-code fix rewrite translate write-tests'  # built-in; a daemon writes all it knows to action-names

__localai_options() {  # the options of command $1, in REPLY
    case $1 in
        ask) REPLY='--model -m --system -s --temperature -t --max-tokens -n --no-stream --json --no-daemon --schema --grammar --draft --help -h' ;;
        chat) REPLY='--model -m --system -s --temperature -t --max-tokens -n --no-daemon --continue -c --draft --help -h' ;;
        run) REPLY='--file -f --line --column --model -m --temperature -t --max-tokens -n --json --instruction -i --shell --last-command --last-status --no-daemon --with-output --help -h' ;;
        actions) REPLY='--json --names --no-daemon --help -h' ;;
        cmd) REPLY='--shell --model -m --temperature -t --max-tokens -n --no-daemon --help -h' ;;
        explain) REPLY='--shell --model -m --temperature -t --max-tokens -n --no-daemon --help -h' ;;
        complete) REPLY='--prefix --suffix --file -f --line --column --model -m --temperature -t --max-tokens -n --json --no-daemon --draft --help -h' ;;
        rewrite) REPLY='--instruction -i --file -f --language -l --model -m --temperature -t --max-tokens -n --json --no-daemon --draft --help -h' ;;
        logs) REPLY='--count -n --query -q --json --help -h' ;;
        models) REPLY='--json --help -h' ;;
        ps) REPLY='--json --socket --help -h' ;;
        show) REPLY='--json --template --help -h' ;;
        pull) REPLY='--force --help -h' ;;
        rm) REPLY='--help -h' ;;
        serve) REPLY='--background -b --model -m --backend --n-ctx --threads --keep-alive --socket --http --api-key --draft-model --max-batch --help -h' ;;
        status) REPLY='--json --socket --help -h' ;;
        stop) REPLY='--socket --help -h' ;;
        init) REPLY='--help -h' ;;
        generate) REPLY='--prompt -p --model -m --max-tokens -n --temperature -t --top-k --top-p --min-p --repeat-penalty --seed --stop --n-ctx --backend --json --schema --grammar --draft --help -h' ;;
        tokenize) REPLY='--model -m --special --json --help -h' ;;
        bench) REPLY='--model -m --backend --threads --n-prompt -p --n-gen -n --ttft-prompt --ttft-new --repeats -r --json --activation-bits --help -h' ;;
        perplexity) REPLY='--model -m --ctx -c --chunks --kl-divergence --base --backend --json --help -h' ;;
        quantize) REPLY='--type --pure --leave-output-tensor --tensor-type --allow-requantize --threads --help -h' ;;
        *) REPLY='--help -h' ;;
    esac
}

__localai_complete() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} REPLY
    if ((COMP_CWORD == 1)); then
        COMPREPLY=($(\builtin compgen -W "$__localai_commands --help -h --version -V" -- "$cur"))
        return
    fi
    case $prev in
        -m|--model) COMPREPLY=($(\builtin compgen -W "$__localai_models" -- "$cur") $(\builtin compgen -f -X '!*.gguf' -- "$cur")); return ;;
        -f|--file|--socket|--schema|--grammar) COMPREPLY=($(\builtin compgen -f -- "$cur")); return ;;
    esac
    if [[ $cur == -* ]]; then
        __localai_options "${COMP_WORDS[1]}"
        COMPREPLY=($(\builtin compgen -W "$REPLY" -- "$cur"))
    elif [[ ${COMP_WORDS[1]} == init ]]; then
        COMPREPLY=($(\builtin compgen -W 'bash zsh fish' -- "$cur"))
    elif [[ ${COMP_WORDS[1]} == run ]] && ((COMP_CWORD == 2)); then
        local names=$__localai_action_names f=${XDG_CACHE_HOME:-$HOME/.cache}/localai/action-names
        [[ -r $f ]] && names=$(<"$f")
        COMPREPLY=($(\builtin compgen -W "$names" -- "$cur"))
    elif [[ ${COMP_WORDS[1]} =~ ^(pull|show|rm)$ ]]; then
        COMPREPLY=($(\builtin compgen -W "$__localai_models" -- "$cur"))
    else
        COMPREPLY=($(\builtin compgen -f -- "$cur"))
    fi
}

\builtin complete -F __localai_complete localai
