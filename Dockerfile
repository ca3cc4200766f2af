# One image for web, workers and beat; the process is chosen by the compose command.
# GPU hosts build with --build-arg EXTRAS=gpu,postgres (tensorflow[and-cuda]).
FROM python:3.11-slim
ARG EXTRAS=cpu,postgres
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 SCANQ_DATA_DIR=/data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY scanq scanq
COPY web web
COPY worker worker
COPY db db
COPY models models
COPY cli cli
RUN pip install --no-cache-dir ".[${EXTRAS}]" \
    && useradd --create-home --uid 1000 scanq && mkdir -p /data && chown scanq /data
USER scanq
EXPOSE 5000
CMD ["scanq", "web", "--host", "0.0.0.0"]
