# routecast's server image (deploy/kubernetes/deployment.yaml runs it as routecast:0.1.0):
#   docker build -t routecast:0.1.0 .
#   docker run -p 8000:8000 -v $PWD/routecast.yaml:/etc/routecast/routecast.yaml:ro routecast:0.1.0
# The `scale` extra brings the PostgreSQL driver, the Redis client and prometheus-client.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir --prefix=/install '.[scale]'

FROM python:3.11-slim
COPY --from=build /install /usr/local
# A fixed non-root user (the Deployment's securityContext runs as 10001).
RUN groupadd --gid 10001 routecast \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin routecast
USER 10001:10001
WORKDIR /tmp
ENV PYTHONUNBUFFERED=1 ROUTECAST_CACHE=/tmp/routecast-cache
EXPOSE 8000
ENTRYPOINT ["routecast"]
CMD ["serve", "--config", "/etc/routecast/routecast.yaml", "--host", "0.0.0.0", "--port", "8000"]
