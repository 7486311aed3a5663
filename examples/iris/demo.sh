#!/usr/bin/env bash
# The whole main job on the bundled example, with the embedded defaults (local images, local stores):
# build both images, train inside the train image, register the model, and ask the serve image for a
# prediction made with the registered model. Run from anywhere: `make demo` or `bash examples/iris/demo.sh`.
set -euo pipefail
cd "$(dirname "$0")/../.."
MREG=${MREG:-mreg}
json() { python3 -c 'import json, sys; data = json.load(sys.stdin)
for key in sys.argv[1].split("."): data = data[key]
print(data)' "$1"; }

echo "== mreg build"
build=$($MREG build --json)
train_image=$(json train.image <<<"$build")
serve_image=$(json serve.image <<<"$build")

echo "== training in the train image ($train_image)"
mkdir -p out
docker run --rm --network host --user "$(id -u):$(id -g)" -v "$PWD/out:/out" "$train_image"

echo "== mreg register out/model.joblib"
record=$($MREG register out/model.joblib --json)
version=$(json version <<<"$record")
model_path=$(json model.uri <<<"$record"); model_path=${model_path#file://}
model_sha=$(json model.sha256 <<<"$record")
echo "registered iris-rf:$version (sha256 $model_sha)"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "== serving iris-rf:$version from the serve image ($serve_image) on 127.0.0.1:$port"
container=$(docker run -d --rm --network host -v "$model_path:/models/model.joblib:ro" \
  -e MODEL_SHA256="$model_sha" "$serve_image" uvicorn serve:app --host 127.0.0.1 --port "$port")
trap 'docker stop "$container" >/dev/null' EXIT
for _ in $(seq 1 60); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.5
done
answer=$(curl -fsS -X POST "http://127.0.0.1:$port/predict" -H 'content-type: application/json' \
  -d '{"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}')
echo "prediction: $answer"
[[ "$answer" == *'"classes":["setosa","virginica"]'* ]] || { echo "unexpected prediction" >&2; exit 1; }
echo "== done: $($MREG show "iris-rf:$version" | head -n 1)"
