"""What one proxied call costs the mreg process, in instructions (`scripts/bench-peers
--instructions N`).

CPU time per call is noisy on a shared 2-core machine (other services, PostgreSQL, the load
generator all compete). Instructions are not: callgrind counts them, and the same binary given
the same calls executes nearly the same number whatever else the machine does. Each mreg target
(mreg-off, mreg-noaudit, mreg-on) runs under `valgrind --tool=callgrind` with instrumentation
off while it starts; after the warm-up calls, counting is switched on (`callgrind_control -i
on`), N sequential `tools/call`s are made in one keep-alive session, and the counts are dumped
(`callgrind_control -d`). Instructions per call = the dump's total / N: every thread of the
process (the request's, the audit writer's, the database client's) counts, since that is what
the call costs the gateway. The database server (PostgreSQL) is another process and is not
counted here; with `--database sqlite` the embedded database's work is.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def wrapper(out_dir: Path) -> list[str]:
    """The argv prefix that starts mreg under callgrind, counting nothing until asked."""
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={out_dir}/callgrind.out"]


def control(pid: int, *flags: str) -> None:
    done = subprocess.run(["callgrind_control", *flags, str(pid)], capture_output=True, text=True,
                          timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"callgrind_control {' '.join(flags)} {pid}: {done.stderr or done.stdout}")


def dumped_total(out_dir: Path, before: set[Path], timeout: float = 120) -> int:
    """The instruction total of the dump that appeared in `out_dir` since `before`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in sorted(set(out_dir.glob("callgrind.out*")) - before):
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith(("totals:", "summary:")):
                    return int(line.split()[1])
        time.sleep(0.2)
    raise RuntimeError(f"no callgrind dump appeared in {out_dir}")


def measure(bench, session_class, upstream: str, targets: dict[str, str], calls: int,
            warmup: int) -> dict[str, dict]:
    """Instructions per call of each mreg target in `targets` (label -> URL)."""
    results = {}
    for label, url in targets.items():
        instance = bench.mreg[label]
        pid, out_dir = instance["pid"], Path(instance["callgrind_dir"])
        session = session_class(bench.http, url, bench.auth(label))
        try:
            for _ in range(warmup):
                session.call(timeout=120)
            before = set(out_dir.glob("callgrind.out*"))
            control(pid, "--instr=on")
            started = time.monotonic()
            for _ in range(calls):
                session.call(timeout=120)
            elapsed = time.monotonic() - started
            control(pid, "--dump=measured")
            total = dumped_total(out_dir, before)
            control(pid, "--instr=off")
        finally:
            session.close()
        results[label] = {"calls": calls, "instructions": total,
                          "per_call": round(total / calls), "seconds_under_callgrind":
                          round(elapsed, 1)}
        bench.log(f"{upstream} -> {label}: {total / calls:,.0f} instructions per call "
                  f"({calls} calls, {elapsed:.1f} s under callgrind)")
    return results


def report(results: dict[str, dict]) -> list[str]:
    """Lines for the summary: per call, and each target against chain-off."""
    lines = []
    off = results.get("mreg-off", {}).get("per_call")
    for label in ("mreg-off", "mreg-noaudit", "mreg-on"):
        if label not in results:
            continue
        per_call = results[label]["per_call"]
        ratio = f", {per_call / off:.3f}x chain-off" if off and label != "mreg-off" else ""
        lines.append(f"  {label:<13} {per_call:>12,} instructions per call{ratio}")
    if off and "mreg-on" in results and "mreg-noaudit" in results:
        on, noaudit = results["mreg-on"]["per_call"], results["mreg-noaudit"]["per_call"]
        if on > off:
            lines.append(f"  the audit row: {on - noaudit:,} instructions per call, "
                         f"{(on - noaudit) / (on - off):.0%} of the chain's {on - off:,}")
    return lines
