import AFA
import Foundation

/// One full AFA training iteration (CAM passes, PAR, random walk, main forward, backward, AdamW)
/// on random images with the method's default schedule past the classification-only phase.
public enum IterationBenchmark {
    public struct Result {
        public var measurement: Measurement
        /// Median seconds of each part.
        public var breakdown: [(String, Double)]
    }

    public static func run(preset: String, batch: Int, size: Int, threads: Int, runs: Int) throws -> Result {
        Runtime.setThreads(threads)
        let model = try ModelBenchmark.model(preset: preset)
        var config = TrainConfig()
        config.camIters = 0          // all three losses active
        let step = TrainingStep(model: model, optimizer: PolyWarmupAdamW(model: model, config: config, globalStep: 3000), config: config)
        var rng = RNG(seed: 3)
        let images = Tensor(zeros: [batch, 3, size, size]); images.fillUniform(-2, 2, rng: &rng)
        let k = model.config.numClasses - 1
        let cls = Tensor(zeros: [batch, k])
        for i in 0..<batch { cls.data[i * k + (3 * i) % k] = 1; cls.data[i * k + (3 * i + 7) % k] = 1 }
        let data = TrainingBatch(images: images, clsLabel: cls, boxes: Array(repeating: .full(height: size, width: size), count: batch))
        // one iteration's FLOPs: main forward + backward, and the encoder passes of every CAM scale (×2 for the flips)
        var flops = FLOPCount.forwardBackward(model.config, batch: batch, height: size, width: size)
        for s in config.scales {
            let side = Int(s * Double(size))
            flops += FLOPCount.forward(model.config, batch: 2 * batch, height: side, width: side)
        }
        var parts: [StepTimings] = []
        var failure: Error?
        let m = Harness.measure(name: "iteration \(preset) \(batch)x3x\(size)x\(size)", threads: threads, runs: runs, warmup: 1,
                                minSeconds: 0, flops: flops, items: batch,
                                extra: ["workload": "iteration", "preset": preset, "batch": "\(batch)", "size": "\(size)"]) {
            do { parts.append(try step.run(data, nIter: 3000).timings) } catch { failure = error }
        }
        if let failure { throw failure }
        let measured = Array(parts.dropFirst(parts.count - runs))
        func median(_ f: (StepTimings) -> Double) -> Double {
            let v = measured.map(f).sorted()
            return v.count % 2 == 1 ? v[v.count / 2] : 0.5 * (v[v.count / 2 - 1] + v[v.count / 2])
        }
        let breakdown: [(String, Double)] = [
            ("main forward", median(\.forward)), ("backward", median(\.backward)), ("CAM passes", median(\.camPasses)),
            ("PAR", median(\.par)), ("random walk", median(\.randomWalk)),
            ("other label work", median { $0.labels - $0.par - $0.randomWalk }), ("optimiser", median(\.optimizer)),
        ]
        var mm = m
        for (name, v) in breakdown { mm.extra[name.replacingOccurrences(of: " ", with: "_") + "_ms"] = String(format: "%.1f", v * 1e3) }
        return Result(measurement: mm, breakdown: breakdown)
    }
}
