"""Write the Nginx config of the fleet from nginx/shenlun.conf.template.

    python scripts/nginx_conf.py                 # run/nginx/nginx.conf for the local fleet
    python scripts/nginx_conf.py --docker        # nginx/docker.conf for docker-compose
    python scripts/nginx_conf.py --stdout        # print instead of writing

The upstream list follows INSTANCES and BASE_PORT (server-n on BASE_PORT+n), the listen
port NGINX_PORT, the body limit MAX_BODY_BYTES and the read timeout REQUEST_TIMEOUT, all
read from the environment through core.config, so the balancer and the instances agree.
NGINX_METRICS_ALLOW (or --metrics-allow) lists the addresses or networks that may read
/metrics through Nginx, separated by spaces or commas (default: "127.0.0.1 ::1", this host
only; "all" opens it). scripts/fleet.sh start runs this before starting or reloading Nginx.
"""
from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.config import ConfigError, Settings  # noqa: E402

TEMPLATE = ROOT / "nginx" / "shenlun.conf.template"
DOCKER_CONF = ROOT / "nginx" / "docker.conf"
MAX_FAILS, FAIL_TIMEOUT = 3, "30s"
# Nginx may time out only after the instance would have answered 504 itself.
READ_TIMEOUT_MARGIN_SECONDS = 30
METRICS_ALLOW_DEFAULT = "127.0.0.1 ::1"


@dataclass(frozen=True)
class Layout:
    """Where the generated Nginx listens, writes and finds the instances."""

    listen: str
    upstream_host: str          # "127.0.0.1", or "server-{n}" for docker-compose services
    pid_file: str
    error_log: str
    access_log: str
    temp_dir: str
    worker_processes: str = "auto"
    metrics_allow: tuple[str, ...] = ("127.0.0.1", "::1")

    @classmethod
    def local(cls, run_dir: Path, log_dir: Path, host: str, port: int,
              metrics_allow: tuple[str, ...]) -> Layout:
        prefix = run_dir / "nginx"
        return cls(listen=f"{host}:{port}", upstream_host="127.0.0.1",
                   pid_file=str(prefix / "nginx.pid"), error_log=str(log_dir / "nginx-error.log"),
                   access_log=str(log_dir / "nginx-access.log"), temp_dir=str(prefix / "tmp"),
                   metrics_allow=metrics_allow)

    @classmethod
    def docker(cls, metrics_allow: tuple[str, ...]) -> Layout:
        # The official nginx image: logs to the container's stdout/stderr, state in /tmp,
        # which exists in every image (Nginx creates the temp folders in it, not their parent).
        return cls(listen="8080", upstream_host="server-{n}", pid_file="/tmp/nginx.pid",
                   error_log="/dev/stderr", access_log="/dev/stdout", temp_dir="/tmp",
                   metrics_allow=metrics_allow)


def parse_allow(raw: str) -> tuple[str, ...]:
    """NGINX_METRICS_ALLOW: addresses or networks separated by spaces or commas, or "all"."""
    words = tuple(raw.replace(",", " ").split())
    if words == ("all",):
        return words
    try:
        if not words:
            raise ValueError
        return tuple(str(ipaddress.ip_network(word, strict=False)) if "/" in word
                     else str(ipaddress.ip_address(word)) for word in words)
    except ValueError:
        raise ConfigError(f"NGINX_METRICS_ALLOW={raw!r}: must be IP addresses or networks "
                          f"(default \"{METRICS_ALLOW_DEFAULT}\": this host only), or \"all\"") from None


def upstream_servers(settings: Settings, host: str) -> list[str]:
    """`server host:port …;` for server-1..N on BASE_PORT+1..BASE_PORT+N, then each again
    as a backup that is never marked down (see the template)."""
    ports = [(n, f"{host.format(n=n)}:{settings.base_port + n}") for n in range(1, settings.instances + 1)]
    return ([f"        server {address} max_fails={MAX_FAILS} fail_timeout={FAIL_TIMEOUT};  # server-{n}"
             for n, address in ports]
            + [f"        server {address} backup max_fails=0;  # server-{n}, when all above are out"
               for n, address in ports])


