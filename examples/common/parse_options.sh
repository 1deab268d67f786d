# Command-line options for the recipes, Kaldi style: source this after setting every option's
# default as a shell variable, and `--some-name VALUE` (or `--some-name=VALUE`) sets `some_name`.
#
#   stage=1; stop_stage=5; ngpu=1; set=()        # an indexed array collects a repeatable option
#   . "$here/../common/parse_options.sh"          # "$@" keeps what follows the options
#
# An option without a variable of that name is an error that names it, so a typo never passes
# silently; `--help` prints $help_message. Only lower-case names are options (no PATH, no HOME).

while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help)
      printf '%s\n' "${help_message:-usage: $0 [--option value ...]}"
      exit 0
      ;;
    --) shift; break ;;
    --*=*) _opt=${1%%=*}; _value=${1#*=}; shift ;;
    --*)
      if [ $# -lt 2 ]; then
        echo "$0: option $1 needs a value" >&2
        exit 2
      fi
      _opt=$1; _value=$2; shift 2
      ;;
    *) break ;;
  esac
  _var=${_opt#--}
  _var=${_var//-/_}
  if [[ ! $_var =~ ^[a-z][a-z0-9_]*$ ]] || ! declare -p "$_var" >/dev/null 2>&1; then
    echo "$0: unknown option $_opt (see $0 --help)" >&2
    exit 2
  fi
  if [[ $(declare -p "$_var") == "declare -a"* ]]; then
    eval "$_var+=(\"\$_value\")"
  else
    printf -v "$_var" '%s' "$_value"
  fi
done
unset _opt _value _var
