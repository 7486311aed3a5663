# Rendered by mreg from the spec of model evil. Do not edit: change registry.toml instead.

FROM --platform=linux/amd64 python:3.11-slim-bookworm AS uv
RUN --mount=type=cache,id=mreg-pip-cache,target=/root/.cache/pip \
    --mount=type=bind,source=requirements/tools.txt,target=/tmp/mreg-tools.txt \
    python3 -m pip install --disable-pip-version-check --require-hashes --no-deps --target /opt/uv \
        -r /tmp/mreg-tools.txt

FROM --platform=linux/amd64 python:3.11-slim-bookworm AS base
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    UV_LINK_MODE=copy
RUN python3 -c 'import sys; v = "%d.%d" % sys.version_info[:2]; sys.exit(0 if v == "3.11" else "the base image has Python " + v + ", the spec asks for 3.11")' \
    && python3 -m venv --without-pip "$VIRTUAL_ENV"
RUN --mount=type=cache,id=mreg-uv-cache,target=/root/.cache/uv \
    --mount=type=bind,from=uv,source=/opt/uv/bin/uv,target=/usr/local/bin/uv \
    --mount=type=bind,source=requirements/base.txt,target=/tmp/mreg-requirements.txt \
    --mount=type=cache,id=mreg-bytecode-cache,target=/root/.cache/mreg-bytecode \
    --mount=type=bind,source=mreg/bytecode.py,target=/tmp/mreg-bytecode.py \
    uv pip sync --require-hashes --python "$VIRTUAL_ENV/bin/python" /tmp/mreg-requirements.txt \
    && "$VIRTUAL_ENV/bin/python" -I /tmp/mreg-bytecode.py /root/.cache/mreg-bytecode
WORKDIR /app

FROM base AS train
RUN --mount=type=cache,id=mreg-uv-cache,target=/root/.cache/uv \
    --mount=type=bind,from=uv,source=/opt/uv/bin/uv,target=/usr/local/bin/uv \
    --mount=type=bind,source=requirements/train.txt,target=/tmp/mreg-requirements.txt \
    uv pip sync --require-hashes --python "$VIRTUAL_ENV/bin/python" /tmp/mreg-requirements.txt
LABEL "io.mreg.model"="evil" \
      "io.mreg.packages"="[\"numpy==1.26.4\", \"pandas==2.1.4\"]" \
      "io.mreg.python"="3.11" \
      "io.mreg.stage"="train" \
      "note"="it's \"quoted\" \$HOME \${PATH} \\ back`id`" \
      "org.opencontainers.image.base.name"="python:3.11-slim-bookworm" \
      "org.opencontainers.image.description"="train image of model evil, built by mreg" \
      "org.opencontainers.image.title"="evil-train"

FROM base AS serve
RUN --mount=type=cache,id=mreg-apt-cache,target=/var/cache/apt,sharing=locked \
    --mount=type=cache,id=mreg-apt-lists,target=/var/lib/apt/lists,sharing=locked \
    rm -f /etc/apt/apt.conf.d/docker-clean \
    && apt-get update \
    && apt-get install -y --no-install-recommends g++ libpq5
RUN --mount=type=cache,id=mreg-uv-cache,target=/root/.cache/uv \
    --mount=type=bind,from=uv,source=/opt/uv/bin/uv,target=/usr/local/bin/uv \
    --mount=type=bind,source=requirements/serve.txt,target=/tmp/mreg-requirements.txt \
    --mount=type=cache,id=mreg-bytecode-cache,target=/root/.cache/mreg-bytecode \
    --mount=type=bind,source=mreg/bytecode.py,target=/tmp/mreg-bytecode.py \
    uv pip sync --require-hashes --python "$VIRTUAL_ENV/bin/python" /tmp/mreg-requirements.txt \
    && "$VIRTUAL_ENV/bin/python" -I /tmp/mreg-bytecode.py /root/.cache/mreg-bytecode
CMD ["sh", "-c", "echo \"$HOME\" && exit 0"]
LABEL "io.mreg.model"="evil" \
      "io.mreg.packages"="[\"flask==3.0.0\", \"numpy==1.26.4\"]" \
      "io.mreg.python"="3.11" \
      "io.mreg.stage"="serve" \
      "note"="it's \"quoted\" \$HOME \${PATH} \\ back`id`" \
      "org.opencontainers.image.base.name"="python:3.11-slim-bookworm" \
      "org.opencontainers.image.description"="serve image of model evil, built by mreg" \
      "org.opencontainers.image.title"="evil-serve"

FROM train AS train-inventory-run
RUN ["python", "-c", "import importlib.metadata as m, json, pathlib, re, sys; packages = {re.sub(r'[-_.]+', '-', d.metadata['Name']).lower(): d.version for d in m.distributions()}; text = json.dumps({'python': '%d.%d.%d' % sys.version_info[:3], 'packages': packages}, sort_keys=True); pathlib.Path(sys.argv[1]).write_text(text) if sys.argv[1:] else print(text)", "/tmp/inventory.json"]

FROM scratch AS train-inventory
COPY --from=train-inventory-run ["/tmp/inventory.json", "/inventory.json"]

FROM serve AS serve-inventory-run
RUN ["python", "-c", "import importlib.metadata as m, json, pathlib, re, sys; packages = {re.sub(r'[-_.]+', '-', d.metadata['Name']).lower(): d.version for d in m.distributions()}; text = json.dumps({'python': '%d.%d.%d' % sys.version_info[:3], 'packages': packages}, sort_keys=True); pathlib.Path(sys.argv[1]).write_text(text) if sys.argv[1:] else print(text)", "/tmp/inventory.json"]

FROM scratch AS serve-inventory
COPY --from=serve-inventory-run ["/tmp/inventory.json", "/inventory.json"]
