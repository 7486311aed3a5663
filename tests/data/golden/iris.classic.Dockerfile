# Rendered by mreg from the spec of model iris-rf. Do not edit: change registry.toml instead.

FROM python:3.11-slim-bookworm AS base
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    UV_LINK_MODE=copy
RUN python3 -c 'import sys; v = "%d.%d" % sys.version_info[:2]; sys.exit(0 if v == "3.11" else "the base image has Python " + v + ", the spec asks for 3.11")' \
    && python3 -m venv "$VIRTUAL_ENV"
RUN pip install --no-cache-dir --disable-pip-version-check joblib==1.3.2 numpy==1.26.4 scikit-learn==1.3.2 scipy==1.11.4
WORKDIR /app

FROM base AS train
RUN pip install --no-cache-dir --disable-pip-version-check pandas==2.1.4
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
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir --disable-pip-version-check fastapi==0.109.0 uvicorn==0.27.0
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
