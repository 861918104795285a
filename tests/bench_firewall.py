"""Benchmarks of deploy/callpass-fw against real nftables, in a throw-away network namespace.

Figures, in seconds (each a median of several runs unless said otherwise):
- `callpass-fw allow MAC 3600` and `callpass-fw revoke MAC` with 100 and with 100,000 MACs in the
  set: a change must not cost more because many guests are online (bar: at 100,000 at most twice
  the time at 100);
- `callpass-fw list` with 100,000 MACs (bar: at most 1 s), next to a bare `nft -j list set`, the
  floor any script reading the set through nft stands on;
- one `callpass-fw apply` of 100,000 allow lines (how the set is filled; one run);
- the anchor: one `nft add element` from the command line, at both sizes.
Every command runs through `ip netns exec`, which adds the same few milliseconds to each figure.

Needs root (network namespaces, nftables). Alone: `.venv/bin/python tests/bench_firewall.py`;
tests/benchmarks.py can import `measure` and `check_bars`.
"""

import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import netns

SCRIPT = str(Path(__file__).resolve().parent.parent / "deploy" / "callpass-fw")
SMALL = 100
BIG = 100_000
LIST_BAR_SECONDS = 1.0
CHANGE_BAR_RATIO = 2.0


class BenchError(RuntimeError):
    """A command of the benchmark failed; the message has its stderr."""


@contextmanager
def firewall_namespace():
    """A fresh namespace with a LAN interface and `callpass-fw up` done, deleted afterwards.

    Yields run(*argv, input=None) -> stdout, which runs argv in the namespace and raises
    BenchError when it fails.
    """
    with netns.Namespace("fwbench") as namespace:
        def run(*argv, input=None):
            done = namespace.run(*argv, input=input, timeout=300)
            if done.returncode != 0:
                raise BenchError(f"{' '.join(map(str, argv))}: exit {done.returncode}: "
                                 f"{done.stderr.strip()}")
            return done.stdout

        # An empty bridge as the LAN: every kernel with namespaces has bridges (not always dummy).
        run("ip", "link", "add", "lan0", "type", "bridge")
        run("ip", "link", "set", "lan0", "up")
        run(SCRIPT, "up", "--lan", "lan0", "--portal-port", "2050")
        yield run


def timed(run, *argv, input=None):
    """Seconds one run of argv takes."""
    started = time.perf_counter()
    run(*argv, input=input)
    return time.perf_counter() - started


def macs(count, first=0, byte=0x10):
    """count distinct locally administered MACs, numbered from first."""
    return [f"02:{byte:02x}:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"
            for i in range(first, first + count)]


def fill(run, count, first=0):
    """Seconds of one `callpass-fw apply` adding count MACs (3600 s each) to the set."""
    lines = "".join(f"allow {mac} 3600\n" for mac in macs(count, first))
    return timed(run, SCRIPT, "apply", input=lines)


def allow_and_revoke(run, repeats):
    """Median seconds of `allow MAC 3600` and of `revoke MAC`, each MAC allowed then revoked (so
    the set keeps its size)."""
    allow, revoke = [], []
    for mac in macs(repeats, byte=0x20):
        allow.append(timed(run, SCRIPT, "allow", mac, "3600"))
        revoke.append(timed(run, SCRIPT, "revoke", mac))
    return statistics.median(allow), statistics.median(revoke)


def list_seconds(run, expected_count, repeats):
    """Median seconds of `callpass-fw list`; checks that it lists expected_count MACs."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        answer = run(SCRIPT, "list")
        times.append(time.perf_counter() - started)
        listed = answer.count('"mac"')
        if listed != expected_count:
            raise BenchError(f"list gave {listed} MACs, not {expected_count}")
    return statistics.median(times)


def nft_list_seconds(run, repeats):
    """Median seconds of a bare `nft -j list set inet callpass allowed`."""
    return statistics.median(timed(run, "nft", "-j", "list", "set", "inet", "callpass", "allowed")
                             for _ in range(repeats))


def anchor_seconds(run, repeats):
    """Median seconds of one `nft add element` (a new MAC, with a timeout) from the command line."""
    return statistics.median(
        timed(run, "nft", "add", "element", "inet", "callpass", "allowed",
              f"{{ {mac} timeout 3600s }}")
        for mac in macs(repeats, byte=0x30))


def measure(repeats=15, list_repeats=3):
    """All figures, in seconds, as a dict (see the module docstring); needs root."""
    figures = {}
    with firewall_namespace() as run:
        fill(run, SMALL)
        figures["allow_100"], figures["revoke_100"] = allow_and_revoke(run, repeats)
        figures["anchor_100"] = anchor_seconds(run, repeats)
        run("nft", "flush", "set", "inet", "callpass", "allowed")

        figures["apply_100000"] = fill(run, BIG)
        figures["allow_100000"], figures["revoke_100000"] = allow_and_revoke(run, repeats)
        figures["list_100000"] = list_seconds(run, BIG, list_repeats)
        figures["nft_list_100000"] = nft_list_seconds(run, list_repeats)
        figures["anchor_100000"] = anchor_seconds(run, repeats)
    return figures


def check_bars(figures):
    """[(what, is_met)] for the bars: changes at 100,000 within twice those at 100; list ≤ 1 s."""
    return [
        (f"allow at {BIG:,} <= {CHANGE_BAR_RATIO:g} x at {SMALL}",
         figures["allow_100000"] <= CHANGE_BAR_RATIO * figures["allow_100"]),
        (f"revoke at {BIG:,} <= {CHANGE_BAR_RATIO:g} x at {SMALL}",
         figures["revoke_100000"] <= CHANGE_BAR_RATIO * figures["revoke_100"]),
        (f"list at {BIG:,} <= {LIST_BAR_SECONDS:g} s",
         figures["list_100000"] <= LIST_BAR_SECONDS),
    ]


def main():
    """Print every figure and whether each bar is met; exit 1 when one is not."""
    if reason := netns.requirements_missing():
        print(f"bench_firewall: cannot run: {reason}", file=sys.stderr)
        return 2
    netns.cleanup_stale()
    figures = measure()
    labels = {
        "allow_100": f"callpass-fw allow, {SMALL} MACs in the set",
        "revoke_100": f"callpass-fw revoke, {SMALL} MACs in the set",
        "anchor_100": f"nft add element (anchor), {SMALL} MACs in the set",
        "apply_100000": f"callpass-fw apply of {BIG:,} allow lines (one run)",
        "allow_100000": f"callpass-fw allow, {BIG:,} MACs in the set",
        "revoke_100000": f"callpass-fw revoke, {BIG:,} MACs in the set",
        "list_100000": f"callpass-fw list, {BIG:,} MACs",
        "nft_list_100000": f"nft -j list set (what list reads), {BIG:,} MACs",
        "anchor_100000": f"nft add element (anchor), {BIG:,} MACs in the set",
    }
    for key, label in labels.items():
        print(f"{label:<58} {figures[key] * 1000:9.1f} ms")
    all_met = True
    for what, is_met in check_bars(figures):
        print(f"bar: {what}: {'met' if is_met else 'NOT MET'}")
        all_met = all_met and is_met
    return 0 if all_met else 1


if __name__ == "__main__":
    sys.exit(main())
