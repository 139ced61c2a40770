# The code-location image: the client tools of every supported PostgreSQL major (13-17), MariaDB's client and
# mariabackup, restic, age, zstd, pgBackRest (installed by scripts/install_tools.sh, the script CI runs through
# scripts/setup.sh), and the project in a venv pinned by constraints.txt, run as a non-root user.
#   docker build -t registry.example.com/backup-pipelines:1.0.0 .
# Kubernetes runs it as the Helm chart's user-code deployment (deploy/helm/values.yaml) and as run/step pods.
FROM python:3.11-slim-bookworm

COPY scripts/install_tools.sh /tmp/install_tools.sh
RUN bash /tmp/install_tools.sh --image && rm /tmp/install_tools.sh

RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin backup \
    && mkdir -p /opt/dagster/dagster_home /opt/backup-pipelines \
    && chown backup: /opt/dagster/dagster_home

WORKDIR /opt/backup-pipelines
COPY pyproject.toml constraints.txt README.md ./
COPY backup_pipelines ./backup_pipelines
COPY assets ./assets
COPY resources ./resources
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt . \
    && /opt/venv/bin/python -c "import backup_pipelines.assemble, dagster_k8s, dagster_postgres, dagster_aws" \
    && /opt/venv/bin/python -m compileall -q backup_pipelines assets resources
COPY workspace.yaml ./

ENV PATH=/opt/venv/bin:$PATH \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    PYTHONDONTWRITEBYTECODE=1
USER 10001
EXPOSE 3030
CMD ["dagster", "api", "grpc", "--host", "0.0.0.0", "--port", "3030", "-m", "backup_pipelines.definitions"]
