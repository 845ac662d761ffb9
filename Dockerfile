# cutover in a container: a small image, a non-root user, the database and logs on a volume.
#   docker build -t cutover .
#   docker run --env-file .env -v cutover-data:/data -v "$PWD/cutover.toml:/config/cutover.toml:ro" cutover
# scripts/docker-smoke builds and runs it; tests/test_deploy.py runs these install and start steps in a fresh
# virtual environment, so the image's steps are tested where Docker is not available.

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY commands ./commands
RUN python -m venv /opt/cutover && /opt/cutover/bin/pip install --no-cache-dir --disable-pip-version-check .

FROM python:3.12-slim
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin cutover \
    && mkdir -p /data /config && chown cutover:cutover /data
COPY --from=build /opt/cutover /opt/cutover
ENV PATH=/opt/cutover/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CUTOVER_DB=/data/cutover.db \
    CUTOVER_PLAN=/config/cutover.toml
# The SQLite database (state and the audit log) and the full stage logs beside it: keep this volume.
VOLUME ["/data"]
WORKDIR /data
USER cutover
# HTTP mode (`run --http --port 3000`) listens here; Socket Mode needs no port.
EXPOSE 3000
# Ready: Slack takes the token, the database takes a write, the scheduler runs (the bot writes this every 15 s).
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 CMD ["cutover", "status"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["cutover"]
CMD ["run"]
