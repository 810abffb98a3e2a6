# localai for fish. Load it from ~/.config/fish/config.fish with:   localai init fish | source
#
#   ?? what is my ip          ask; the rest of the line is the question, as typed: Enter turns
#                             the line into `ask -- <the rest, escaped>` (fish globs `?`, so
#                             no function named `??` could be called unquoted)
#   ask "question"            ask; the answer streams; options too: ask -n 50 "..."
#   git diff | ask "write a commit message"      piped text is the question's context
#   Alt-a                     the command line, read as a description, becomes a suggested
#                             command; edit it, then Enter runs it (nothing runs before); one
#                             that deletes or overwrites (rm -r, dd, > file, ...) comes with a
#                             warning line
#   localai explain           explain the previous command (`localai explain CMD` any other)
#
# Set before sourcing: LOCALAI_SUGGEST_KEY (a `bind` key sequence, default \ea = Alt-a).
# Sourcing this runs no program.

# --- the localai program ------------------------------------------------------------------

function __localai_found
    command -q localai; and return 0
    echo 'localai: the localai command is not in PATH; install it (`pip install .` in a clone of localai) or fix PATH' >&2
    return 127
end

# The shell's `localai`: `localai explain` with no command explains the previous one, which
# only the shell knows; it goes to the program in LOCALAI_PREVIOUS_COMMAND.
function localai
    set -l st $status
    __localai_found; or return
    if test "$argv[1]" = run
        command localai run --shell fish --last-command "$history[1]" --last-status $st $argv[2..-1]
    else if test "$argv[1]" = explain
        # $history[1] is the line before this one
        LOCALAI_PREVIOUS_COMMAND=$history[1] command localai explain --shell fish $argv[2..-1]
    else
        command localai $argv
    end
end

# --- ask and ?? -----------------------------------------------------------------------------

function __localai_ask
    __localai_found; and command localai ask $argv
end

function ask --wraps 'localai ask' --description 'Ask localai; piped text is the context'
    __localai_ask $argv
end

# Enter: a line that starts with `??` becomes `ask -- <the rest of the line, escaped>`, so
# quotes, `$VARS`, `*` and `;` in the question reach the model as typed; then it runs.
function __localai_enter
    set -l line (commandline | string collect)
    if string match -qr '^\s*\?\?\s+\S' -- $line
        set -l question (string replace -r '^\s*\?\?\s+' '' -- $line | string collect)
        commandline --replace -- "ask -- "(string escape -- $question)
    end
    commandline -f execute
end

# --- the key binding: a description becomes a command ------------------------------------

function __localai_suggest
    set -l line (commandline | string collect)
    if not string match -qr '\S' -- $line
        printf '\nlocalai: describe a command first, then press the key\n' >&2
        commandline -f repaint
        return
    end
    if not __localai_found 2>/dev/null
        printf '\n' >&2
        __localai_found
        commandline -f repaint
        return
    end
    # stdout is the command; on failure the last line is the error (download progress and the
    # like may come before either)
    set -l out (command localai cmd --shell fish -- $line 2>&1 </dev/null)
    if test $status -eq 0; and test -n "$out[-1]"
        commandline --replace -- $out[-1]
        # a command that deletes or overwrites: the line before it warns
        if test (count $out) -ge 2; and string match -q 'localai: warning: *' -- $out[-2]
            printf '\n%s\n' $out[-2] >&2
        end
    else
        printf '\n%s\n' $out[-1] >&2  # the line stays as it was
    end
    commandline -f repaint
end

# --- the action key: the actions offered for the command line -----------------------------

function __localai_actions
    set -l line (commandline | string collect)
    if not __localai_found 2>/dev/null
        printf '\n' >&2
        __localai_found
        commandline -f repaint
        return
    end
    set -l names (command localai actions --names 2>&1 </dev/null)
    if test $status -ne 0
        printf '\n%s\n' $names[-1] >&2
        commandline -f repaint
        return
    end
    printf '\n' >&2
    for i in (seq (count $names))
        printf '%d) %s  ' $i $names[$i] >&2
    end
    printf '\n' >&2
    read -P 'localai: action number, Enter: ' num </dev/tty
    if not string match -qr '^[0-9]+$' -- $num; or test $num -lt 1; or test $num -gt (count $names)
        printf 'localai: no action number %s\n' $num >&2
        commandline -f repaint
        return
    end
    set -l out (command localai run --with-output --shell fish -- $names[$num] $line 2>&1 </dev/null)
    if test $status -eq 0
        if test "$out[1]" = commandline
            commandline --replace -- (string join \n -- $out[2..-1])
        else
            printf '%s\n' $out[2..-1]
        end
    else
        printf '%s\n' $out[-1] >&2  # the line stays as it was
    end
    commandline -f repaint
end

