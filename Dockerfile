# syntax=docker/dockerfile:1
#
# The flowgate agent image: `docker build -t flowgate .` from the repo root.
# deploy/compose/compose.yaml builds it; deploy/kubernetes/ runs it as a DaemonSet.
#
# Two stages:
#   build    Debian's clang and libbpf-dev compile the BPF objects (make -C
#            datapath), node-gyp the addon over libbpf, tsc the agent into dist/;
#            then the dev dependencies (tsc, tsx, eslint) are pruned.
#   runtime  node on bookworm-slim with the three shared libraries the addon
#            links (binding.gyp: -lbpf -lelf -lz) and only what the agent opens
#            at run time, laid out as in a checkout, because it finds its parts
#            relative to itself: dist/ (bin/flowgate.js prefers it to tsx),
#            native/build/Release/flowgate_native.node and
#            datapath/build/flowgate.bpf.o (native/index.ts), schema/ and
#            package.json (control/store/migrate.ts, control/api/version.ts).
#
# Both stages are the same Debian release (bookworm), so the addon built
# against libbpf-dev 1.1 loads the runtime's libbpf1, and the same Node major,
# for node-gyp's headers.

ARG NODE_MAJOR=20

FROM node:${NODE_MAJOR}-bookworm AS build
# The Debian packages of scripts/install-deps.sh that the build needs (bpftool,
# iproute2, trafgen and clang-format are for tests and lint only).
RUN apt-get update \
	&& DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
		clang llvm libbpf-dev libelf-dev zlib1g-dev pkg-config make g++ python3 \
	&& rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the lock file changes.
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY bin/ bin/
COPY datapath/ datapath/
COPY native/ native/
COPY control/ control/
COPY schema/ schema/
# node-gyp: the image's own Node headers (the tarball Node ships them), not a
# download from nodejs.org.
ENV npm_config_nodedir=/usr/local
RUN npm run build
RUN npm prune --omit=dev --no-audit --no-fund

FROM node:${NODE_MAJOR}-bookworm-slim AS runtime
RUN apt-get update \
	&& DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
		libbpf1 libelf1 zlib1g \
	&& rm -rf /var/lib/apt/lists/*
WORKDIR /opt/flowgate
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules/ node_modules/
COPY --from=build /src/bin/flowgate.js bin/
COPY --from=build /src/dist/control/ dist/control/
COPY --from=build /src/dist/native/ dist/native/
COPY --from=build /src/native/build/Release/flowgate_native.node native/build/Release/
COPY --from=build /src/datapath/build/flowgate.bpf.o datapath/build/
COPY --from=build /src/schema/ schema/
# --store's default, so a volume mounted there starts out owned by root, 0750
# (flows and rules are sensitive).
RUN install -d -m 0750 /var/lib/flowgate
ENV NODE_ENV=production

# Root, on purpose. The agent needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON
# (deploy/systemd/flowgate.service says why each). Docker's --cap-add and a
# Kubernetes securityContext give added capabilities to a container's root
# only: a non-root user gets none of them, as neither sets ambient
# capabilities, and file capabilities on the node binary would make every node
# in the image privileged and are voided by no-new-privileges. So run as root
# with every other capability dropped (cap_drop: ALL and the three added: see
# deploy/compose/compose.yaml and deploy/kubernetes/daemonset.yaml), a
# read-only root file system, and no new privileges.
USER root

# The agent stops cleanly on SIGTERM (a final drain and flush) by itself, also
# as PID 1: no init process is needed.
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "/opt/flowgate/bin/flowgate.js"]
CMD ["run", "--help"]
