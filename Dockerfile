# kvsketch container image: a build stage that compiles the three binaries
# with the same scripts a developer uses, and a slim runtime stage with only
# their shared libraries. Build it with deploy/container/build.sh (podman, no
# registry needed) or `docker build -t kvsketch .` where a registry is there.
#
#   podman run -d -p 50051:50051 -p 9464:9464 -v kvsketch-data:/data kvsketch
#
# The server listens on 0.0.0.0 inside the container, writes a snapshot of
# every session to /data on SIGTERM and restores them at start.

FROM debian:bookworm AS build
WORKDIR /src
# The package list alone first, so the dependency layer is cached across
# source edits.
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN scripts/install-deps.sh --build-only && rm -rf /var/lib/apt/lists/*
COPY . .
# Binaries for the portable x86-64-v3 baseline (AVX2, FMA, F16C); no tests or
# benchmarks in the image.
RUN scripts/build.sh --type Release --dir /src/build/release \
      -DKVSKETCH_ARCH=x86-64-v3 \
      -DKVSKETCH_BUILD_TESTS=OFF -DKVSKETCH_BUILD_BENCHMARKS=OFF \
 && mkdir -p /out \
 && for b in kvsketch-server kvsketch kvsketch-loadgen; do \
      f="$(find /src/build/release -type f -name "$b" -perm -u+x | head -n1)"; \
      [ -n "$f" ] || { echo "binary $b was not built" >&2; exit 1; }; \
      install -m 0755 "$f" /out/; \
    done \
 && strip --strip-unneeded /out/*

FROM debian:bookworm AS runtime
COPY scripts/install-deps.sh /tmp/install-deps.sh
# No man pages, translations or docs (but the copyright files) from the
# packages installed here, as Debian's slim images do.
RUN printf '%s\n' 'path-exclude /usr/share/man/*' \
      'path-exclude /usr/share/locale/*/LC_MESSAGES/*.mo' \
      'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
      >/etc/dpkg/dpkg.cfg.d/90-kvsketch-slim \
 && /tmp/install-deps.sh --runtime \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /tmp/install-deps.sh \
 && useradd --system --uid 10001 --user-group --home-dir /data \
      --shell /usr/sbin/nologin kvsketch \
 && mkdir -p /data && chown kvsketch:kvsketch /data
COPY --from=build /out/ /usr/local/bin/
# Fail the image build, not the first start, if a shared library is missing.
RUN if ldd /usr/local/bin/kvsketch-server /usr/local/bin/kvsketch \
        /usr/local/bin/kvsketch-loadgen | grep 'not found'; then exit 1; fi

USER kvsketch
WORKDIR /data
VOLUME ["/data"]
EXPOSE 50051 9464
STOPSIGNAL SIGTERM
# `kvsketch health` calls grpc.health.v1.Health/Check; exit 0 when SERVING.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
  CMD ["kvsketch", "health", "--server=127.0.0.1:50051", "--timeout=2s"]
ENTRYPOINT ["kvsketch-server"]
# --drain_timeout below the engines' default 10 s stop grace period, so the
# snapshot to /data is written before a SIGKILL could come.
CMD ["--listen=0.0.0.0:50051", "--metrics_listen=0.0.0.0:9464", \
     "--data_dir=/data", "--drain_timeout=5s"]
