# SPDX-License-Identifier: LGPL-2.1-or-later
# bash completion for pyvirsh: asks `pyvirsh [-r] [-c URI] complete -- WORDS...` for candidates.
# Install: source this file, or copy it to /usr/share/bash-completion/completions/pyvirsh; it
# lives next to pyvirt/cli/pyvirsh.py in the installed package.

_pyvirsh_complete()
{
    local words cword c=1 i=0 cur RO URI
    if declare -F _get_comp_words_by_ref >/dev/null; then
        # bash-completion's word splitting keeps a URI (with its ':' and '=') one word
        _get_comp_words_by_ref -n "\"'><=;|&(:" -w words -i cword
    else
        words=("${COMP_WORDS[@]}")
        cword=$COMP_CWORD
    fi
    cur=${words[$cword]}

    # global options before the command; honour the URI and read-only mode the user chose
    while [ $c -lt $cword ]; do
        case "${words[c]}" in
            -r|--readonly) RO=1 ;;
            -c|--connect) c=$((c + 1)); URI=${words[c]} ;;
            -q|--quiet) ;;
            *) i=$c; break ;;
        esac
        c=$((c + 1))
    done
    [ $i -eq 0 ] && i=$cword

    local -a CMDLINE=() INPUT=()
    [ -n "${RO}" ] && CMDLINE+=("-r")
    [ -n "${URI}" ] && CMDLINE+=("-c" "${URI}")
    INPUT=( "${words[@]:$i:$((cword - i + 1))}" )

    local IFS=$'\n'
    COMPREPLY=($("$1" "${CMDLINE[@]}" complete -- "${INPUT[@]}" 2>/dev/null))
    COMPREPLY=($(compgen -W "${COMPREPLY[*]}" -- "${cur}"))
    if declare -F __ltrim_colon_completions >/dev/null; then
        __ltrim_colon_completions "$cur"
    fi
    return 0
} &&
complete -o default -o filenames -F _pyvirsh_complete pyvirsh
