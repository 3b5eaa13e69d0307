"""Profile the service's hot paths with py-spy while a load runs; print where the time goes.

    python bench/profile_hot_paths.py [--path hit|hit_noknowledge|miss|search|bare] [--seconds 8]

Starts the fake upstream and one server (bundled knowledge), drives the chosen path with
the same load generator as the benchmarks, samples the server with `py-spy record`
(installed into the venv on first use: `pip install py-spy`), and prints the functions
with the most samples, inclusive and self, from the collapsed stacks. The raw profile is
kept in bench/results/profile-<path>.txt (collapsed format; speedscope/flamegraph read it).
`--path bare` samples bench/bare_server.py answering the cache hit's answer instead: the
reference a hit's profile is read against.
"""
from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

common.ensure_venv()
import loadgen  # noqa: E402

PATHS = ("hit", "hit_noknowledge", "miss", "search", "bare")


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=True, timeout=300)
    return found


def target_for(path: str, url: str) -> loadgen.Target:
    if path == "search":
        return loadgen.Target(url + "/api/knowledge/search?q=%E4%B9%A1%E6%9D%91%E6%8C%AF%E5%85%B4")
    body = {"message": "乡村振兴类材料的归纳概括题怎么答？" + ("{n}" if path == "miss" else ""),
            "mode": "summarize", "use_knowledge": path in ("hit", "bare")}
    return loadgen.Target(url + "/api/chat", "POST", json.dumps(body, ensure_ascii=False),
                          unique=path == "miss")


def summarize(collapsed: Path, top: int = 25) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[_short(frame)] += n
        own[_short(frames[-1])] += n
    out = [f"{total} samples"]
    out.append("-- inclusive --")
    out += [f"{100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    out.append("-- self --")
    out += [f"{100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    return "\n".join(out)


def _short(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py)" so lines of one function add up
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit(":", 1)[0]
    parts = Path(file).parts
    return f"{name} ({'/'.join(parts[-2:])})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--path", choices=PATHS, default="hit")
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=32)
    args = ap.parse_args(argv)
    spy = py_spy()
    work = common.tmpdir()
    logs = work / "logs"
    logs.mkdir()
    upstream = common.start_upstream(log_dir=logs)
    server = common.start_server(common.fresh_data_dir(work, "data", common.knowledge_template(work)),
                                 upstream=upstream.base_url, log_dir=logs, MAX_CONCURRENT_REQUESTS=100)
    target = target_for(args.path, server.url)
    if args.path.startswith("hit") or args.path == "bare":
        hit = common.prime_cache(server.url, "/api/chat", target.body)
    if args.path == "bare":
        server.stop()
        server = common.start_bare(hit, log_dir=logs)
        target = target_for(args.path, server.url)
    common.RESULTS.mkdir(exist_ok=True)
    out = common.RESULTS / f"profile-{args.path}.txt"
    spy_proc = common.Proc("py-spy", [spy, "record", "--pid", str(server.proc.pid), "--duration",
                                      str(args.seconds), "--rate", "250", "--format", "raw",
                                      "--threads", "--output", str(out)], log_dir=logs)
    res = loadgen.run(target, concurrency=args.concurrency, duration=args.seconds + 1, warmup=0.5)
    spy_proc.proc.wait(args.seconds + 30)
    server.stop()
    upstream.stop()
    print(f"load while sampled: {res.as_dict()}")
    if not out.exists():
        print(f"py-spy wrote nothing: {spy_proc.log()}")
        return 1
    print(summarize(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