bind \r __localai_enter
bind -M insert \r __localai_enter

if set -q LOCALAI_ACTION_KEY
    bind $LOCALAI_ACTION_KEY __localai_actions
    bind -M insert $LOCALAI_ACTION_KEY __localai_actions
else
    bind \er __localai_actions
    bind -M insert \er __localai_actions
end

if set -q LOCALAI_SUGGEST_KEY
    bind $LOCALAI_SUGGEST_KEY __localai_suggest
    bind -M insert $LOCALAI_SUGGEST_KEY __localai_suggest
else
    bind \ea __localai_suggest
    bind -M insert \ea __localai_suggest
end

# --- completion: commands, their options, model names -------------------------------------
# A table, so completing runs no program (tests/test_shell.py checks it against the CLI); one
# `complete` line and two functions, so sourcing stays quick.

set -g __localai_commands ask chat run actions cmd explain complete rewrite logs models ps show pull rm serve status stop init generate tokenize bench perplexity quantize
set -g __localai_models smollm2 gemma3-270m
set -g __localai_action_names add-docstring cmd commit-message explain explain-code fix rewrite translate write-tests  # built-in; a daemon writes all it knows to action-names

function __localai_options --argument-names cmd  # the options of a command, on one line
    switch $cmd
        case ask
            echo '--model -m --system -s --temperature -t --max-tokens -n --no-stream --json --no-daemon --schema --grammar --draft --help -h'
        case chat
            echo '--model -m --system -s --temperature -t --max-tokens -n --no-daemon --continue -c --draft --help -h'
        case run
            echo '--file -f --line --column --model -m --temperature -t --max-tokens -n --json --instruction -i --shell --last-command --last-status --no-daemon --with-output --help -h'
        case actions
            echo '--json --names --no-daemon --help -h'
        case cmd
            echo '--shell --model -m --temperature -t --max-tokens -n --no-daemon --help -h'
        case explain
            echo '--shell --model -m --temperature -t --max-tokens -n --no-daemon --help -h'
        case complete
            echo '--prefix --suffix --file -f --line --column --model -m --temperature -t --max-tokens -n --json --no-daemon --draft --help -h'
        case rewrite
            echo '--instruction -i --file -f --language -l --model -m --temperature -t --max-tokens -n --json --no-daemon --draft --help -h'
        case logs
            echo '--count -n --query -q --json --help -h'
        case models
            echo '--json --help -h'
        case ps
            echo '--json --socket --help -h'
        case show
            echo '--json --template --help -h'
        case pull
            echo '--force --help -h'
        case rm
            echo '--help -h'
        case serve
            echo '--background -b --model -m --backend --n-ctx --threads --keep-alive --socket --http --api-key --draft-model --max-batch --help -h'
        case status
            echo '--json --socket --help -h'
        case stop
            echo '--socket --help -h'
        case init
            echo '--help -h'
        case generate
            echo '--prompt -p --model -m --max-tokens -n --temperature -t --top-k --top-p --min-p --repeat-penalty --seed --stop --n-ctx --backend --json --schema --grammar --draft --help -h'
        case tokenize
            echo '--model -m --special --json --help -h'
        case bench
            echo '--model -m --backend --threads --n-prompt -p --n-gen -n --ttft-prompt --ttft-new --repeats -r --json --activation-bits --help -h'
        case perplexity
            echo '--model -m --ctx -c --chunks --kl-divergence --base --backend --json --help -h'
        case quantize
            echo '--type --pure --leave-output-tensor --tensor-type --allow-requantize --threads --help -h'
        case '*'
            echo '--help -h'
    end
end

function __localai_complete_args
    set -l words (commandline -opc)
    set -l cur (commandline -ct)
    if test (count $words) -le 1
        printf '%s\n' $__localai_commands --help -h --version -V
        return
    end
    switch $words[-1]
        case -m --model
            printf '%s\n' $__localai_models
            __fish_complete_suffix .gguf
            return
        case -f --file --socket --schema --grammar
            __fish_complete_path $cur
            return
    end
    if string match -q -- '-*' $cur
        string split ' ' -- (__localai_options $words[2])
    else if test "$words[2]" = init
        printf '%s\n' bash zsh fish
    else if test "$words[2]" = run; and test (count $words) -eq 2
        set -l f $HOME/.cache/localai/action-names
        set -q XDG_CACHE_HOME; and test -n "$XDG_CACHE_HOME"; and set f $XDG_CACHE_HOME/localai/action-names
        if test -r $f
            while read -l name
                echo $name
            end <$f
        else
            printf '%s\n' $__localai_action_names
        end
    else if contains -- $words[2] pull show rm
        printf '%s\n' $__localai_models
    else
        __fish_complete_path $cur
    end
end

complete -c localai -f -a '(__localai_complete_args)'
