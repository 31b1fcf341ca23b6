import Foundation

/// Timing of one workload: warm-up, several measured runs, median and spread.
public struct Measurement: Codable, Sendable {
    public var name: String
    public var threads: Int
    public var runs: Int
    /// Median wall time of one execution, milliseconds.
    public var medianMs: Double
    public var minMs: Double
    public var maxMs: Double
    /// (max − min) / median, as a fraction.
    public var spread: Double
    /// Floating-point operations of one execution.
    public var flops: Double
    public var gflops: Double
    /// Items (images) per execution, for throughput; 0 when not meaningful.
    public var items: Int
    public var itemsPerSecond: Double
    public var peakRSSMB: Double
    /// Free-form fields (shape, variant, % of peak).
    public var extra: [String: String]

    enum CodingKeys: String, CodingKey {
        case name, threads, runs, extra, items, flops, gflops
        case medianMs = "median_ms", minMs = "min_ms", maxMs = "max_ms", spread
        case itemsPerSecond = "items_per_s", peakRSSMB = "peak_rss_mb"
    }
}

#if os(Linux)
let RUSAGE_SELF_ID = __rusage_who_t(RUSAGE_SELF.rawValue)
#else
let RUSAGE_SELF_ID = RUSAGE_SELF
#endif

public enum Harness {
    /// Monotonic seconds.
    @inline(__always) public static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }

    /// Peak resident set size of this process so far, MB.
    public static func peakRSSMB() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF_ID, &usage)
        return Double(usage.ru_maxrss) / 1024   // Linux reports KiB
    }

    /// Times `body`: `warmup` unmeasured calls, then `runs` measured ones. When one call is shorter than
    /// `minSeconds`, each measurement repeats it enough times and reports the per-call time.
    public static func measure(name: String, threads: Int, runs: Int = 5, warmup: Int = 1, minSeconds: Double = 0.05,
                               flops: Double, items: Int = 0, extra: [String: String] = [:],
                               _ body: () -> Void) -> Measurement {
        for _ in 0..<max(warmup, 0) { body() }
        // Calibrate repetitions per measurement.
        var reps = 1
        let t0 = now(); body(); let single = max(now() - t0, 1e-7)
        if single < minSeconds { reps = Int((minSeconds / single).rounded(.up)) }
        var times: [Double] = []
        for _ in 0..<max(runs, 1) {
            let s = now()
            for _ in 0..<reps { body() }
            times.append((now() - s) / Double(reps))
        }
        times.sort()
        let median = times.count % 2 == 1 ? times[times.count / 2]
            : 0.5 * (times[times.count / 2 - 1] + times[times.count / 2])
        return Measurement(name: name, threads: threads, runs: times.count, medianMs: median * 1e3,
                           minMs: times.first! * 1e3, maxMs: times.last! * 1e3,
                           spread: (times.last! - times.first!) / median, flops: flops,
                           gflops: flops / median / 1e9, items: items,
                           itemsPerSecond: items > 0 ? Double(items) / median : 0,
                           peakRSSMB: peakRSSMB(), extra: extra)
    }

    /// A plain-text table with right-aligned columns.
    public static func table(_ header: [String], _ rows: [[String]]) -> String {
        var widths = header.map(\.count)
        for r in rows { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in
                i == 0 ? c.padding(toLength: widths[i], withPad: " ", startingAt: 0)
                    : String(repeating: " ", count: widths[i] - c.count) + c
            }.joined(separator: "  ")
        }
        var out = [line(header), widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")]
        out += rows.map(line)
        return out.joined(separator: "\n")
    }

    /// One JSON object per measurement.
    public static func json(_ m: Measurement) -> String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        return String(data: try! enc.encode(m), encoding: .utf8)!
    }
}
