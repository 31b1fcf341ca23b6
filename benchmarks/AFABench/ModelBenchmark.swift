import AFA
import Layers
import Foundation

/// Model workloads: inference (eval-mode forward), inference with horizontal flip, and the main
/// forward + backward of training.
public enum ModelBenchmark {
    public enum Workload: String, CaseIterable, Sendable {
        case infer, inferFlip = "infer-flip", fwdbwd
    }

    /// A model of `preset` with the method's initialisation and dropout off (timing only).
    public static func model(preset: String) throws -> AFAModel {
        var config = try ModelConfig.preset(preset)
        config.dropPathRate = 0
        config.headDropout = 0
        let m = try AFAModel(config: config)
        m.initialize(seed: 0)
        return m
    }

    public static func run(_ workload: Workload, preset: String, batch: Int, size: Int, threads: Int,
                           runs: Int) throws -> Measurement {
        Runtime.setThreads(threads)
        let model = try model(preset: preset)
        var rng = RNG(seed: 7)
        let images = workload == .inferFlip ? 2 * batch : batch
        let x = Tensor(zeros: [batch, 3, size, size]); x.fillUniform(-2, 2, rng: &rng)
        let fwdFlops = FLOPCount.forward(model.config, batch: images, height: size, width: size)
        var failure: Error?
        let name = "\(workload.rawValue) \(preset) \(batch)x3x\(size)x\(size)"
        let extra = ["workload": workload.rawValue, "preset": preset, "batch": "\(batch)", "size": "\(size)"]
        let m: Measurement
        switch workload {
        case .infer, .inferFlip:
            m = Harness.measure(name: name, threads: threads, runs: runs, warmup: 1, flops: fwdFlops, items: batch, extra: extra) {
                do {
                    // the flipped copies ride in the same batch
                    let input = workload == .inferFlip ? ImageOps.withFlips(x) : x
                    _ = try model.forward(input, Workspace.inference())
                } catch { failure = error }
            }
        case .fwdbwd:
            let ws = Workspace.training(gradients: model.makeGradients(), rng: RNG(seed: 0))
            let dCls = Tensor(zeros: [batch, model.config.numClasses - 1]); dCls.fill(0.01)
            m = Harness.measure(name: name, threads: threads, runs: runs, warmup: 1, flops: 3 * fwdFlops, items: batch, extra: extra) {
                do {
                    let out = try model.forward(x, ws)
                    let dSeg = Tensor(shape: out.seg.shape, repeating: 1e-4)
                    let dAff = Tensor(shape: out.attnPred.shape, repeating: 1e-4)
                    try model.backward(dCls: dCls, dSeg: dSeg, dAttnPred: dAff, ws)
                    ws.reset()
                } catch { failure = error }
            }
        }
        if let failure { throw failure }
        return m
    }
}
