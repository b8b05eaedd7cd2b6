# tritonops for a Kubernetes CronJob or a cron host: `tritonops reconcile --region R`.
# No credentials are baked in: mount a config at /etc/tritonops/tritonops.yaml and let boto3
# find credentials (IRSA / instance role / environment).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TRITONOPS_CONFIG=/etc/tritonops/tritonops.yaml

WORKDIR /app
COPY pyproject.toml README.md ./
COPY tritonops ./tritonops
RUN pip install . \
    && useradd --create-home --uid 10001 tritonops \
    && mkdir -p /var/lib/tritonops && chown tritonops /var/lib/tritonops

USER 10001
WORKDIR /var/lib/tritonops
ENTRYPOINT ["tritonops"]
CMD ["--help"]
