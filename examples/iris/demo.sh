#!/usr/bin/env bash
# The whole main job on the bundled example, with the embedded defaults (local images, local stores):
# build both images, train in the train image and register what it wrote, serve the registered version in
# its serve image, and ask it for a prediction. Run from anywhere: `make demo` or `bash examples/iris/demo.sh`.
set -euo pipefail
cd "$(dirname "$0")/../.."
MREG=${MREG:-mreg}
json() { python3 -c 'import json, sys; data = json.load(sys.stdin)
for key in sys.argv[1].split("."): data = data[key]
print(data)' "$1"; }

echo "== mreg build"
$MREG build

echo "== mreg train --register"
rm -rf out  # train --register registers what this run writes, so it starts from an empty out/
trained=$($MREG train --register --json)
version=$(json record.version <<<"$trained")
echo "registered iris-rf:$version (sha256 $(json record.model.sha256 <<<"$trained"), accuracy $(json record.metrics.accuracy <<<"$trained"))"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "== mreg serve iris-rf:$version --port $port"
url_file=$(mktemp)
$MREG serve "iris-rf:$version" --port "$port" >"$url_file" &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" || true; rm -f "$url_file"' EXIT
until [[ -s "$url_file" ]]; do  # mreg serve prints the URL once the health path answers
  kill -0 "$server" 2>/dev/null || { echo "mreg serve ended before the server was ready" >&2; exit 1; }
  sleep 0.5
done
url=$(head -n 1 "$url_file")
answer=$(curl -fsS -X POST "$url/predict" -H 'content-type: application/json' \
  -d '{"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}')
echo "prediction: $answer"
[[ "$answer" == *'"classes":["setosa","virginica"]'* ]] || { echo "unexpected prediction" >&2; exit 1; }
echo "== done: $($MREG show "iris-rf:$version" | head -n 1)"
