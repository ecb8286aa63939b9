"""HTTP/2 conformance: httpwg (a Rust port of h2spec, RFC 9113) against
crispd's TCP listener. Every case must pass unless httpwg_known_failures.toml
lists it with a reason."""

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import harness

KNOWN = Path(__file__).with_name("httpwg_known_failures.toml")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def known_failures():
    cases = tomllib.loads(KNOWN.read_text())["case"]
    for c in cases:
        assert c["reason"].strip(), c
    return {c["name"]: c for c in cases}


def parse(output):
    """(cases run in order, {name: passed?}, (passed, total) from the summary).

    With -v each case is announced before it runs; one that panics (some
    of httpwg's cases assert instead of returning an error) prints no
    result line, and counts as failed."""
    ran, results, summary = [], {}, None
    for line in output.splitlines():
        line = ANSI.sub("", line).strip()
        if m := re.match(r"🔷 Running test: (.*)", line):
            ran.append(m.group(1).strip())
        elif m := re.match(r"✅ Test passed: (.*)", line):
            results[m.group(1).strip()] = True
        elif m := re.match(r"❌ Test failed: (.*)", line):
            results[m.group(1).strip()] = False
        elif m := re.search(r"Passed (\d+)/(\d+) tests", line):
            summary = (int(m.group(1)), int(m.group(2)))
    return ran, {name: results.get(name, False) for name in ran}, summary


def test_httpwg_conformance(make_crispd):
    httpwg = shutil.which("httpwg") or str(Path.home() / ".cargo/bin/httpwg")
    assert Path(httpwg).exists(), "httpwg is missing: run scripts/install-test-deps"
    known = known_failures()
    d = make_crispd(tcp=True)  # started and accepting on TCP before httpwg runs
    env = dict(os.environ, SEQUENTIAL="1", RUST_LOG="warn", RUST_BACKTRACE="0")
    proc = subprocess.run(
        [httpwg, "-v", "-a", f"127.0.0.1:{d.tcp_port}",
         "--connect-timeout", "3000", "--frame-timeout", "500"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=900,
    )
    ran, outcome, summary = parse(proc.stdout)
    tail = "\n".join(proc.stdout.splitlines()[-40:])
    assert summary is not None, f"httpwg gave no summary (exit {proc.returncode}):\n{tail}"
    passed, total = summary
    assert total == len(ran) >= 100, (summary, len(ran))
    assert passed == sum(outcome.values()), (summary, sum(outcome.values()))

    failed = sorted(name for name, ok in outcome.items() if not ok)
    unexpected = [name for name in failed if name not in known]
    stale = [name for name in known if name not in outcome]
    fixed = sorted(n for n, c in known.items() if c["always"] and outcome.get(n))
    print(f"httpwg: {passed}/{total} passed; failed (all listed): {len(failed) - len(unexpected)}")
    for name in failed:
        print(f"  known: {name}" if name in known else f"  UNEXPECTED: {name}")
    if fixed:
        print("listed as always failing but passed (update the list?):", *fixed, sep="\n  ")
    assert not unexpected, "httpwg cases failed that are not in httpwg_known_failures.toml:\n" + "\n".join(unexpected)
    assert not stale, f"httpwg_known_failures.toml names cases httpwg did not run: {stale}"
    # crispd came through all of it.
    assert d.proc.poll() is None, d.stderr()
    with harness.RawH2(d.socket) as c:
        _, _, trailers = c.call(1)
        assert trailers["grpc-status"] == "0"
