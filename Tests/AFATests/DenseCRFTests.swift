import AFA
import ImageIO
import TensorCore
import XCTest

/// The dense CRF against pydensecrf (golden files) and the properties its lattice filter must have.
final class DenseCRFTests: XCTestCase {
    func testPublicCaseMatchesPydensecrf() throws {
        try Golden.check("crf_unit_seed0", teacherForced: false, prefixes: [], minimumKeys: 6)
    }

    func testOtherSizesClassCountsAndParametersMatchPydensecrf() throws {
        for name in ["crf_two_classes", "crf_params_c6", "crf_row_c3", "crf_column_c21"] {
            try Golden.check(name, teacherForced: false, prefixes: [], minimumKeys: 6)
        }
    }

    // MARK: the lattice filter

    /// Random features (n points, d dimensions) spread over a few standard deviations.
    static func features(_ n: Int, _ d: Int, spread: Float, seed: UInt64) -> [Float] {
        var rng = RNG(seed: seed)
        return (0..<(n * d)).map { _ in rng.uniform() * spread }
    }

    func testRowNormalisedFilterMapsConstantsToThemselves() {
        for (d, c) in [(2, 3), (5, 8), (3, 17)] {
            let n = 300
            let f = Self.features(n, d, spread: 6, seed: UInt64(d * 10 + c))
            let lattice = f.withUnsafeBufferPointer { PermutohedralLattice(features: $0.baseAddress!, count: n, dimension: d) }
            var ones = [Float](repeating: 1, count: n)
            ones.withUnsafeMutableBufferPointer { lattice.filter($0.baseAddress!, into: $0.baseAddress!, channels: 1) }
            // a different constant per channel
            let input = (0..<(n * c)).map { Float($0 % c) - 2.5 }
            var out = [Float](repeating: 0, count: n * c)
            input.withUnsafeBufferPointer { i in out.withUnsafeMutableBufferPointer { lattice.filter(i.baseAddress!, into: $0.baseAddress!, channels: c) } }
            for i in 0..<n {
                XCTAssertGreaterThan(ones[i], 0)
                for k in 0..<c { XCTAssertEqual(out[i * c + k] / ones[i], Float(k) - 2.5, accuracy: 1e-4, "d \(d), point \(i), channel \(k)") }
            }
        }
    }

    func testReversedFilterIsTheAdjoint() {
        for (d, c) in [(2, 1), (5, 8), (4, 3)] {
            let n = 400
            let f = Self.features(n, d, spread: 5, seed: UInt64(7 + d))
            let lattice = f.withUnsafeBufferPointer { PermutohedralLattice(features: $0.baseAddress!, count: n, dimension: d) }
            var rng = RNG(seed: 99)
            let u = (0..<(n * c)).map { _ in rng.uniform() - 0.5 }, v = (0..<(n * c)).map { _ in rng.uniform() - 0.5 }
            var kv = [Float](repeating: 0, count: n * c), ktu = kv
            v.withUnsafeBufferPointer { p in kv.withUnsafeMutableBufferPointer { lattice.filter(p.baseAddress!, into: $0.baseAddress!, channels: c) } }
            u.withUnsafeBufferPointer { p in
                ktu.withUnsafeMutableBufferPointer { lattice.filter(p.baseAddress!, into: $0.baseAddress!, channels: c, reverse: true) }
            }
            let lhs = zip(u, kv).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            let rhs = zip(ktu, v).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            XCTAssertEqual(lhs, rhs, accuracy: 1e-4 * max(1, abs(lhs)), "d \(d), c \(c)")
            // the forward filter is not its own adjoint (the blur order matters), so the check above can fail
            var kvRev = [Float](repeating: 0, count: n * c)
            v.withUnsafeBufferPointer { p in
                kvRev.withUnsafeMutableBufferPointer { lattice.filter(p.baseAddress!, into: $0.baseAddress!, channels: c, reverse: true) }
            }
            XCTAssertNotEqual(kv, kvRev, "forward and reversed blur give the same result for d \(d)")
        }
    }

