#!/usr/bin/env python3
"""Turns a posenc_bench JSON report into the README's speed table: medians of the repetitions,
each kernel as a ratio to the probe it is bounded by, all from the same run.

    build/bin/posenc_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
        --benchmark_format=json --benchmark_out=bench.json --benchmark_out_format=json
    python3 bench/speed_table.py bench.json          # ratios of medians
    python3 bench/speed_table.py bench.json min      # ratios of the fastest repetitions
"""
import json
import sys

# (benchmark, bound it is compared with, counter, target ratio)
ROWS = [
    ("rope/half/L4096_H32_D128", "probe/inplace_update/64MiB", "bytes_per_second", 0.90),
    ("rope/interleaved/L4096_H32_D128", "probe/inplace_update/64MiB", "bytes_per_second", 0.90),
    ("rope_tablefree/half/L4096_H32_D128", "probe/inplace_update/64MiB", "bytes_per_second", 0.80),
    ("rope_tablefree/interleaved/L4096_H32_D128", "probe/inplace_update/64MiB", "bytes_per_second", 0.80),
    ("rope_reference/half/L4096_H32_D128", "probe/inplace_update/64MiB", "bytes_per_second", None),
    ("rope_incache/half/L8_H32_D128", "probe/inplace_update/128KiB", "bytes_per_second", None),
    ("rope_incache/interleaved/L8_H32_D128", "probe/inplace_update/128KiB", "bytes_per_second", None),
    ("rope_into/half/L4096_H32_D128", "probe/copy_update/64MiB", "bytes_per_second", None),
    ("rope_into/interleaved/L4096_H32_D128", "probe/copy_update/64MiB", "bytes_per_second", None),
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


def unit(counter, value):
    if counter == "FLOPS":
        return f"{value / 1e9:.1f} GFLOP/s"
    return f"{value / 1e9:.2f} GB/s"


def main(path, statistic="median"):
    with open(path) as f:
        report = json.load(f)
    m = medians(report, statistic)
    ctx = report.get("context", {})
    print(f"Machine: {ctx.get('num_cpus', '?')} CPUs at {ctx.get('mhz_per_cpu', '?')} MHz, "
          f"{ctx.get('posenc_bench_isa', '?')} kernels, 1 thread; {statistic} of the repetitions.\n")
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


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or (len(sys.argv) == 3 and sys.argv[2] not in ("median", "min")):
        sys.exit(__doc__)
    main(*sys.argv[1:])
