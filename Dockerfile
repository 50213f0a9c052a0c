# The application image used by docker-compose.yml: the leo-activation console script and nothing else
# (no devstack extra: the stack runs in its own containers, and `dev` says what it would need).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY leo_activation ./leo_activation
COPY schemas ./schemas
COPY sql ./sql
RUN pip install . \
    && useradd --system --no-create-home --shell /usr/sbin/nologin leo

# The consumers need no privileges; PostgreSQL and Kafka run in their own containers.
USER leo
ENTRYPOINT ["leo-activation"]
CMD ["--help"]
