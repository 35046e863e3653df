#!/usr/bin/env python3
"""Turns posenc_bench JSON reports into the README's speed table: medians of the repetitions,
each kernel as a ratio to the probe it is bounded by, all from the same run.

    build/bin/posenc_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
        --benchmark_format=json --benchmark_out=bench.json --benchmark_out_format=json
    python3 bench/speed_table.py bench.json          # ratios of medians
    python3 bench/speed_table.py bench.json min      # ratios of the fastest repetitions
    python3 bench/speed_table.py run*.json           # several runs: each ratio taken within its
                                                     # run, then their median and range
"""
import json
import statistics
import sys

# (benchmark, bound it is compared with, counter, target ratio)
ROWS = [
    ("probe/inplace_update_twin/64MiB", "probe/inplace_update/64MiB", "bytes_per_second", None),
    ("rope/half/L4096_H32_D128", "probe/inplace_update/64MiB", "bytes_per_second", 0.90),
    ("rope/interleaved/L4096_H32_D128", "probe/inplace_update/64MiB", "bytes_per_second", 0.90),
    ("rope_tablefree/half/L4096_H32_D128", "probe/inplace_update/64MiB", "bytes_per_second", 0.80),
    ("rope_tablefree/interleaved/L4096_H32_D128", "probe/inplace_update/64MiB", "bytes_per_second", 0.80),
    ("rope_reference/half/L4096_H32_D128", "probe/inplace_update/64MiB", "bytes_per_second", None),
    ("rope_incache/half/L8_H32_D128", "probe/inplace_update/128KiB", "bytes_per_second", None),
    ("rope_incache/interleaved/L8_H32_D128", "probe/inplace_update/128KiB", "bytes_per_second", None),
    ("rope_into/half/L4096_H32_D128", "probe/copy_update_nt/64MiB", "bytes_per_second", None),
    ("rope_into/interleaved/L4096_H32_D128", "probe/copy_update_nt/64MiB", "bytes_per_second", None),
    ("probe/copy_update_nt/64MiB", "probe/copy_update/64MiB", "bytes_per_second", None),
    ("rope_into_read/half/L1024_H32_D128", "rope_into_read/half_plain_stores/L1024_H32_D128", "bytes_per_second", None),
    ("rope_into_read_cold/half/L1024_H32_D128", "rope_into_read_cold/half_plain_stores/L1024_H32_D128",
     "bytes_per_second", None),
    ("attention/causal/none/L2048_H1_D128", "probe/fma_peak", "FLOPS", 0.60),
    ("attention/causal/alibi/L2048_H1_D128", "attention/causal/none/L2048_H1_D128", "FLOPS", 0.95),
    ("attention/causal/t5/L2048_H1_D128", "attention/causal/none/L2048_H1_D128", "FLOPS", 0.95),
    ("attention/causal/rope/L2048_H1_D128", "attention/causal/none/L2048_H1_D128", "FLOPS", 0.95),
    ("attention/causal/rope_tablefree/L2048_H1_D128", "attention/causal/none/L2048_H1_D128", "FLOPS", None),
    ("attention/causal/alibi/L16384_H1_D128", "probe/fma_peak", "FLOPS", None),
    ("attention/causal/t5/L16384_H1_D128", "probe/fma_peak", "FLOPS", None),
    ("decode/none/Lk4096_H32_KV8_D128", "probe/read/64MiB", "bytes_per_second", 0.70),
    ("decode/alibi/Lk4096_H32_KV8_D128", "probe/read/64MiB", "bytes_per_second", 0.70),
    ("decode/rope/Lk4096_H32_KV8_D128", "probe/read/64MiB", "bytes_per_second", 0.70),
    ("decode/rope_rerotate/Lk4096_H32_KV8_D128", "probe/read/64MiB", "bytes_per_second", None),
    ("decode_mha/none/Lk1024_H32_KV32_D128", "probe/read/64MiB", "bytes_per_second", None),
    ("decode_incache/none/Lk256_H32_KV8_D128", "probe/fma_peak", "FLOPS", None),
    ("decode_plain_alloc/none/Lk4096_H32_KV8_D128", "decode/none/Lk4096_H32_KV8_D128", "bytes_per_second", None),
]


