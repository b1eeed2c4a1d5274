# tests/recur_testlib.sh: what the shell tests share; sourced (. "$(dirname "$0")/recur_testlib.sh").
# pass/fail print a check and count the failures in $fails; serve_url waits for recur serve's
# address.
fails=0
pass() { echo "ok   $1"; }
fail() { echo "FAIL $1"; fails=$((fails + 1)); }

# serve_url FILE PID [PREFIX]: what follows PREFIX (default "recur serve: http on ") on a line
# of FILE, serve's stdout, once serve (PID) has written it: up to 30 s, less if PID exits
# first; prints nothing when it never came.
serve_url() {
  local out=$1 pid=$2 prefix=${3:-recur serve: http on } url=
  for _ in $(seq 300); do
    url=$(sed -n "s/^$prefix//p" "$out")
    [ -n "$url" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "$url"
}

# http_req METHOD PATH [BODY] [curl args...]: an HTTP request to $URL PATH with the header $AUTH
# (BODY as JSON), the response body into $T/body; prints the status code.
http_req() {
  local m=$1 p=$2 body=${3-}; shift 3 2>/dev/null || shift $#
  if [ -n "$body" ]; then
    curl -s -o "$T/body" -w '%{http_code}' -X "$m" -H "$AUTH" -H 'Content-Type: application/json' \
      --data-binary "$body" "$@" "$URL$p"
  else
    curl -s -o "$T/body" -w '%{http_code}' -X "$m" -H "$AUTH" "$@" "$URL$p"
  fi
}
