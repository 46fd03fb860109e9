# syntax=docker/dockerfile:1
# rolegate image: Node 24 runs the TypeScript sources directly; opa compiles the Rego
# policies to WebAssembly at start and on reload.
#   docker build -t rolegate .        (or: docker compose up --build)

ARG OPA_VERSION=v1.22.3

# ---- opa, built from source (static: no cgo, so it runs on any glibc/musl base) ----
FROM golang:1.26 AS opa
ARG OPA_VERSION
RUN CGO_ENABLED=0 go install -trimpath -ldflags='-s -w' github.com/open-policy-agent/opa@${OPA_VERSION} \
 && /go/bin/opa version

# ---- runtime ----
FROM node:24-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app

# Dependencies first, so that source edits keep this layer cached.
# --ignore-scripts: no dependency has an install script; keep it that way in the image.
# --omit=optional: the image has Node 24 already; the bundled runtime is for contributors' machines.
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund \
 && npm cache clean --force

COPY --from=opa /go/bin/opa /usr/local/bin/opa
COPY src ./src
COPY policies ./policies
# The input schemas every policy build is checked against (opa check --strict --schema).
COPY docs/policy-schema ./docs/policy-schema

USER node
# 6432: PostgreSQL clients; 9187: admin HTTP (/metrics /healthz /readyz /reload).
EXPOSE 6432 9187
# --liftoff-only: no TurboFan recompilation of the WebAssembly parser and
# policy, whose transient memory (~+550 MiB at first traffic) would kill a
# container sized for the steady state; cache misses cost ~25 % more
# (README "Memory").
CMD ["node", "--liftoff-only", "src/cli/main.ts", "start", "--config", "/etc/rolegate/rolegate.yaml"]