# What each benchmark measures, for the table's first column.
LABELS = {
    "probe/inplace_update_twin/64MiB": "the in-place probe's own loop, registered twice (identical code)",
    "rope/half/L4096_H32_D128": "RoPE in place, [4096, 32, 128], half layout, cos/sin table",
    "rope/interleaved/L4096_H32_D128": "… interleaved layout, table",
    "rope_tablefree/half/L4096_H32_D128": "… half layout, angles on the fly (no table)",
    "rope_tablefree/interleaved/L4096_H32_D128": "… interleaved layout, on the fly",
    "rope_reference/half/L4096_H32_D128": "… scalar kernel, table (the oracle)",
    "rope_incache/half/L8_H32_D128": "RoPE in place on 8 tokens (128 KiB, in L2), half layout, table",
    "rope_incache/interleaved/L8_H32_D128": "… interleaved layout, table",
    "rope_into/half/L4096_H32_D128": "RoPE out of place (apply_into), half layout, table",
    "rope_into/interleaved/L4096_H32_D128": "… interleaved layout, table",
    "probe/copy_update_nt/64MiB": "the copy probe with non-temporal stores (no read of b's lines)",
    "rope_into_read/half/L1024_H32_D128":
        "apply_into at 16 MiB, then out read, buffers reused: non-temporal against plain stores",
    "rope_into_read_cold/half/L1024_H32_D128": "… x and out from memory (64 MiB of other data read in between)",
    "attention/causal/none/L2048_H1_D128": "causal attention, L 2048, D 128, NoPosition",
    "attention/causal/alibi/L2048_H1_D128": "… ALiBi",
    "attention/causal/t5/L2048_H1_D128": "… T5 bias",
    "attention/causal/rope/L2048_H1_D128": "… RoPE, cos/sin table (with_cache)",
    "attention/causal/rope_tablefree/L2048_H1_D128": "… RoPE, angles on the fly",
    "attention/causal/alibi/L16384_H1_D128": "causal attention, L 16384, ALiBi",
    "attention/causal/t5/L16384_H1_D128": "… T5 bias",
    "decode/none/Lk4096_H32_KV8_D128": "decode: 1 query, 4096 cached keys, 32 heads on 8 KV heads, NoPosition",
    "decode/alibi/Lk4096_H32_KV8_D128": "… ALiBi",
    "decode/rope/Lk4096_H32_KV8_D128": "… RoPE, cache of rotated keys (for_rotated_key_cache)",
    "decode/rope_rerotate/Lk4096_H32_KV8_D128": "… RoPE, every cached key rotated again (with_cache)",
    "decode_mha/none/Lk1024_H32_KV32_D128": "decode without GQA: 1024 keys, 32 heads on 32 KV heads",
    "decode_incache/none/Lk256_H32_KV8_D128": "decode, short context: 256 keys (in cache)",
    "decode_plain_alloc/none/Lk4096_H32_KV8_D128": "decode as above, K and V on 4 KiB pages",
}


def medians(report, statistic="median"):
    """name -> counters of the median aggregate (or of the single run). With statistic "min":
    the rates of the fastest repetition, i.e. the median's rates scaled by median time / min time
    (a "min" aggregate of a rate counter would be the slowest repetition's)."""
    out, fastest = {}, {}
    for b in report["benchmarks"]:
        name = b.get("run_name", b["name"]).replace("/real_time", "")
        aggregate = b.get("aggregate_name", "median")
        if aggregate == "median":
            out[name] = b
        elif aggregate == "min":
            fastest[name] = b["real_time"]
    if statistic == "min":
        for name, b in out.items():
            if name in fastest and fastest[name] > 0:
                speedup = b["real_time"] / fastest[name]
                out[name] = {k: (v * speedup if k in ("FLOPS", "bytes_per_second") else v) for k, v in b.items()}
    return out


