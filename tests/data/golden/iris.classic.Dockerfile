# Rendered by mreg from the spec of model iris-rf. Do not edit: change registry.toml instead.

FROM --platform=linux/amd64 python:3.11-slim-bookworm AS base
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    UV_LINK_MODE=copy
RUN python3 -c 'import sys; v = "%d.%d" % sys.version_info[:2]; sys.exit(0 if v == "3.11" else "the base image has Python " + v + ", the spec asks for 3.11")' \
    && python3 -m venv "$VIRTUAL_ENV"
COPY ["requirements/base.txt", "/tmp/mreg/base.txt"]
RUN pip install --no-cache-dir --disable-pip-version-check --require-hashes --no-deps -r /tmp/mreg/base.txt
WORKDIR /app

FROM base AS train
COPY ["requirements/train.txt", "/tmp/mreg/train.txt"]
RUN pip install --no-cache-dir --disable-pip-version-check --require-hashes --no-deps -r /tmp/mreg/train.txt
COPY ["stages/train/train.py", "/app/train.py"]
CMD ["python", "train.py", "--out", "/out/model.joblib"]
LABEL "io.mreg.model"="iris-rf" \
      "io.mreg.packages"="[\"joblib==1.3.2\", \"numpy==1.26.4\", \"pandas==2.1.4\", \"python-dateutil==4.0.0\", \"pytz==2026.6\", \"scikit-learn==1.3.2\", \"scipy==1.11.4\", \"threadpoolctl==3.8.0\", \"tzdata==2026.6\"]" \
      "io.mreg.python"="3.11" \
      "io.mreg.stage"="train" \
      "org.opencontainers.image.base.name"="python:3.11-slim-bookworm" \
      "org.opencontainers.image.description"="train image of model iris-rf, built by mreg" \
      "org.opencontainers.image.title"="iris-rf-train" \
      "team"="ml-platform"

FROM base AS serve
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/*
COPY ["requirements/serve.txt", "/tmp/mreg/serve.txt"]
RUN pip install --no-cache-dir --disable-pip-version-check --require-hashes --no-deps -r /tmp/mreg/serve.txt
COPY ["stages/serve/serve.py", "/app/serve.py"]
CMD ["python", "serve.py"]
LABEL "io.mreg.model"="iris-rf" \
      "io.mreg.packages"="[\"annotated-types==0.8.0\", \"anyio==4.16.0\", \"click==8.5.1\", \"fastapi==0.109.0\", \"h11==0.16.0\", \"idna==3.20\", \"joblib==1.3.2\", \"numpy==1.26.4\", \"pydantic==2.14.4\", \"pydantic-core==2.50.5\", \"scikit-learn==1.3.2\", \"scipy==1.11.4\", \"starlette==0.35.1\", \"threadpoolctl==3.8.0\", \"typing-extensions==4.16.0\", \"typing-inspection==0.4.5\", \"uvicorn==0.27.0\"]" \
      "io.mreg.python"="3.11" \
      "io.mreg.stage"="serve" \
      "org.opencontainers.image.base.name"="python:3.11-slim-bookworm" \
      "org.opencontainers.image.description"="serve image of model iris-rf, built by mreg" \
      "org.opencontainers.image.title"="iris-rf-serve" \
      "team"="ml-platform"
