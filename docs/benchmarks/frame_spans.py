#!/usr/bin/env python3
"""How spread out a publisher's video frames reach the SFU.

Reads the log that docs/benchmarks/arrivals-log.patch makes the SFU write (one line per RTP
datagram: arrival ns, source, SSRC, sequence, RTP timestamp, marker, payload type, length),
groups the packets of the given payload types into frames by (source, SSRC, RTP timestamp), and
prints how many packets the frames had and, for frames of two or more, the time from a frame's
first packet to its last and between consecutive packets. Give the video codec's payload type
(96 for VP8 in headless Chromium's offer): its RTX type (97) carries old timestamps and probe
padding, which are no frames.

    python3 docs/benchmarks/frame_spans.py /tmp/arrivals.log 96
"""
import sys
from collections import defaultdict


def quantile(values, q):
    return values[min(len(values) - 1, int(len(values) * q))]


def main(path, payload_types):
    frames = defaultdict(list)
    for line in open(path):
        ns, source, ssrc, _seq, ts, _marker, pt, _length = line.split()
        if pt not in payload_types:
            continue
        frames[(source, ssrc, ts)].append(int(ns))
    counts = defaultdict(int)
    spans, gaps = [], []
    for stamps in frames.values():
        stamps.sort()
        counts[len(stamps)] += 1
        if len(stamps) >= 2:
            spans.append((stamps[-1] - stamps[0]) / 1e6)
            gaps += [(b - a) / 1e6 for a, b in zip(stamps, stamps[1:])]
    print("frames by packet count:", dict(sorted(counts.items())))
    if not spans:
        print("no frame of two or more packets")
        return
    spans.sort()
    gaps.sort()
    print(
        f"{len(spans)} frames of 2+ packets; first to last packet, ms: "
        f"p50 {quantile(spans, .5):.3f} p90 {quantile(spans, .9):.3f} "
        f"p99 {quantile(spans, .99):.3f} max {spans[-1]:.3f}"
    )
    print(
        f"between a frame's packets, ms: p50 {quantile(gaps, .5):.3f} "
        f"p90 {quantile(gaps, .9):.3f} p99 {quantile(gaps, .99):.3f}"
    )


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: frame_spans.py ARRIVALS_LOG PAYLOAD_TYPE...")
    main(sys.argv[1], set(sys.argv[2:]))