    /// On a small 2-D grid the normalised lattice filter approximates the normalised Gaussian
    /// Σⱼ exp(−|fᵢ−fⱼ|²/2)·vⱼ / Σⱼ exp(−|fᵢ−fⱼ|²/2): the lattice's blur has about the right width
    /// (Adams et al. scale it to match the standard deviation) but is a piecewise-linear interpolation
    /// of a coarse kernel, so it is compared on a smooth signal with bounds on the mean and largest error.
    func testLatticeApproximatesTheGaussianFilter() {
        let (h, w) = (24, 24), sigma: Float = 3
        let n = h * w
        var f = [Float](repeating: 0, count: 2 * n)
        for y in 0..<h { for x in 0..<w { f[2 * (y * w + x)] = Float(x) / sigma; f[2 * (y * w + x) + 1] = Float(y) / sigma } }
        let signal = (0..<n).map { i -> Float in sinf(Float(i % w) * 0.35) + cosf(Float(i / w) * 0.25) }
        let lattice = f.withUnsafeBufferPointer { PermutohedralLattice(features: $0.baseAddress!, count: n, dimension: 2) }
        var num = [Float](repeating: 0, count: n), den = [Float](repeating: 1, count: n)
        signal.withUnsafeBufferPointer { s in num.withUnsafeMutableBufferPointer { lattice.filter(s.baseAddress!, into: $0.baseAddress!, channels: 1) } }
        den.withUnsafeMutableBufferPointer { lattice.filter($0.baseAddress!, into: $0.baseAddress!, channels: 1) }
        var meanErr = 0.0, maxErr = 0.0, meanChange = 0.0
        for i in 0..<n {
            var bn = 0.0, bd = 0.0
            for j in 0..<n {
                let dx = Double(f[2 * i] - f[2 * j]), dy = Double(f[2 * i + 1] - f[2 * j + 1])
                let k = exp(-0.5 * (dx * dx + dy * dy))
                bn += k * Double(signal[j]); bd += k
            }
            let err = abs(Double(num[i] / den[i]) - bn / bd)
            meanErr += err / Double(n); maxErr = max(maxErr, err)
            meanChange += abs(bn / bd - Double(signal[i])) / Double(n)
        }
        // the filter does smooth (the exact result differs from the input by much more than the error)
        XCTAssertGreaterThan(meanChange, 0.2)
        // measured: mean 0.020, max 0.088 against a smoothing of 0.30 (signal range ±2)
        XCTAssertLessThan(meanErr, 0.03, "mean |lattice − exact| \(meanErr), max \(maxErr), mean smoothing \(meanChange)")
        XCTAssertLessThan(maxErr, 0.12)
    }

    // MARK: inference

    func testConfidentLabelsOnAUniformImageStay() throws {
        let (h, w, c) = (20, 30, 4)
        let image = RGBImage(width: w, height: h, pixels: [UInt8](repeating: 128, count: 3 * w * h))
        let prob = Tensor(zeros: [c, h, w])
        var truth = [UInt8](repeating: 0, count: h * w)
        for y in 0..<h {
            for x in 0..<w {
                // blocks of different labels, each confident enough (log odds 10.3) that no Potts message
                // (at most w_gauss + w_bilateral = 7 with normalised kernels) can overturn it
                let label = (x / 10 + y / 10) % c
                truth[y * w + x] = UInt8(label)
                for ch in 0..<c { prob.data[ch * h * w + y * w + x] = ch == label ? 0.9999 : 0.0001 / Float(c - 1) }
            }
        }
        let labels = try DenseCRF.authors.labels(image: image, probabilities: prob)
        XCTAssertEqual(labels.values, truth)
        // with weak labels the same CRF does change them (so the check above can fail)
        for i in 0..<prob.count { prob.data[i] = prob.data[i] > 0.5 ? 0.4 : 0.6 / Float(c - 1) }
        XCTAssertNotEqual(try DenseCRF.authors.labels(image: image, probabilities: prob).values, truth)
    }

    /// A single pixel is its own only neighbour: with symmetric normalisation each message is Q itself,
    /// so Q ← softmax(log p + (w₁ + w₂)·Q) exactly.
    func testSinglePixelFollowsTheClosedForm() throws {
        let p: [Float] = [0.5, 0.3, 0.2]
        let prob = try Tensor(shape: [3, 1, 1], values: p)
        let image = RGBImage(width: 1, height: 1, pixels: [10, 200, 30])
        let crf = DenseCRF(iterations: 4)
        let q = try crf.marginals(image: image, probabilities: prob)
        var expected = p.map { Double($0) }
        for _ in 0..<crf.iterations {
            let e = zip(p, expected).map { log(Double($0.0)) + Double(crf.gaussianWeight + crf.bilateralWeight) * $0.1 }
            let m = e.max()!, z = e.reduce(0) { $0 + exp($1 - m) }
            expected = e.map { exp($0 - m) / z }
        }
        for k in 0..<3 { XCTAssertEqual(Double(q.data[k]), expected[k], accuracy: 1e-5) }
    }

