# Rendered by mreg from the spec of model evil. Do not edit: change registry.toml instead.

FROM python:3.11-slim-bookworm AS uv
RUN --mount=type=cache,id=mreg-pip-cache,target=/root/.cache/pip \
    python3 -m venv /opt/uv && /opt/uv/bin/pip install --disable-pip-version-check uv==0.13.9

FROM python:3.11-slim-bookworm AS base
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    UV_LINK_MODE=copy
RUN python3 -c 'import sys; v = "%d.%d" % sys.version_info[:2]; sys.exit(0 if v == "3.11" else "the base image has Python " + v + ", the spec asks for 3.11")' \
    && python3 -m venv --without-pip "$VIRTUAL_ENV"
RUN --mount=type=cache,id=mreg-uv-cache,target=/root/.cache/uv \
    --mount=type=bind,from=uv,source=/opt/uv/bin/uv,target=/usr/local/bin/uv \
    uv pip install --python "$VIRTUAL_ENV/bin/python" 'numpy>=1.26; platform_release == "$(touch /tmp/pwned)'"'"'"' 'requests[socks]>=2; os_name != "`id`"'
WORKDIR /app

FROM base AS train
LABEL "io.mreg.model"="evil" \
      "io.mreg.python"="3.11" \
      "io.mreg.requirements"="[\"numpy>=1.26; platform_release == \\\"\$(touch /tmp/pwned)'\\\"\", \"requests[socks]>=2; os_name != \\\"`id`\\\"\"]" \
      "io.mreg.spec-sha256"="92642a81c362fae5b15ed1dbc13b294e14b1742e05613253db19e60cedacc6fb" \
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
    uv pip install --python "$VIRTUAL_ENV/bin/python" flask
CMD ["sh", "-c", "echo \"$HOME\" && exit 0"]
LABEL "io.mreg.model"="evil" \
      "io.mreg.python"="3.11" \
      "io.mreg.requirements"="[\"flask\", \"numpy>=1.26; platform_release == \\\"\$(touch /tmp/pwned)'\\\"\", \"requests[socks]>=2; os_name != \\\"`id`\\\"\"]" \
      "io.mreg.spec-sha256"="92642a81c362fae5b15ed1dbc13b294e14b1742e05613253db19e60cedacc6fb" \
      "io.mreg.stage"="serve" \
      "note"="it's \"quoted\" \$HOME \${PATH} \\ back`id`" \
      "org.opencontainers.image.base.name"="python:3.11-slim-bookworm" \
      "org.opencontainers.image.description"="serve image of model evil, built by mreg" \
      "org.opencontainers.image.title"="evil-serve"
