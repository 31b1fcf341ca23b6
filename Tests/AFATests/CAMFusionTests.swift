@testable import AFA
import TensorCore
import XCTest

final class CAMFusionTests: XCTestCase {
    /// The fusion in lanes against the formula written out one pixel at a time: max of a pixel and its
    /// mirror's, ReLU, summed over scales, then per plane (x − min) / (max − min + 1e-5). 37 columns: two
    /// 16-lane blocks and a tail, read forwards in the image and backwards in the mirror.
    func testFusionIsThePixelFormulaBitForBit() throws {
        let (b, k, h, w) = (2, 3, 4, 37)
        var rng = RNG(seed: 31)
        let full = Tensor(zeros: [2 * b, k, h, w]), small = Tensor(zeros: [2 * b, k, 2, 19])
        full.fillUniform(-1, 1, rng: &rng)
        small.fillUniform(-1, 1, rng: &rng)
        // ties between a pixel and its mirror, exact zeros, and a plane that is all negative (all ReLU'd)
        for i in stride(from: 0, to: h * w, by: 5) { full.data[i] = 0 }
        for x in 0..<w { full.data[b * k * h * w + 3 * w + (w - 1 - x)] = full.data[3 * w + x] }
        for p in 0..<(h * w) {            // image 1, class 0, and its mirror: below zero at both scales
            full.data[k * h * w + p] = -abs(full.data[k * h * w + p]) - 0.1
            full.data[(b + 1) * k * h * w + p] = -0.5
        }
        for p in 0..<(2 * 19) { small.data[k * 2 * 19 + p] = -0.2; small.data[(b + 1) * k * 2 * 19 + p] = -0.3 }

        let fusion = CAMFusion(batch: b, classes: k, height: h, width: w)
        try fusion.add(raw: full, flipped: true)
        try fusion.add(raw: small, flipped: true)
        let fused = fusion.normalized()

        var expected = [Float](repeating: 0, count: b * k * h * w)
        for raw in [full, try ImageOps.resize(small, height: h, width: w)] {
            for i in 0..<b {
                for c in 0..<k {
                    for y in 0..<h {
                        for x in 0..<w {
                            let a = raw.data[((i * k + c) * h + y) * w + x]
                            let f = raw.data[(((b + i) * k + c) * h + y) * w + (w - 1 - x)]
                            expected[((i * k + c) * h + y) * w + x] += max(max(a, f), 0)
                        }
                    }
                }
            }
        }
        for plane in 0..<(b * k) {
            let range = (plane * h * w)..<((plane + 1) * h * w)
            var lo = Float.infinity
            for p in range { lo = min(lo, expected[p]) }
            var hi = -Float.infinity
            for p in range { expected[p] -= lo; hi = max(hi, expected[p]) }
            for p in range { expected[p] /= hi + 1e-5 }
        }
        XCTAssertEqual(fused.array.map(\.bitPattern), expected.map(\.bitPattern))
        XCTAssertEqual(fused.array[(k * h * w)..<((k + 1) * h * w)].max(), 0)    // the all-negative plane
        XCTAssertGreaterThan(fused.array.max()!, 0.99)
    }

    /// A CAM pass without the affinity (the multi-scale passes other than the largest) gives the same CAMs
    /// bit for bit, and the multi-scale result's affinity is the largest scale's pass.
    func testCAMPassWithoutTheAffinityGivesTheSameCAMs() throws {
        let model = try AFAModel(config: try ModelConfig.preset("tiny", numClasses: 4, embeddingDim: 8))
        model.initialize(seed: 9)
        var rng = RNG(seed: 10)
        let image = Tensor(zeros: [2, 3, 48, 48])
        image.fillUniform(-1, 1, rng: &rng)
        let with = try model.camForward(image, Workspace.inference())
        let without = try model.camForward(image, Workspace.inference(), affinity: false)
        XCTAssertEqual(without.cam.array, with.cam.array)
        XCTAssertNil(without.attnPred)
        let pred = try XCTUnwrap(with.attnPred)
        XCTAssertEqual(pred.shape, [2, 9, 9])
        let large = try ImageOps.resize(image, height: 72, width: 72)
        let multi = try model.multiScaleCAM(image, scales: [1.0, 0.5, 1.5], Workspace.inference())
        let largest = try XCTUnwrap(model.camForward(ImageOps.withFlips(large), Workspace.inference()).attnPred)
        XCTAssertEqual(multi.affinity.array, largest.array)
    }
}