    func testRowAndColumnImages() throws {
        for (h, w) in [(1, 57), (43, 1)] {
            let c = 5
            var rng = RNG(seed: UInt64(h * 100 + w))
            let prob = Tensor(zeros: [c, h, w])
            for i in 0..<(h * w) {
                let raw = (0..<c).map { _ in rng.uniform() + 0.05 }
                let z = raw.reduce(0, +)
                for k in 0..<c { prob.data[k * h * w + i] = raw[k] / z }
            }
            let image = RGBImage(width: w, height: h, pixels: (0..<(3 * h * w)).map { UInt8(truncatingIfNeeded: $0 * 7) })
            let q = try DenseCRF.authors.marginals(image: image, probabilities: prob)
            XCTAssertEqual(q.shape, [c, h, w])
            for i in 0..<(h * w) {
                let s = (0..<c).reduce(Float(0)) { $0 + q.data[$1 * h * w + i] }
                XCTAssertEqual(s, 1, accuracy: 1e-5)
            }
        }
    }

    func testSameResultForAnyNumberOfWorkers() throws {
        let (h, w, c) = (45, 61, 21)
        var rng = RNG(seed: 3)
        let prob = Tensor(zeros: [c, h, w])
        for i in 0..<prob.count { prob.data[i] = rng.uniform() }
        let image = RGBImage(width: w, height: h, pixels: (0..<(3 * h * w)).map { _ in UInt8(rng.uniform() * 255) })
        let one = try Parallel.withWorkers(1) { try DenseCRF.authors.marginals(image: image, probabilities: prob) }
        let two = try Parallel.withWorkers(2) { try DenseCRF.authors.marginals(image: image, probabilities: prob) }
        XCTAssertEqual(one.array, two.array)
    }

    func testBadInputIsRejectedWithAClearError() {
        let image = RGBImage(width: 4, height: 3, pixels: [UInt8](repeating: 0, count: 36))
        func message(_ body: () throws -> Any) -> String {
            do { _ = try body(); return "no error" } catch { return "\(error)" }
        }
        let nan = Tensor(shape: [2, 3, 4], repeating: 0.5)
        nan.data[2 * 12 - 1] = .nan
        XCTAssertTrue(message { try DenseCRF.authors.marginals(image: image, probabilities: nan) }.contains("class 1 at (x 3, y 2) is nan"))
        let negative = Tensor(shape: [2, 3, 4], repeating: 0.5)
        negative.data[5] = -0.1
        XCTAssertTrue(message { try DenseCRF.authors.marginals(image: image, probabilities: negative) }.contains("is -0.1"))
        let wrongSize = Tensor(shape: [2, 4, 4], repeating: 0.5)
        XCTAssertTrue(message { try DenseCRF.authors.marginals(image: image, probabilities: wrongSize) }.contains("4×4, the image 4×3"))
        XCTAssertTrue(message { try DenseCRF(gaussianXYStd: 0).marginals(image: image, probabilities: negative) }.contains("pos_xy_std"))
        XCTAssertTrue(message { try DenseCRF(iterations: -1).marginals(image: image, probabilities: negative) }.contains("iterations"))
    }

    func testSegmenterAppliesTheCRFWhenAsked() throws {
        let (model, recipe) = try ConcurrencyTests.tinyModel(seed: 1)
        let seg = Segmenter(model: model, recipe: recipe, classNames: ["bg", "a", "b", "c"])
        var rng = RNG(seed: 5)
        let image = RGBImage(width: 40, height: 32, pixels: (0..<(3 * 40 * 32)).map { _ in UInt8(rng.uniform() * 255) })
        let plain = try seg.segment(image, options: SegmentationOptions(scales: [1], flip: true))
        let refined = try seg.segment(image, options: SegmentationOptions(scales: [1], flip: true, crf: .authors))
        let direct = try DenseCRF.authors.marginals(image: image, probabilities: plain.probabilities)
        XCTAssertEqual(refined.probabilities.array, direct.array)
        XCTAssertEqual(refined.labels, DenseCRF.argmaxLabels(direct))
        XCTAssertThrowsError(try seg.segment(image, options: SegmentationOptions(crf: DenseCRF(bilateralRGBStd: -1))))
    }
}
