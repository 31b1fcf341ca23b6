import AFA
import XCTest

final class LossTests: XCTestCase {
    func testSegmentationLossWithoutBackgroundIsFinite() throws {
        var rng = RNG(seed: 1)
        let logits = Tensor(zeros: [2, 3, 4, 5]); logits.fillUniform(-2, 2, rng: &rng)
        let label: [Int32] = (0..<40).map { (i: Int) -> Int32 in i % 3 == 0 ? 255 : Int32(1 + i % 2) }   // no background anywhere
        let r = try Losses.segmentation(logits: logits, label: label, ignoreIndex: 255)
        XCTAssertEqual(r.bg, 0)
        XCTAssertTrue(r.fg > 0 && r.fg.isFinite)
        XCTAssertEqual(r.loss.value, 0.5 * r.fg, accuracy: 1e-12)
        XCTAssertTrue(r.loss.gradient.array.allSatisfy { $0.isFinite })
    }

    func testSegmentationLossAllIgnoredIsZero() throws {
        let logits = Tensor(zeros: [1, 2, 2, 2])
        let r = try Losses.segmentation(logits: logits, label: [255, 255, 255, 255], ignoreIndex: 255)
        XCTAssertEqual(r.loss.value, 0)
        XCTAssertEqual(r.loss.gradient.maxAbs(), 0)
    }

    func testSegmentationLossRejectsOutOfRangeLabel() {
        XCTAssertThrowsError(try Losses.segmentation(logits: Tensor(zeros: [1, 2, 1, 2]), label: [0, 7], ignoreIndex: 255)) {
            XCTAssertTrue("\($0)".contains("7"), "\($0)")
        }
    }

    /// With trainable norms (the tiny recipe) the norms learn at the backbone lr but are not decayed:
    /// a step with zero gradients leaves every LayerNorm weight as it was and shrinks the backbone's
    /// other weights by exactly 1 − lr·wd (fused in Float, as the update computes it).
    func testTrainableNormsAreNotWeightDecayed() throws {
        let model = try AFAModel(config: try ModelConfig.preset("tiny", numClasses: 3, embeddingDim: 8))
        model.initialize(seed: 4)
        var tc = TrainConfig(); tc.warmupIters = 0; tc.maxIters = 100
        let opt = PolyWarmupAdamW(model: model, config: tc, trainNorms: true)
        let norm = try XCTUnwrap(model.parameters.first { $0.name == "encoder.block1.0.norm1.weight" })
        let linear = try XCTUnwrap(model.parameters.first { $0.name == "encoder.block1.0.attn.q.weight" })
        let (normBefore, linearBefore) = (norm.value.array, linear.value.array)
        let lrs = opt.step(model.makeGradients())
        XCTAssertEqual(lrs[1], tc.lr, "the norms learn at the backbone lr")
        XCTAssertEqual(norm.value.array, normBefore)
        let decay = Float(1 - tc.lr * tc.weightDecay)
        XCTAssertNotEqual(decay, 1)
        XCTAssertEqual(linear.value.array, linearBefore.map { $0 * decay })
    }

    func testTrainingStepWithoutBackgroundTargetGivesFiniteLoss() throws {
        var mc = try ModelConfig.preset("tiny", numClasses: 4, embeddingDim: 8)
        mc.dropPathRate = 0; mc.headDropout = 0
        let model = try AFAModel(config: mc)
        model.initialize(seed: 2)
        var tc = TrainConfig(); tc.camIters = 0
        let step = TrainingStep(model: model, optimizer: PolyWarmupAdamW(model: model, config: tc), config: tc)
        var rng = RNG(seed: 3)
        let images = Tensor(zeros: [2, 3, 32, 32]); images.fillUniform(-1, 1, rng: &rng)
        let cls = try Tensor(shape: [2, 3], values: [1, 0, 0, 0, 1, 1])
        let fg = [Int32]((0..<(2 * 32 * 32)).map { $0 % 2 == 0 ? 1 : 2 })
        let labels = RefinedLabels(refinedPseudoLabel: fg, refinedAffinityLabel: fg, affinityLabel: [Int32](repeating: 1, count: 2 * 4 * 4))
        let r = try step.run(TrainingBatch(images: images, clsLabel: cls, boxes: [.full(height: 32, width: 32), .full(height: 32, width: 32)]),
                             nIter: 10, labels: labels)
        XCTAssertTrue(r.losses.total.isFinite)
        XCTAssertEqual(r.losses.segBg, 0)
        XCTAssertTrue(model.parameters.allSatisfy { p in p.value.array.allSatisfy { $0.isFinite } })
    }
}
