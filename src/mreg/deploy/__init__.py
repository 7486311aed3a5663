"""Deployment manifests for one registered version: Kubernetes (ConfigMap, Deployment, Service) and KServe
(ConfigMap, InferenceService).

The pod follows mreg's serving contract: an init container of the serve image (pinned by digest) runs
`_fetch.py`, which downloads the model from S3 into an `emptyDir` volume and checks it against the record's
SHA-256; only then does the server container start, with the volume mounted read-only at `/mnt/models` and
`MREG_MODEL_PATH`, `MREG_MODEL_SHA256`, `MREG_MODEL_NAME`, `MREG_MODEL_VERSION` and `PORT` in its environment.
"""
