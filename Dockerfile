# 申论助手 backend: one instance per container, `python server.py`, as each supervisord
# instance runs; the entry point first builds the knowledge base into an empty DATA_DIR.
# docker-compose.yml runs server-1..3 behind Nginx.
#   docker build -t shenlun-backend .
#   docker run -p 5001:5001 -v shenlun-data:/data shenlun-backend
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first (the list comes from setup.cfg, as scripts/bootstrap.sh installs it),
# so a code change does not reinstall them.
COPY setup.cfg ./
COPY scripts/deps.py scripts/
RUN python scripts/deps.py > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

COPY . .
# The project's bytecode, compiled once here: with PYTHONDONTWRITEBYTECODE (and /app not
# writable by the service) every container start would compile it again (~0.5 s).
RUN python -m compileall -q core handlers scripts server.py

# Not root: the service needs to write only DATA_DIR.
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin shenlun \
 && mkdir -p /data \
 && chown shenlun:shenlun /data
USER shenlun

# BIND_ADDRESS: a server started by hand listens on 127.0.0.1; in a container it must
# answer on the container's network interface.
ENV PORT=5001 \
    SERVER_ID=server-1 \
    BIND_ADDRESS=0.0.0.0 \
    DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 5001

HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '5001'), timeout=2)" || exit 1

# SIGTERM drains (up to SHUTDOWN_GRACE_SECONDS, 20 s): stop with a longer timeout, as
# docker-compose.yml does (stop_grace_period 30s) and supervisord does (stopwaitsecs 30).
STOPSIGNAL SIGTERM
# A fresh volume gets the bundled knowledge base (data/knowledge) before the server starts;
# arguments after the image name go to server.py.
ENTRYPOINT ["/app/scripts/docker-entrypoint.sh"]
