import AFA
import Foundation
import Layers
import XCTest

/// The whole network's backward against central differences on shapes the golden case does not
/// cover: batch 3, a non-square input, 6 classes, a narrow head, all three losses active.
final class ModelGradientTests: XCTestCase {
    func smallConfig() throws -> ModelConfig {
        var c = try ModelConfig.preset("tiny", numClasses: 6, embeddingDim: 12)
        c.embedDims = [8, 16, 16, 24]
        c.numHeads = [1, 2, 2, 3]
        c.depths = [1, 1, 1, 2]
        c.dropPathRate = 0
        c.headDropout = 0
        return c
    }

    func testEndToEndGradientsNonSquareBatch3() throws {
        let model = try AFAModel(config: try smallConfig())
        model.initialize(seed: 3, linearStd: 0.2)
        let (b, h, w) = (3, 48, 64)
        var rng = RNG(seed: 11)
        let image = Tensor(zeros: [b, 3, h, w]); image.fillUniform(-2, 2, rng: &rng)
        let cls = Tensor(zeros: [b, 5])
        for (i, k) in [(0, 1), (1, 0), (1, 4), (2, 2)] { cls.data[i * 5 + k] = 1 }
        let seg = (0..<(b * h * w)).map { i -> Int32 in [0, 1, 255, 3, 0][i % 5] }
        let n4 = (h / 16) * (w / 16)
        let aff = (0..<(b * n4 * n4)).map { i -> Int32 in [1, 0, 255][i % 3] }
        let targets = LossTargets(clsLabel: cls, segLabel: seg, affLabel: aff)
        var config = TrainConfig()
        config.camIters = 0
        // full weights so the seg and affinity paths are not drowned in float noise
        config.segWeight = 1
        config.affWeight = 1

        let gradients = model.makeGradients()
        func loss() throws -> Double {
            let scratch = Workspace.training(gradients: model.makeGradients(), rng: RNG(seed: 0))
            let out = try model.forward(image, scratch)
            return try model.lossAndBackward(out, targets: targets, nIter: 1, config: config, inputSize: (h, w), scratch).total
        }
        let ws = Workspace.training(gradients: gradients, rng: RNG(seed: 0))
        let out = try model.forward(image, ws)
        XCTAssertEqual(out.seg.shape, [b, 6, h / 4, w / 4])
        XCTAssertEqual(out.attnPred.shape, [b, n4, n4])
        XCTAssertEqual(out.cls.shape, [b, 5])
        _ = try model.lossAndBackward(out, targets: targets, nIter: 1, config: config, inputSize: (h, w), ws)
        XCTAssertEqual(ws.savedCount, 0, "backward consumed every saved activation")
        let grads = model.parameters.map { gradients[$0] }

        // Per tensor, the directional derivative along a random direction d: L(θ + εd) − L(θ − εd) over 2ε
        // against Σ g·d. Summing over the tensor lifts the signal above float32 noise; a wrong term in
        // any backward shows as a large relative error. (BatchNorm's running statistics change with
        // every forward but do not enter the train-mode loss.)
        var picked = 0
        var dirRNG = RNG(seed: 5)
        for (p, g) in zip(model.parameters, grads) {
            XCTAssertTrue(g.isFinite, p.name)
            let d = Tensor(zeros: p.shape); d.fillUniform(-1, 1, rng: &dirRNG)
            let analytic = Kernels.dot(g.data, d.data, g.count)
            var magnitude = 0.0
            for i in 0..<g.count { magnitude += Double(abs(g.data[i] * d.data[i])) }
            let old = p.value.copy()
            var numerics: [Double] = []
            // A large step averages out float noise, a small one stays clear of ReLU / max-pool kinks:
            // the gradient must agree with at least one of them.
            for eps: Float in [1e-2, 2e-3] {
                try p.value.assign(from: old); try p.value.addScaled(d, alpha: eps); let lp = try loss()
                try p.value.assign(from: old); try p.value.addScaled(d, alpha: -eps); let lm = try loss()
                numerics.append((lp - lm) / Double(2 * eps))
            }
            try p.value.assign(from: old)
            let ok = numerics.contains { abs(analytic - $0) <= 0.02 * max(abs(analytic), abs($0)) + 0.01 * magnitude + 1e-6 }
            XCTAssertTrue(ok, "\(p.name): analytic \(analytic), numeric \(numerics), Σ|g·d| \(magnitude)")
            picked += 1
        }
        XCTAssertEqual(picked, model.parameters.count)
    }

    /// The segmentation-only forward (what a request without CAMs runs) gives the same bits as the
    /// full forward's segmentation, class scores and stage 4, and refuses a recording workspace.
    func testSegmentationForwardIsTheFullForwardWithoutTheAffinityHead() throws {
        let model = try AFAModel(config: try smallConfig())
        model.initialize(seed: 4, linearStd: 0.2)
        var rng = RNG(seed: 12)
        let image = Tensor(zeros: [2, 3, 48, 64]); image.fillUniform(-2, 2, rng: &rng)
        let full = try model.forward(image, Workspace.inference())
        let lean = try model.segmentationForward(image, Workspace.inference())
        for (name, a, b) in [("seg", full.seg, lean.seg), ("cls", full.cls, lean.cls), ("stage4", full.stages[3], lean.stage4)] {
            XCTAssertEqual(a.shape, b.shape, name)
            XCTAssertTrue((0..<a.count).allSatisfy { a.data[$0].bitPattern == b.data[$0].bitPattern }, name)
        }
        XCTAssertGreaterThan(full.seg.data[0].magnitude + full.seg.data[1].magnitude, 0, "a forward that computed something")
        XCTAssertThrowsError(try model.segmentationForward(image, Workspace.training(gradients: model.makeGradients(), rng: RNG(seed: 0))))
    }
}