def unit_format(counter):
    """(number format of a value in units of 1e9, unit name) for a counter."""
    return ("{:.1f}", "GFLOP/s") if counter == "FLOPS" else ("{:.2f}", "GB/s")


def unit(counter, value):
    number, name = unit_format(counter)
    return f"{number.format(value / 1e9)} {name}"


def machine(report, statistic, runs=1):
    ctx = report.get("context", {})
    what = f"{runs} runs, each figure the median over the runs (lowest–highest); " if runs > 1 else ""
    return (f"Machine: {ctx.get('num_cpus', '?')} CPUs at {ctx.get('mhz_per_cpu', '?')} MHz, "
            f"{ctx.get('posenc_bench_isa', '?')} kernels, 1 thread. {what}{statistic} of each run's repetitions.\n")


def one_run(path, statistic):
    with open(path) as f:
        report = json.load(f)
    m = medians(report, statistic)
    print(machine(report, statistic))
    print("| benchmark | measured | compared with | ratio | target |")
    print("|---|---|---|---|---|")
    for name, bound, counter, target in ROWS:
        if name not in m or bound not in m:
            continue
        value, reference = m[name].get(counter), m[bound].get(counter)
        if value is None or reference is None:
            continue
        ratio = value / reference
        goal = "" if target is None else (f"≥ {target:.2f} " + ("✓" if ratio >= target else "✗"))
        print(f"| `{name}` | {unit(counter, value)} | `{bound}` {unit(counter, reference)} | {ratio:.2f} | {goal} |")


def spread(values, show):
    """median (lowest–highest) of values, each shown by show."""
    ordered = sorted(values)
    return f"{show(statistics.median(ordered))} ({show(ordered[0])}–{show(ordered[-1])})"


def spread_in_unit(values, counter):
    number, name = unit_format(counter)
    return f"{spread(values, lambda v: number.format(v / 1e9))} {name}"


def several_runs(paths, statistic):
    reports = []
    for path in paths:
        with open(path) as f:
            reports.append(json.load(f))
    runs = [medians(report, statistic) for report in reports]
    print(machine(reports[0], statistic, len(runs)))
    print("| benchmark | measured | compared with | ratio | target: runs meeting it |")
    print("|---|---|---|---|---|")
    meeting_all = [True] * len(runs)
    for name, bound, counter, target in ROWS:
        # A row is taken over the runs that hold both benchmarks (reports from before a benchmark
        # was added lack it), and says so when that is not all of them.
        holding = [i for i, m in enumerate(runs) if name in m and bound in m]
        if not holding:
            continue
        values = [runs[i][name][counter] for i in holding]
        references = [runs[i][bound][counter] for i in holding]
        ratios = [v / r for v, r in zip(values, references)]
        goal = ""
        if target is not None:
            for i, ratio in zip(holding, ratios):
                meeting_all[i] = meeting_all[i] and ratio >= target
            goal = f"≥ {target:.2f}: {sum(ratio >= target for ratio in ratios)} of {len(holding)}"
        only = f", {len(holding)} of the {len(runs)} runs" if len(holding) < len(runs) else ""
        print(f"| {LABELS.get(name, name)} (`{name}`{only}) | {spread_in_unit(values, counter)} | "
              f"`{bound}` {spread_in_unit(references, counter)} | {spread(ratios, '{:.2f}'.format)} | {goal} |")
    print(f"\nRuns meeting every target: {sum(meeting_all)} of {len(runs)}.")


if __name__ == "__main__":
    args = sys.argv[1:]
    statistic = args.pop() if args and args[-1] in ("median", "min") else "median"
    if not args:
        sys.exit(__doc__)
    if len(args) == 1:
        one_run(args[0], statistic)
    else:
        several_runs(args, statistic)