def render(settings: Settings, layout: Layout, note: str, template: str | None = None) -> str:
    """The config text: the template with every {{field}} filled (an unknown field is an error)."""
    if settings.base_port + settings.instances > 65535:
        raise ConfigError(f"BASE_PORT={settings.base_port} + INSTANCES={settings.instances} is past port 65535")
    read_timeout = math.ceil(settings.request_timeout + settings.queue_timeout) + READ_TIMEOUT_MARGIN_SECONDS
    fields = {
        "generated_note": note,
        "worker_processes": layout.worker_processes,
        "pid_file": layout.pid_file,
        "error_log": layout.error_log,
        "access_log": layout.access_log,
        "temp_dir": layout.temp_dir,
        "listen": layout.listen,
        "upstream_servers": "\n".join(upstream_servers(settings, layout.upstream_host)),
        # Each instance can be tried twice: once as a primary, once as a backup.
        "next_upstream_tries": str(2 * settings.instances),
        "max_body_bytes": str(settings.max_body_bytes),
        "read_timeout": str(read_timeout),
        "metrics_allow": "\n".join(f"            allow {address};" for address in layout.metrics_allow),
    }
    text = TEMPLATE.read_text(encoding="utf-8") if template is None else template
    text = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("##"))

    def fill(match: re.Match[str]) -> str:
        return fields[match.group(1)]

    return re.sub(r"\{\{\s*(\w+)\s*\}\}", fill, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docker", action="store_true", help=f"write {DOCKER_CONF.relative_to(ROOT)} for docker-compose")
    parser.add_argument("--run-dir", type=Path, default=ROOT / "run", help="pid and temp files go under RUN_DIR/nginx (default: run/)")
    parser.add_argument("--log-dir", type=Path, default=ROOT / "logs", help="nginx-access.log and nginx-error.log (default: logs/)")
    parser.add_argument("--listen", default="127.0.0.1", metavar="ADDR",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    parser.add_argument("--metrics-allow", default=os.environ.get("NGINX_METRICS_ALLOW", METRICS_ALLOW_DEFAULT),
                        metavar="ADDRS", help="who may read /metrics (default: $NGINX_METRICS_ALLOW, "
                        f"else \"{METRICS_ALLOW_DEFAULT}\")")
    parser.add_argument("--output", type=Path, help="file to write (default: RUN_DIR/nginx/nginx.conf, or nginx/docker.conf)")
    parser.add_argument("--stdout", action="store_true", help="print the config instead of writing it")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        allow = parse_allow(args.metrics_allow)
        if args.docker:
            layout, output = Layout.docker(allow), args.output or DOCKER_CONF
            note = ("# GENERATED from nginx/shenlun.conf.template by `python scripts/nginx_conf.py --docker`\n"
                    f"# with INSTANCES={settings.instances} BASE_PORT={settings.base_port}: "
                    "regenerate after changing the template.")
        else:
            run_dir, log_dir = args.run_dir.resolve(), args.log_dir.resolve()
            layout = Layout.local(run_dir, log_dir, args.listen, settings.nginx_port, allow)
            output = args.output or run_dir / "nginx" / "nginx.conf"
            note = "# GENERATED from nginx/shenlun.conf.template by scripts/nginx_conf.py (scripts/fleet.sh start)."
        text = render(settings, layout, note)
    except ConfigError as exc:
        print(f"配置错误 / configuration error: {exc}", file=sys.stderr)
        return 2
    if args.stdout:
        sys.stdout.write(text)
        return 0
    if not args.docker:
        for folder in (Path(layout.temp_dir), Path(layout.error_log).parent, output.parent):
            folder.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
