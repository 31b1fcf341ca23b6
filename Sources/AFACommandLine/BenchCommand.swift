import AFA
import AFABench
import ArgumentParser
import Foundation

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure throughput of one workload (or the SGEMM table with --table).")

    enum Workload: String, ExpressibleByArgument, CaseIterable {
        case infer, inferFlip = "infer-flip", fwdbwd, iteration, sgemm, suite, segment, crf
    }

    @Argument(help: "Workload.")
    var workload: Workload

    @Option(help: "Problem size: the image side (model workloads, default 320) or the side of a square product (sgemm, default 1024).")
    var size: Int?

    @Option(help: "Model preset for the model workloads.")
    var preset = PresetName("mit_b1")

    @Option(help: "Images per batch for the model workloads.")
    var batch = 2

    @Option(help: "Measured runs after one warm-up (default 5; suite: each row's own default unless given).")
    var runs: Int?

    /// The measured runs of a single workload.
    var measuredRuns: Int { runs ?? 5 }

    @Option(name: .customLong("presets"), help: "suite: comma-separated presets to run (default tiny,mit_b1).")
    var presetList: PresetList?

    @Flag(help: "Print one JSON object instead of a line of text.")
    var json = false

    @Flag(help: "sgemm: the full table (square sizes and MiT-B1 shapes, 1 and 2 threads).")
    var table = false

    @Option(help: "segment: checkpoint to load.") var checkpoint: String?
    @Option(help: "segment: requests kept in flight.") var concurrency = 1
    @Option(help: "segment: requests to time (after 10 warm-up ones).") var requests = 200
    @Argument(help: "segment: the images (JPEG or PNG), used in turn.") var images: [String] = []

    @Option(help: "crf: image width.") var width = 500
    @Option(help: "crf: image height.") var height = 375
    @Option(help: "crf: classes.") var classes = 21
    @Option(help: "crf: mean-field iterations.") var iterations = 10
    @Option(help: "crf: take the image and probabilities from this CRF case file (crf.image, crf.prob) instead of generating them.")
    var input: String?

    @OptionGroup var threadOptions: ThreadOptions

    func validate() throws {
        if let runs, runs < 1 { throw ValidationError("--runs must be at least 1") }
        switch workload {
        case .crf:
            guard width >= 1, height >= 1, width * height <= 16_777_216, (1...255).contains(classes), iterations >= 0 else {
                throw ValidationError("crf: --width and --height must be at least 1 (at most 16 M pixels), --classes in 1...255, --iterations ≥ 0")
            }
        case .infer, .inferFlip, .fwdbwd, .iteration:
            guard (size ?? 320) >= 32, batch >= 1 else { throw ValidationError("--size must be at least 32 and --batch at least 1") }
        case .segment:
            guard checkpoint != nil, !images.isEmpty else { throw ValidationError("segment: give --checkpoint FILE and at least one image") }
            guard concurrency >= 1, requests >= 1 else { throw ValidationError("--concurrency and --requests must be at least 1") }
        case .sgemm:
            guard (size ?? 1024) >= 1 else { throw ValidationError("--size must be positive") }
        case .suite:
            break
        }
    }

    func run() throws {
        try threadOptions.apply()
        let runs = measuredRuns
        switch workload {
        case .crf:
            let (image, probs) = try input.map { try CRFBenchmark.input(from: $0) }
                ?? CRFBenchmark.syntheticInput(width: width, height: height, classes: classes)
            let m = try CRFBenchmark.run(image: image, probabilities: probs, crf: DenseCRF(iterations: iterations),
                                         threads: Runtime.threads, runs: runs)
            if json {
                print(Harness.json(m))
            } else {
                print(String(format: "%@, %d threads: %.1f ms median (spread %.1f%%), peak RSS %.0f MB",
                             m.name, m.threads, m.medianMs, 100 * m.spread, m.peakRSSMB))
            }
        case .suite:
            // each row in its own process: peak RSS is then the workload's own
            let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
            let threads = self.threadOptions.threads.map { [$0] } ?? [1, 2]
            let presets: Set<String> = presetList.map { Set($0.names) } ?? ["tiny", "mit_b1"]
            let r = try Suite.run(executable: exe, threads: threads, presets: presets, runsOverride: self.runs)
            if json {
                let enc = JSONEncoder(); enc.outputFormatting = [.sortedKeys]
                print(String(decoding: try enc.encode(r.rows), as: UTF8.self))
            } else { print(r.text) }
        case .infer, .inferFlip, .fwdbwd:
            let side = size ?? 320
            let kind = ModelBenchmark.Workload(rawValue: workload.rawValue)!
            let m = try ModelBenchmark.run(kind, preset: preset.name, batch: batch, size: side, threads: Runtime.threads, runs: runs)
            if json {
                print(Harness.json(m))
            } else {
                print(String(format: "%@, %d threads: %.1f ms median (spread %.1f%%), %.2f images/s, %.1f GFLOP/s, peak RSS %.0f MB",
                             m.name, m.threads, m.medianMs, 100 * m.spread, m.itemsPerSecond, m.gflops, m.peakRSSMB))
            }
        case .iteration:
            let side = size ?? 320
            let r = try IterationBenchmark.run(preset: preset.name, batch: batch, size: side, threads: Runtime.threads, runs: runs)
            let m = r.measurement
            if json {
                print(Harness.json(m))
            } else {
                print(String(format: "%@, %d threads: %.1f ms median (spread %.1f%%), %.2f images/s, %.1f GFLOP/s, peak RSS %.0f MB",
                             m.name, m.threads, m.medianMs, 100 * m.spread, m.itemsPerSecond, m.gflops, m.peakRSSMB))
                for (part, secs) in r.breakdown {
                    print("  " + part.padding(toLength: 18, withPad: " ", startingAt: 0) + String(format: "%8.1f ms", secs * 1e3))
                }
            }
        case .segment:
            let segmenter = try Segmenter(checkpoint: checkpoint!)
            let datas = try images.map { try Data(contentsOf: URL(fileURLWithPath: $0)) }
            let box = ResultBox()
            let done = DispatchSemaphore(value: 0)
            let (c, n) = (concurrency, requests)
            Task {
                do {
                    box.result = .success(try await SegmentBenchmark.run(segmenter: segmenter, images: datas, options: SegmentationOptions(),
                                                                         concurrency: c, requests: n))
                } catch { box.result = .failure(error) }
                done.signal()
            }
            done.wait()
            let r = try box.result!.get()
            if json {
                let enc = JSONEncoder(); enc.outputFormatting = [.sortedKeys]
                print(String(decoding: try enc.encode(r), as: UTF8.self))
            } else {
                print(String(format: "segment in process, %d in flight, %d requests: %.1f requests/s, p50 %.1f ms, p99 %.1f ms",
                             r.concurrency, r.requests, r.requestsPerSecond, r.p50Ms, r.p99Ms))
            }
        case .sgemm:
            let size = self.size ?? 1024
            if table {
                let counts = Array(Set([1, threadOptions.threads ?? Runtime.threads])).sorted()
                let result = SGEMMBenchmark.table(threads: counts, runs: runs)
                if json { for m in result.rows { print(Harness.json(m)) } } else { print(result.text) }
                return
            }
            let shape = SGEMMBenchmark.Shape("square \(size)^3", m: size, n: size, k: size, transB: .none)
            let m = SGEMMBenchmark.run(shape, threads: Runtime.threads, direct: false, runs: runs)
            if json {
                print(Harness.json(m))
            } else {
                print(String(format: "sgemm %d^3, %d threads, core %@: %.2f ms median (spread %.1f%%), %.1f GFLOP/s",
                             size, m.threads, BLASKernel.coreName, m.medianMs, 100 * m.spread, m.gflops))
            }
        }
    }
}

/// Hands a result from a task back to the synchronous command.
final class ResultBox: @unchecked Sendable {
    var result: Result<SegmentBenchmark.Result, Error>?
}
