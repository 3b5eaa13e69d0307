"""Write the Nginx config of the fleet from nginx/shenlun.conf.template.

    python scripts/nginx_conf.py                 # run/nginx/nginx.conf for the local fleet
    python scripts/nginx_conf.py --docker        # nginx/docker.conf for docker-compose
    python scripts/nginx_conf.py --stdout        # print instead of writing

The upstream list follows INSTANCES and BASE_PORT (server-n on BASE_PORT+n), the listen
port NGINX_PORT, the body limit MAX_BODY_BYTES and the read timeout REQUEST_TIMEOUT, all
read from the environment through core.config, so the balancer and the instances agree.
scripts/fleet.sh start runs this before starting or reloading Nginx.
"""
from __future__ import annotations

import argparse
import math
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

    @classmethod
    def local(cls, run_dir: Path, log_dir: Path, host: str, port: int) -> "Layout":
        prefix = run_dir / "nginx"
        return cls(listen=f"{host}:{port}", upstream_host="127.0.0.1",
                   pid_file=str(prefix / "nginx.pid"), error_log=str(log_dir / "nginx-error.log"),
                   access_log=str(log_dir / "nginx-access.log"), temp_dir=str(prefix / "tmp"))

    @classmethod
    def docker(cls) -> "Layout":
        # The official nginx image: logs to the container's stdout/stderr, state in /tmp.
        return cls(listen="8080", upstream_host="server-{n}", pid_file="/tmp/nginx.pid",
                   error_log="/dev/stderr", access_log="/dev/stdout", temp_dir="/tmp/nginx")


def upstream_servers(settings: Settings, host: str) -> list[str]:
    """`server host:port …;` for server-1..N on BASE_PORT+1..BASE_PORT+N."""
    return [f"        server {host.format(n=n)}:{settings.base_port + n} "
            f"max_fails={MAX_FAILS} fail_timeout={FAIL_TIMEOUT};  # server-{n}"
            for n in range(1, settings.instances + 1)]


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
        "instances": str(settings.instances),
        "max_body_bytes": str(settings.max_body_bytes),
        "read_timeout": str(read_timeout),
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
    parser.add_argument("--output", type=Path, help="file to write (default: RUN_DIR/nginx/nginx.conf, or nginx/docker.conf)")
    parser.add_argument("--stdout", action="store_true", help="print the config instead of writing it")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        if args.docker:
            layout, output = Layout.docker(), args.output or DOCKER_CONF
            note = "# GENERATED from nginx/shenlun.conf.template by `python scripts/nginx_conf.py --docker`\n# with INSTANCES=%d BASE_PORT=%d: regenerate after changing the template." % (
                settings.instances, settings.base_port)
        else:
            run_dir, log_dir = args.run_dir.resolve(), args.log_dir.resolve()
            layout = Layout.local(run_dir, log_dir, args.listen, settings.nginx_port)
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
