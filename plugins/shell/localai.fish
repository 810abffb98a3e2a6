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
    __localai_found; or return
    if test "$argv[1]" = explain
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

bind \r __localai_enter
bind -M insert \r __localai_enter

if set -q LOCALAI_SUGGEST_KEY
    bind $LOCALAI_SUGGEST_KEY __localai_suggest
    bind -M insert $LOCALAI_SUGGEST_KEY __localai_suggest
else
    bind \ea __localai_suggest
    bind -M insert \ea __localai_suggest
end

# --- completion: commands, their options, model names -------------------------------------
# A table, so completing runs no program (tests/test_shell.py checks it against the CLI).

complete -c localai -f
complete -c localai -n __fish_use_subcommand -a 'ask chat run actions cmd explain complete rewrite logs models ps show pull rm serve status stop init generate tokenize bench perplexity quantize'
complete -c localai -n __fish_use_subcommand -l version -s V
complete -c localai -n '__fish_seen_subcommand_from init' -a 'bash zsh fish'
complete -c localai -n '__fish_seen_subcommand_from pull show rm' -a 'smollm2 gemma3-270m'
complete -c localai -n '__fish_seen_subcommand_from ask' -l model -s m -r -a 'smollm2 gemma3-270m (__fish_complete_suffix .gguf)'
complete -c localai -n '__fish_seen_subcommand_from ask' -l system -s s
complete -c localai -n '__fish_seen_subcommand_from ask' -l temperature -s t
complete -c localai -n '__fish_seen_subcommand_from ask' -l max-tokens -s n
complete -c localai -n '__fish_seen_subcommand_from ask' -l no-stream
complete -c localai -n '__fish_seen_subcommand_from ask' -l json
complete -c localai -n '__fish_seen_subcommand_from ask' -l no-daemon
complete -c localai -n '__fish_seen_subcommand_from ask' -l schema -r -F
complete -c localai -n '__fish_seen_subcommand_from ask' -l grammar -r -F
complete -c localai -n '__fish_seen_subcommand_from ask' -l help -s h
complete -c localai -n '__fish_seen_subcommand_from chat' -l model -s m -r -a 'smollm2 gemma3-270m (__fish_complete_suffix .gguf)'
complete -c localai -n '__fish_seen_subcommand_from chat' -l system -s s
complete -c localai -n '__fish_seen_subcommand_from chat' -l temperature -s t
complete -c localai -n '__fish_seen_subcommand_from chat' -l max-tokens -s n
complete -c localai -n '__fish_seen_subcommand_from chat' -l no-daemon
complete -c localai -n '__fish_seen_subcommand_from chat' -l continue -s c
complete -c localai -n '__fish_seen_subcommand_from chat' -l help -s h
complete -c localai -n '__fish_seen_subcommand_from run' -l file -s f -r -F
complete -c localai -n '__fish_seen_subcommand_from run' -l line
complete -c localai -n '__fish_seen_subcommand_from run' -l column
complete -c localai -n '__fish_seen_subcommand_from run' -l model -s m -r -a 'smollm2 gemma3-270m (__fish_complete_suffix .gguf)'
complete -c localai -n '__fish_seen_subcommand_from run' -l temperature -s t
complete -c localai -n '__fish_seen_subcommand_from run' -l max-tokens -s n
complete -c localai -n '__fish_seen_subcommand_from run' -l json
complete -c localai -n '__fish_seen_subcommand_from run' -l help -s h
complete -c localai -n '__fish_seen_subcommand_from actions' -l json
complete -c localai -n '__fish_seen_subcommand_from actions' -l help -s h
complete -c localai -n '__fish_seen_subcommand_from cmd' -l shell
complete -c localai -n '__fish_seen_subcommand_from cmd' -l model -s m -r -a 'smollm2 gemma3-270m (__fish_complete_suffix .gguf)'
complete -c localai -n '__fish_seen_subcommand_from cmd' -l temperature -s t
complete -c localai -n '__fish_seen_subcommand_from cmd' -l max-tokens -s n
complete -c localai -n '__fish_seen_subcommand_from cmd' -l no-daemon
complete -c localai -n '__fish_seen_subcommand_from cmd' -l help -s h
complete -c localai -n '__fish_seen_subcommand_from explain' -l shell
complete -c localai -n '__fish_seen_subcommand_from explain' -l model -s m -r -a 'smollm2 gemma3-270m (__fish_complete_suffix .gguf)'
complete -c localai -n '__fish_seen_subcommand_from explain' -l temperature -s t
complete -c localai -n '__fish_seen_subcommand_from explain' -l max-tokens -s n
complete -c localai -n '__fish_seen_subcommand_from explain' -l no-daemon
complete -c localai -n '__fish_seen_subcommand_from explain' -l help -s h
complete -c localai -n '__fish_seen_subcommand_from complete' -l prefix
complete -c localai -n '__fish_seen_subcommand_from complete' -l suffix
complete -c localai -n '__fish_seen_subcommand_from complete' -l file -s f -r -F
complete -c localai -n '__fish_seen_subcommand_from complete' -l line
complete -c localai -n '__fish_seen_subcommand_from complete' -l column
complete -c localai -n '__fish_seen_subcommand_from complete' -l model -s m -r -a 'smollm2 gemma3-270m (__fish_complete_suffix .gguf)'
complete -c localai -n '__fish_seen_subcommand_from complete' -l temperature -s t
complete -c localai -n '__fish_seen_subcommand_from complete' -l max-tokens -s n
complete -c localai -n '__fish_seen_subcommand_from complete' -l json
complete -c localai -n '__fish_seen_subcommand_from complete' -l no-daemon
complete -c localai -n '__fish_seen_subcommand_from complete' -l help -s h
complete -c localai -n '__fish_seen_subcommand_from rewrite' -l instruction -s i
complete -c localai -n '__fish_seen_subcommand_from rewrite' -l file -s f -r -F
complete -c localai -n '__fish_seen_subcommand_from rewrite' -l language -s l
complete -c localai -n '__fish_seen_subcommand_from rewrite' -l model -s m -r -a 'smollm2 gemma3-270m (__fish_complete_suffix .gguf)'
complete -c localai -n '__fish_seen_subcommand_from rewrite' -l temperature -s t
complete -c localai -n '__fish_seen_subcommand_from rewrite' -l max-tokens -s n
complete -c localai -n '__fish_seen_subcommand_from rewrite' -l json
complete -c localai -n '__fish_seen_subcommand_from rewrite' -l no-daemon
complete -c localai -n '__fish_seen_subcommand_from rewrite' -l help -s h
complete -c localai -n '__fish_seen_subcommand_from logs' -l count -s n
complete -c localai -n '__fish_seen_subcommand_from logs' -l query -s q
complete -c localai -n '__fish_seen_subcommand_from logs' -l json
complete -c localai -n '__fish_seen_subcommand_from logs' -l help -s h
complete -c localai -n '__fish_seen_subcommand_from models' -l json
complete -c localai -n '__fish_seen_subcommand_from models' -l help -s h
complete -c localai -n '__fish_seen_subcommand_from ps' -l json
complete -c localai -n '__fish_seen_subcommand_from ps' -l socket -r -F
complete -c localai -n '__fish_seen_subcommand_from ps' -l help -s h
complete -c localai -n '__fish_seen_subcommand_from show' -l json
complete -c localai -n '__fish_seen_subcommand_from show' -l template
complete -c localai -n '__fish_seen_subcommand_from show' -l help -s h
complete -c localai -n '__fish_seen_subcommand_from pull' -l force
complete -c localai -n '__fish_seen_subcommand_from pull' -l help -s h
complete -c localai -n '__fish_seen_subcommand_from rm' -l help -s h
complete -c localai -n '__fish_seen_subcommand_from serve' -l background -s b
complete -c localai -n '__fish_seen_subcommand_from serve' -l model -s m -r -a 'smollm2 gemma3-270m (__fish_complete_suffix .gguf)'
complete -c localai -n '__fish_seen_subcommand_from serve' -l backend
complete -c localai -n '__fish_seen_subcommand_from serve' -l n-ctx
complete -c localai -n '__fish_seen_subcommand_from serve' -l threads
complete -c localai -n '__fish_seen_subcommand_from serve' -l keep-alive
complete -c localai -n '__fish_seen_subcommand_from serve' -l socket -r -F
complete -c localai -n '__fish_seen_subcommand_from serve' -l http
complete -c localai -n '__fish_seen_subcommand_from serve' -l api-key
complete -c localai -n '__fish_seen_subcommand_from serve' -l help -s h
complete -c localai -n '__fish_seen_subcommand_from status' -l json
complete -c localai -n '__fish_seen_subcommand_from status' -l socket -r -F
complete -c localai -n '__fish_seen_subcommand_from status' -l help -s h
complete -c localai -n '__fish_seen_subcommand_from stop' -l socket -r -F
complete -c localai -n '__fish_seen_subcommand_from stop' -l help -s h
complete -c localai -n '__fish_seen_subcommand_from init' -l help -s h
complete -c localai -n '__fish_seen_subcommand_from generate' -l prompt -s p
complete -c localai -n '__fish_seen_subcommand_from generate' -l model -s m -r -a 'smollm2 gemma3-270m (__fish_complete_suffix .gguf)'
complete -c localai -n '__fish_seen_subcommand_from generate' -l max-tokens -s n
complete -c localai -n '__fish_seen_subcommand_from generate' -l temperature -s t
complete -c localai -n '__fish_seen_subcommand_from generate' -l top-k
complete -c localai -n '__fish_seen_subcommand_from generate' -l top-p
complete -c localai -n '__fish_seen_subcommand_from generate' -l min-p
complete -c localai -n '__fish_seen_subcommand_from generate' -l repeat-penalty
complete -c localai -n '__fish_seen_subcommand_from generate' -l seed
complete -c localai -n '__fish_seen_subcommand_from generate' -l stop
complete -c localai -n '__fish_seen_subcommand_from generate' -l n-ctx
complete -c localai -n '__fish_seen_subcommand_from generate' -l backend
complete -c localai -n '__fish_seen_subcommand_from generate' -l json
complete -c localai -n '__fish_seen_subcommand_from generate' -l schema -r -F
complete -c localai -n '__fish_seen_subcommand_from generate' -l grammar -r -F
complete -c localai -n '__fish_seen_subcommand_from generate' -l help -s h
complete -c localai -n '__fish_seen_subcommand_from tokenize' -l model -s m -r -a 'smollm2 gemma3-270m (__fish_complete_suffix .gguf)'
complete -c localai -n '__fish_seen_subcommand_from tokenize' -l special
complete -c localai -n '__fish_seen_subcommand_from tokenize' -l json
complete -c localai -n '__fish_seen_subcommand_from tokenize' -l help -s h
complete -c localai -n '__fish_seen_subcommand_from bench' -l model -s m -r -a 'smollm2 gemma3-270m (__fish_complete_suffix .gguf)'
complete -c localai -n '__fish_seen_subcommand_from bench' -l backend
complete -c localai -n '__fish_seen_subcommand_from bench' -l threads
complete -c localai -n '__fish_seen_subcommand_from bench' -l n-prompt -s p
complete -c localai -n '__fish_seen_subcommand_from bench' -l n-gen -s n
complete -c localai -n '__fish_seen_subcommand_from bench' -l ttft-prompt
complete -c localai -n '__fish_seen_subcommand_from bench' -l ttft-new
complete -c localai -n '__fish_seen_subcommand_from bench' -l repeats -s r
complete -c localai -n '__fish_seen_subcommand_from bench' -l json
complete -c localai -n '__fish_seen_subcommand_from bench' -l help -s h
complete -c localai -n '__fish_seen_subcommand_from perplexity' -l model -s m -r -a 'smollm2 gemma3-270m (__fish_complete_suffix .gguf)'
complete -c localai -n '__fish_seen_subcommand_from perplexity' -l ctx -s c
complete -c localai -n '__fish_seen_subcommand_from perplexity' -l chunks
complete -c localai -n '__fish_seen_subcommand_from perplexity' -l kl-divergence
complete -c localai -n '__fish_seen_subcommand_from perplexity' -l base
complete -c localai -n '__fish_seen_subcommand_from perplexity' -l backend
complete -c localai -n '__fish_seen_subcommand_from perplexity' -l json
complete -c localai -n '__fish_seen_subcommand_from perplexity' -l help -s h
complete -c localai -n '__fish_seen_subcommand_from quantize' -l type
complete -c localai -n '__fish_seen_subcommand_from quantize' -l pure
complete -c localai -n '__fish_seen_subcommand_from quantize' -l leave-output-tensor
complete -c localai -n '__fish_seen_subcommand_from quantize' -l tensor-type
complete -c localai -n '__fish_seen_subcommand_from quantize' -l allow-requantize
complete -c localai -n '__fish_seen_subcommand_from quantize' -l threads
complete -c localai -n '__fish_seen_subcommand_from quantize' -l help -s h
