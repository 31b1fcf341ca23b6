import Foundation

/// The benchmark suite: every workload in its own process (so that peak RSS is the workload's own),
/// threads 1 and 2, one table with time, images/s, GFLOP/s, % of the SGEMM peak measured in the same
/// run and peak RSS.
public enum Suite {
    public struct Row: Codable {
        public var workload: String
        public var preset: String
        public var shape: String
        public var threads: Int
        public var measurement: Measurement
        public var percentOfPeak: Double
    }

    /// (workload, preset, batch, size, runs)
    public static let workloads: [(String, String, Int, Int, Int)] = [
        ("infer", "tiny", 2, 320, 5), ("infer-flip", "tiny", 1, 512, 5), ("fwdbwd", "tiny", 2, 320, 5), ("iteration", "tiny", 2, 320, 3),
        ("infer", "mit_b1", 2, 320, 5), ("infer-flip", "mit_b1", 1, 512, 3), ("fwdbwd", "mit_b1", 2, 320, 3), ("iteration", "mit_b1", 2, 320, 2),
    ]

    /// Runs `executable bench …` per row and parses its JSON line.
    public static func run(executable: String, threads: [Int], presets: Set<String>, runsOverride: Int?) throws -> (text: String, rows: [Row]) {
        func call(_ args: [String]) throws -> Measurement {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: executable)
            p.arguments = ["bench"] + args + ["--json"]
            let pipe = Pipe()
            p.standardOutput = pipe
            try p.run()
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            guard p.terminationStatus == 0, let line = String(decoding: data, as: UTF8.self).split(separator: "\n").last else {
                throw NSError(domain: "afa.bench", code: Int(p.terminationStatus),
                              userInfo: [NSLocalizedDescriptionKey: "afa bench \(args.joined(separator: " ")) failed"])
            }
            return try JSONDecoder().decode(Measurement.self, from: Data(line.utf8))
        }
        var rows: [Row] = []
        var peaks: [Int: Double] = [:]
        for t in threads {
            peaks[t] = try call(["sgemm", "--size", "2048", "--runs", "5", "--threads", "\(t)"]).gflops
        }
        for (w, preset, b, s, runs) in workloads where presets.contains(preset) {
            for t in threads {
                let m = try call([w, "--preset", preset, "--batch", "\(b)", "--size", "\(s)", "--runs", "\(runsOverride ?? runs)", "--threads", "\(t)"])
                rows.append(Row(workload: w, preset: preset, shape: "\(b)x3x\(s)x\(s)", threads: t, measurement: m,
                                percentOfPeak: 100 * m.gflops / max(peaks[t] ?? 1, 1)))
            }
        }
        let header = ["workload", "preset", "input", "threads", "median ms", "spread", "images/s", "GFLOP/s", "% SGEMM peak", "peak RSS MB"]
        let cells = rows.map { r in
            [r.workload, r.preset, r.shape, "\(r.threads)", String(format: "%.1f", r.measurement.medianMs),
             String(format: "%.0f%%", 100 * r.measurement.spread), String(format: "%.2f", r.measurement.itemsPerSecond),
             String(format: "%.1f", r.measurement.gflops), String(format: "%.0f%%", r.percentOfPeak), String(format: "%.0f", r.measurement.peakRSSMB)]
        }
        var text = Harness.table(header, cells)
        text += "\nSGEMM peak (2048³ through the wrapper, same run): "
            + threads.map { "\($0)T " + String(format: "%.1f GFLOP/s", peaks[$0] ?? 0) }.joined(separator: ", ")
        return (text, rows)
    }
}
