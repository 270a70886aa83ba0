# syntax=docker/dockerfile:1
#
# mission-gateway container image.
#
#   docker build -t mission-gateway .
#   docker run --read-only -p 8080:8080 \
#     -v "$PWD/config.yaml:/etc/mission-gateway/config.yaml:ro" \
#     -v "$PWD/keys:/etc/mission-gateway/keys:ro" mission-gateway
#
# Three stages: `build` compiles TypeScript with every dependency, `deps` installs production
# dependencies only, and the runtime stage gets dist/ and that production node_modules, nothing else.
# Pin NODE_IMAGE to a digest (node:24-slim@sha256:…) in your own pipeline for reproducible builds.
ARG NODE_IMAGE=node:24-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` runs tsc, and the sources are not copied yet.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npm run build

FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

FROM ${NODE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="mission-gateway" \
      org.opencontainers.image.description="Reverse proxy that enforces Missions (DPoP, RFC 9068 tokens, Mission state, authority) in front of HTTP APIs and MCP servers" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV NODE_ENV=production \
    MISSION_GATEWAY_CONFIG=/etc/mission-gateway/config.yaml
WORKDIR /app
# Owned by root and read-only to the process: the image runs with a read-only root filesystem.
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
# Config (a ConfigMap or bind mount) at /etc/mission-gateway/config.yaml, keys (Secrets) under
# /etc/mission-gateway/keys. Evidence goes to stdout unless the config names a file on a volume.
# `mission-gateway` on PATH for the other verbs: docker exec / kubectl exec … mission-gateway check.
RUN mkdir -p /etc/mission-gateway/keys && chmod 0755 /etc/mission-gateway /etc/mission-gateway/keys \
    && ln -s /app/dist/cli.js /usr/local/bin/mission-gateway
USER node
EXPOSE 8080 9090
# node, not curl (slim has no curl). The admin listener must accept 127.0.0.1 (admin.host 127.0.0.1
# or 0.0.0.0); set admin.port 9090 or adjust this line.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9090/healthz',{signal:AbortSignal.timeout(2000)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# Exec form, no shell in between: node is PID 1 and receives SIGTERM itself; the gateway stops
# accepting, drains in-flight requests for shutdown_grace_s and exits 0. SIGHUP reloads the config.
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "dist/cli.js"]
CMD ["--config", "/etc/mission-gateway/config.yaml"]
