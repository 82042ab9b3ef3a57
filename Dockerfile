# One image for every counterd service of docker-compose.yml (regions, coordinator,
# gateway, strong): Debian 12 with Debian's packages only, built with cmake, the binary in
# /usr/local/bin and the Lua policies and the dashboard in /usr/local/share/counterd. The
# role comes from the environment (COUNTERD_ROLE, REGION, SERVICE_PORT, ...) or the flags
# given as the command. Nothing is downloaded at build time except Debian packages.

FROM debian:12 AS build
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends build-essential cmake pkg-config \
      libevent-dev libhttp-parser-dev libcurl4-openssl-dev libluajit2-5.1-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY core/ core/
COPY lua/ lua/
COPY web/ web/
# The image carries no tests and no sanitizer build; the compiled-in defaults of
# COUNTERD_LUA_DIR and COUNTERD_WEB_DIR point where `cmake --install` puts them.
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOUNTERD_SANITIZERS=OFF \
      -DCOUNTERD_TESTS=OFF -DCOUNTERD_LUA_DIR=/usr/local/share/counterd/lua \
      -DCOUNTERD_WEB_DIR=/usr/local/share/counterd/web \
 && cmake --build build -j"$(nproc)" \
 && DESTDIR=/out cmake --install build --prefix /usr/local --strip

FROM debian:12
ARG DEBIAN_FRONTEND=noninteractive
# Run-time libraries of the binary, and curl for the health checks.
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends libevent-core-2.1-7 libhttp-parser2.9 \
      libcurl4 libluajit2-5.1-2 curl ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/usr/local/ /usr/local/
# A named volume mounted on /data starts with this directory's owner, so the unprivileged
# user can write each node's log and snapshots there.
RUN useradd --system --home-dir /data --shell /usr/sbin/nologin counterd \
 && mkdir -p /data && chown counterd:counterd /data
USER counterd
WORKDIR /data
# Containers are reached through their network address, not loopback.
ENV COUNTERD_BIND=0.0.0.0
EXPOSE 8000 8001 8002 8003 8004 8080
HEALTHCHECK --interval=5s --timeout=2s --start-period=5s --retries=5 \
  CMD curl -fsS "http://127.0.0.1:${SERVICE_PORT:-8000}/health" > /dev/null || exit 1
ENTRYPOINT ["/usr/local/bin/counterd"]
