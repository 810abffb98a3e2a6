# localai for zsh. Load it from ~/.zshrc with:   eval "$(localai init zsh)"
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
# Set before the eval: LOCALAI_SUGGEST_KEY (a bindkey key string, default '^[a' = Alt-a),
# LOCALAI_ACTION_KEY (default '^[r' = Alt-r).
# Sourcing this runs no program.

# --- the localai program ------------------------------------------------------------------

__localai_found() {
    \builtin whence -p localai >/dev/null 2>&1 && return 0
    \builtin print -ru2 -- 'localai: the localai command is not in PATH; install it (`pip install .` in a clone of localai) or fix PATH'
    return 127
}

# The shell's `localai`: `localai explain` with no command explains the previous one, which
# only the shell knows; it goes to the program in LOCALAI_PREVIOUS_COMMAND.
localai() {
    __localai_found || return
    local st=$?
    if [[ ${1-} == explain ]]; then
        # $history[$HISTCMD] is this very line
        LOCALAI_PREVIOUS_COMMAND=${history[$((HISTCMD - 1))]-} \command localai explain --shell zsh "${@:2}"
    elif [[ ${1-} == run ]]; then
        \command localai run --shell zsh --last-command "${history[$((HISTCMD - 1))]-}" --last-status $st "${@:2}"
    else
        \command localai "$@"
    fi
}

# --- ask and ?? -----------------------------------------------------------------------------

__localai_ask() {
    __localai_found && \command localai ask "$@"
}

\builtin alias ask='noglob __localai_ask'
\builtin alias '??'='noglob __localai_ask --'

# zsh parses a line before any function sees it: `?? what's my ip` would wait at `quote>`,
# `$HOME` would be expanded. So Enter (the accept-line widget) first turns a line that starts
# with `??` into `ask -- '<the rest of the line, quoted>'`, then accepts it as before.
__localai_accept_line() {
    \builtin emulate -L zsh
    if [[ $BUFFER =~ '^[[:space:]]*[?][?][[:space:]]+(.*[^[:space:]].*)$' ]]; then
        BUFFER="ask -- ${(qq)match[1]}"
        CURSOR=${#BUFFER}
    fi
    \builtin zle __localai_accept_line_orig -- "$@"
}

# --- the key binding: a description becomes a command ------------------------------------

__localai_suggest() {
    if [[ -z ${BUFFER//[[:space:]]/} ]]; then
        \builtin zle -M 'localai: describe a command first, then press the key'
        return 1
    fi
    local out
    out=$(__localai_found 2>&1) || { \builtin zle -M -- "$out"; return 1; }
    \builtin zle -M 'localai: thinking...'
    \builtin zle -R
    # stdout is the command; on failure the last line is the error (download progress and the
    # like may come before either)
    if out=$(\command localai cmd --shell zsh -- "$BUFFER" 2>&1 </dev/null) && [[ -n ${out##*$'\n'} ]]; then
        BUFFER=${out##*$'\n'}
        CURSOR=${#BUFFER}
        local warn=${out%$'\n'*}  # a command that deletes or overwrites: the line before it warns
        warn=${warn##*$'\n'}
        if [[ $warn == 'localai: warning: '* ]]; then
            \builtin zle -M -- "$warn"
        else
            \builtin zle -M ''
        fi
    else
        \builtin zle -M -- "${out##*$'\n'}"  # the line stays as it was
        return 1
    fi
}

# --- the action key: the actions offered for the command line -----------------------------

__localai_actions() {
    \builtin emulate -L zsh
    local out
    out=$(__localai_found 2>&1) || { \builtin zle -M -- "$out"; return 1; }
    local -a names
    names=("${(@f)$(\command localai actions --names 2>&1 </dev/null)}") || { \builtin zle -M -- "${names[-1]}"; return 1; }
    local menu="" i=1 n
    for n in $names; do menu+="$i) $n  "; ((i++)); done
    local num="" key
    while true; do
        \builtin zle -M -- "localai: ${menu}| action number, Enter: $num"
        \builtin zle -R  # -M shows at the next redisplay: now
        \builtin read -k 1 key || return 1
        [[ $key == $'\r' || $key == $'\n' ]] && break
        [[ $key == [0-9] ]] || { \builtin zle -M ''; return 1; }  # any other key: never mind
        num+=$key
    done
    local name=${names[$num]-}
    [[ -n $name && $num == <1-> ]] || { \builtin zle -M "localai: no action number ${num:-(none)}"; return 1; }
    \builtin zle -M "localai: $name..."
    \builtin zle -R
    if out=$(\command localai run --with-output --shell zsh -- "$name" "$BUFFER" 2>&1 </dev/null); then
        if [[ ${out%%$'\n'*} == commandline ]]; then
            BUFFER=${out#*$'\n'}
            CURSOR=${#BUFFER}
            \builtin zle -M ''
        else
            \builtin zle -M -- "${out#*$'\n'}"
        fi
    else
        \builtin zle -M -- "${out##*$'\n'}"  # the line stays as it was
        return 1
    fi
}

if [[ -o zle ]]; then
    if [[ ${widgets[accept-line]-} != user:__localai_accept_line ]]; then  # once, if sourced again
        if [[ ${widgets[accept-line]-} == user:* ]]; then  # another plugin's: keep it in the chain
            \builtin zle -N __localai_accept_line_orig "${widgets[accept-line]#user:}"
        else
            \builtin zle -A .accept-line __localai_accept_line_orig
        fi
        \builtin zle -N accept-line __localai_accept_line
    fi
    \builtin zle -N __localai_suggest
    \builtin bindkey -M emacs "${LOCALAI_SUGGEST_KEY:-^[a}" __localai_suggest
    \builtin bindkey -M viins "${LOCALAI_SUGGEST_KEY:-^[a}" __localai_suggest
    \builtin zle -N __localai_actions
    \builtin bindkey -M emacs "${LOCALAI_ACTION_KEY:-^[r}" __localai_actions
    \builtin bindkey -M viins "${LOCALAI_ACTION_KEY:-^[r}" __localai_actions
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
    local REPLY
    if ((CURRENT == 2)); then
        \builtin compadd -- ${=__localai_commands} --help -h --version -V
        return
    fi
    case ${words[CURRENT-1]} in
        -m|--model) \builtin compadd -- ${=__localai_models}; _files -g '*.gguf'; return ;;
        -f|--file|--socket|--schema|--grammar) _files; return ;;
    esac
    if [[ ${words[CURRENT]} == -* ]]; then
        __localai_options "${words[2]}"
        \builtin compadd -- ${=REPLY}
    elif [[ ${words[2]} == init ]]; then
        \builtin compadd -- bash zsh fish
    elif [[ ${words[2]} == run ]] && ((CURRENT == 3)); then
        local f=${XDG_CACHE_HOME:-$HOME/.cache}/localai/action-names
        if [[ -r $f ]]; then \builtin compadd -- ${(f)"$(<$f)"}; else \builtin compadd -- ${=__localai_action_names}; fi
    elif [[ ${words[2]} == (pull|show|rm) ]]; then
        \builtin compadd -- ${=__localai_models}
    else
        _files
    fi
}

# completion needs compinit (load this after it, as every completion)
(( ${+functions[compdef]} )) && compdef __localai_complete localai
