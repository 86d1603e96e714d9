#!/usr/bin/env bash
# `make fuzz-api`: schemathesis generates requests from docs/openapi.json against a real
# `graft serve` on a free loopback port (an admin token, a registry with a base and a student).
# Fails on any 5xx, a response that breaks its schema, or a crash; then checks that nothing
# outside the registry changed (a sentinel tree beside it) and that `graft verify` is clean.
#   scripts/fuzz_api.sh GRAFT_BINARY PYTHON [MAX_EXAMPLES]
set -euo pipefail
graft=$1
python=$2
examples=${3:-200}
work=$(mktemp -d "${TMPDIR:-/tmp}/graft-fuzz-api-XXXXXX")
server=""
cleanup() {
    if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then kill -TERM "$server"; wait "$server" || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

registry=$work/registry
mkdir -p "$work/sentinel" && echo keep > "$work/sentinel/file"
"$graft" init --registry "$registry" >/dev/null
"$python" - "$work/base.safetensors" <<'PY'
import json, os, struct, sys
tensors = [("features.0.weight", [64, 64]), ("features.0.bias", [64]), ("classifier.weight", [10, 64])]
header, offset, data = {}, 0, b""
for name, shape in tensors:
    size = 4
    for dim in shape:
        size *= dim
    header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
    offset += size
    data += os.urandom(size)
text = json.dumps(header, separators=(",", ":")).encode()
text += b" " * ((8 - len(text) % 8) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(text)) + text + data)
PY
"$graft" base add "$work/base.safetensors" --name cnn --registry "$registry" >/dev/null
"$graft" student create ft --from cnn@1 --freeze features --registry "$registry" >/dev/null
"$graft" checkpoint add ft "$work/base.safetensors" --metric acc=0.5 --registry "$registry" >/dev/null
token=$("$graft" token create fuzz --scope admin --registry "$registry" | tail -1)
before=$(cd "$work" && find sentinel -type f -exec sha256sum {} + | sort)

"$graft" serve --registry "$registry" --listen 127.0.0.1:0 > "$work/serve.out" 2> "$work/serve.log" &
server=$!
for _ in $(seq 100); do grep -q "listening on" "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'http://127.0.0.1:[0-9]*' "$work/serve.out")
echo "fuzzing $url with up to $examples examples per operation"

status=0
"$python" -m schemathesis.cli run "$PWD/docs/openapi.json" --url "$url" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,response_schema_conformance,status_code_conformance \
    --max-examples "$examples" --request-timeout 30 --phases examples,fuzzing || status=$?

kill -0 "$server" || { echo "graft serve died during the run"; status=1; }
if grep -q " 500 " "$work/serve.log"; then echo "the server answered 500:"; grep " 500 " "$work/serve.log" | head; status=1; fi
after=$(cd "$work" && find sentinel -type f -exec sha256sum {} + | sort)
[ "$before" = "$after" ] || { echo "files outside the registry changed"; status=1; }
"$graft" verify --registry "$registry" || status=1
exit $status
