# Rendered by mreg from the spec of model iris-rf. Do not edit: change registry.toml instead.

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
    uv pip install --python "$VIRTUAL_ENV/bin/python" joblib==1.3.2 numpy==1.26.4 scikit-learn==1.3.2 scipy==1.11.4
WORKDIR /app

FROM base AS train
RUN --mount=type=cache,id=mreg-uv-cache,target=/root/.cache/uv \
    --mount=type=bind,from=uv,source=/opt/uv/bin/uv,target=/usr/local/bin/uv \
    uv pip install --python "$VIRTUAL_ENV/bin/python" pandas==2.1.4
COPY ["stages/train/train.py", "/app/train.py"]
CMD ["python", "train.py", "--out", "/out/model.joblib"]
LABEL "io.mreg.model"="iris-rf" \
      "io.mreg.python"="3.11" \
      "io.mreg.requirements"="[\"joblib==1.3.2\", \"numpy==1.26.4\", \"pandas==2.1.4\", \"scikit-learn==1.3.2\", \"scipy==1.11.4\"]" \
      "io.mreg.spec-sha256"="e398f3b1e069719f5fea65ab803d9181f24a5ef56991c4fbdea4835e3d9b9669" \
      "io.mreg.stage"="train" \
      "org.opencontainers.image.base.name"="python:3.11-slim-bookworm" \
      "org.opencontainers.image.description"="train image of model iris-rf, built by mreg" \
      "org.opencontainers.image.title"="iris-rf-train" \
      "team"="ml-platform"

FROM base AS serve
RUN --mount=type=cache,id=mreg-apt-cache,target=/var/cache/apt,sharing=locked \
    --mount=type=cache,id=mreg-apt-lists,target=/var/lib/apt/lists,sharing=locked \
    rm -f /etc/apt/apt.conf.d/docker-clean \
    && apt-get update \
    && apt-get install -y --no-install-recommends curl
RUN --mount=type=cache,id=mreg-uv-cache,target=/root/.cache/uv \
    --mount=type=bind,from=uv,source=/opt/uv/bin/uv,target=/usr/local/bin/uv \
    uv pip install --python "$VIRTUAL_ENV/bin/python" fastapi==0.109.0 uvicorn==0.27.0
COPY ["stages/serve/serve.py", "/app/serve.py"]
CMD ["uvicorn", "serve:app", "--host", "127.0.0.1", "--port", "8080"]
LABEL "io.mreg.model"="iris-rf" \
      "io.mreg.python"="3.11" \
      "io.mreg.requirements"="[\"fastapi==0.109.0\", \"joblib==1.3.2\", \"numpy==1.26.4\", \"scikit-learn==1.3.2\", \"scipy==1.11.4\", \"uvicorn==0.27.0\"]" \
      "io.mreg.spec-sha256"="e398f3b1e069719f5fea65ab803d9181f24a5ef56991c4fbdea4835e3d9b9669" \
      "io.mreg.stage"="serve" \
      "org.opencontainers.image.base.name"="python:3.11-slim-bookworm" \
      "org.opencontainers.image.description"="serve image of model iris-rf, built by mreg" \
      "org.opencontainers.image.title"="iris-rf-serve" \
      "team"="ml-platform"
