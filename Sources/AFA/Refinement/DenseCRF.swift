import Foundation
import ImageIO
import TensorCore

/// Fully-connected CRF post-processing of segmentation probabilities (Krähenbühl & Koltun, "Efficient
/// Inference in Fully Connected CRFs with Gaussian Edge Potentials", 2011), as the authors' test
/// protocol applies it after multi-scale fusion.
///
/// The unary is U = −log(clip(p, 1e-5, 1)). Two Potts-weighted pairwise kernels act on the marginals:
/// a Gaussian on pixel position (x/σxy, y/σxy) and a bilateral one on position and colour
/// (x/σxy, y/σxy, r/σrgb, g/σrgb, b/σrgb). Each is filtered on a permutohedral lattice with symmetric
/// normalisation: n = 1/√(K̃1 + 1e-20) multiplied in before and after the lattice pass, so the
/// kernel rows sum to about one whatever the image. Mean-field inference starts from Q = softmax(−U)
/// and repeats Q ← softmax(−U + Σₖ wₖ·n⊙K̃ₖ(n⊙Q)) per pixel.
///
/// The defaults are the authors' test-time parameters (10 iterations; Gaussian σ 3, weight 3;
/// bilateral σxy 64, σrgb 5, weight 4).
public struct DenseCRF: Sendable, Equatable, Codable {
    /// Mean-field iterations.
    public var iterations: Int
    /// Standard deviation of the position-only kernel, in pixels (`pos_xy_std`).
    public var gaussianXYStd: Float
    /// Potts weight of the position-only kernel (`pos_w`).
    public var gaussianWeight: Float
    /// Position standard deviation of the bilateral kernel, in pixels (`bi_xy_std`).
    public var bilateralXYStd: Float
    /// Colour standard deviation of the bilateral kernel, in 0–255 units (`bi_rgb_std`).
    public var bilateralRGBStd: Float
    /// Potts weight of the bilateral kernel (`bi_w`).
    public var bilateralWeight: Float

    enum CodingKeys: String, CodingKey {
        case iterations = "iters", gaussianXYStd = "pos_xy_std", gaussianWeight = "pos_w"
        case bilateralXYStd = "bi_xy_std", bilateralRGBStd = "bi_rgb_std", bilateralWeight = "bi_w"
    }

    public init(iterations: Int = 10, gaussianXYStd: Float = 3, gaussianWeight: Float = 3,
                bilateralXYStd: Float = 64, bilateralRGBStd: Float = 5, bilateralWeight: Float = 4) {
        self.iterations = iterations
        self.gaussianXYStd = gaussianXYStd; self.gaussianWeight = gaussianWeight
        self.bilateralXYStd = bilateralXYStd; self.bilateralRGBStd = bilateralRGBStd; self.bilateralWeight = bilateralWeight
    }

    /// The authors' test-time parameters.
    public static let authors = DenseCRF()

    /// Throws unless the iteration count is in 0...1000, the standard deviations positive and finite and
    /// the weights finite.
    public func validate() throws {
        guard (0...1000).contains(iterations) else { throw AFAError.invalidInput("dense CRF: iterations \(iterations) not in 0...1000") }
        for (name, v) in [("pos_xy_std", gaussianXYStd), ("bi_xy_std", bilateralXYStd), ("bi_rgb_std", bilateralRGBStd)]
        where !(v.isFinite && v > 0) {
            throw AFAError.invalidInput("dense CRF: \(name) must be positive and finite, got \(v)")
        }
        for (name, v) in [("pos_w", gaussianWeight), ("bi_w", bilateralWeight)] where !v.isFinite {
            throw AFAError.invalidInput("dense CRF: \(name) must be finite, got \(v)")
        }
    }

    /// Mean-field marginals (C, H, W) for the probabilities `probabilities` (C, H, W) of `image`.
    /// Probabilities must be finite and non-negative (they need not sum to one: the unary clips them).
    public func marginals(image: RGBImage, probabilities: Tensor) throws -> Tensor {
        try validate()
        guard probabilities.rank == 3, probabilities.shape[0] >= 1 else {
            throw AFAError.invalidInput("dense CRF: probabilities of shape \(probabilities.shape), expected (C, H, W)")
        }
        let (c, h, w) = (probabilities.shape[0], probabilities.shape[1], probabilities.shape[2])
        guard h == image.height, w == image.width, image.pixels.count == 3 * h * w else {
            throw AFAError.invalidInput("dense CRF: probabilities are \(w)×\(h), the image \(image.width)×\(image.height)")
        }
        let n = h * w
        for ch in 0..<c {
            let p = probabilities.data + ch * n
            for i in 0..<n where !(p[i] >= 0 && p[i].isFinite) {
                throw AFAError.invalidInput("dense CRF: probability of class \(ch) at (x \(i % w), y \(i / w)) is \(p[i]); expected finite values ≥ 0")
            }
        }
        let out = Tensor(zeros: [c, h, w])
        if n == 0 { return out }

        // Pixel-major buffers (the lattice filters C values per point), each pixel's row padded to a
        // multiple of 8 channels with zeros so that the filter runs on whole SIMD blocks.
        let cp = (c + 7) / 8 * 8
        let kernels = [PairwiseKernel(features: Self.positionFeatures(height: h, width: w, std: gaussianXYStd), dimension: 2,
                                      weight: gaussianWeight, channels: cp),
                       PairwiseKernel(features: Self.bilateralFeatures(image, std: bilateralXYStd, rgbStd: bilateralRGBStd), dimension: 5,
                                      weight: bilateralWeight, channels: cp)]
        var unary = [Float](repeating: 0, count: n * cp)
        var q = [Float](repeating: 0, count: n * cp)
        let grain = max(64, 8192 / cp)
        let workers = Parallel.workers
        let views = kernels.map(\.view)
        let splats = kernels.indices.flatMap { k in kernels[k].lattice.splatRanges(parts: workers).map { (k, $0) } }
        unary.withUnsafeMutableBufferPointer { ub in
            q.withUnsafeMutableBufferPointer { qb in
                let (u, qp, prob, dst) = (ub.baseAddress!, qb.baseAddress!, probabilities.data, out.data)
                // U = −log(clip(p, 1e-5, 1))
                Parallel.forChunks(n, grain: grain) { r in
                    for i in r { for ch in 0..<c { u[i * cp + ch] = -logf(min(max(prob[ch * n + i], 1e-5), 1)) } }
                }
                // Q = softmax(−U + Σₖ wₖ·nₖ⊙K̃ₖ(nₖ⊙Q)); the first pass (Q₀) has no messages. Per iteration
                // both kernels splat in one parallel region (a task per kernel and range of vertices, each
                // streaming Q), and Q is written once: the slices, the sum and the softmax are one pass.
                var blurred: [UnsafePointer<Float>] = []
                for it in 0...iterations {
                    if it > 0 {
                        Parallel.forEach(splats.count) { t in
                            let (k, range) = splats[t]
                            kernels[k].lattice.splat(qp, scale: views[k].norm, channels: cp, into: kernels[k].buffers, vertices: range)
                        }
                        blurred = kernels.map { $0.lattice.blur($0.buffers) }
                    }
                    let messages = blurred
                    Parallel.forChunks(n, grain: grain) { r in
                        withUnsafeTemporaryAllocation(of: Float.self, capacity: cp) { tmp in
                            let sliced = tmp.baseAddress!
                            for i in r {
                                let e = qp + i * cp
                                for k in stride(from: 0, to: cp, by: 8) { Self.store8(-Self.load8(u + i * cp + k), e + k) }
                                for (j, values) in messages.enumerated() {
                                    let v = views[j]
                                    v.slicer.slice(values, point: i, channels: cp, into: sliced)
                                    let (wk, nk) = (v.weight, v.norm[i])
                                    for k in stride(from: 0, to: cp, by: 8) {
                                        Self.store8(Self.load8(e + k) + wk * (Self.load8(sliced + k) * nk), e + k)
                                    }
                                }
                            }
                        }
                        Self.softmax(qp, points: r, channels: c, stride: cp)
                    }
                }
                Parallel.forChunks(n, grain: grain) { r in
                    for ch in 0..<c { for i in r { dst[ch * n + i] = qp[i * cp + ch] } }
                }
            }
        }
        withExtendedLifetime(kernels) {}
        return out
    }

    /// The label of every pixel: argmax of the marginals over the classes.
    public func labels(image: RGBImage, probabilities: Tensor) throws -> LabelMap {
        let q = try marginals(image: image, probabilities: probabilities)
        return Self.argmaxLabels(q)
    }

    /// Argmax over the first axis of (C, H, W) as a label map (first maximum wins).
    public static func argmaxLabels(_ q: Tensor) -> LabelMap {
        let (c, h, w) = (q.shape[0], q.shape[1], q.shape[2])
        let n = h * w
        var values = [UInt8](repeating: 0, count: n)
        for i in 0..<n {
            var best = 0, m = q.data[i]
            for ch in 1..<max(c, 1) where q.data[ch * n + i] > m { m = q.data[ch * n + i]; best = ch }
            values[i] = UInt8(clamping: best)
        }
        return LabelMap(width: w, height: h, values: values)
    }

    /// exp and normalise in place per point: q = exp(e − max e) / Σ exp(e − max e) over the first `c`
    /// values of each row of `stride` (a multiple of 8); the padding ends at zero. The exponentials are
    /// taken 16 at a time over the run of rows, the padding pushed far below range first.
    static func softmax(_ q: UnsafeMutablePointer<Float>, points: Range<Int>, channels c: Int, stride: Int) {
        let blocks = stride / 8, last = (blocks - 1) * 8
        let pad = SIMD8<Int32>(0, 1, 2, 3, 4, 5, 6, 7) .>= SIMD8<Int32>(repeating: Int32(c - last))
        for i in points {
            let row = q + i * stride
            var mx = load8(row + last).replacing(with: -.infinity, where: pad)
            for b in 0..<(blocks - 1) { let v = load8(row + 8 * b); mx.replace(with: v, where: v .> mx) }
            var m = mx[0]
            for l in 1..<8 { m = max(m, mx[l]) }
            for b in 0..<blocks { store8(load8(row + 8 * b) - m, row + 8 * b) }
            store8(load8(row + last).replacing(with: -1000, where: pad), row + last)
        }
        var j = points.lowerBound * stride
        let end = points.upperBound * stride
        while j + vecWidth <= end { store(vexp(load(q + j)), q + j); j += vecWidth }
        while j < end { q[j] = sexp(q[j]); j += 1 }
        for i in points {
            let row = q + i * stride
            store8(load8(row + last).replacing(with: 0, where: pad), row + last)
            var partial = SIMD8<Float>()
            for b in 0..<blocks { partial += load8(row + 8 * b) }
            var z = partial[0]
            for l in 1..<8 { z += partial[l] }
            for b in 0..<blocks { store8(load8(row + 8 * b) / z, row + 8 * b) }
        }
    }

    @inline(__always) static func load8(_ p: UnsafePointer<Float>) -> SIMD8<Float> { UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self) }
    @inline(__always) static func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
    }

    /// (x/σ, y/σ) per pixel, row by row.
    static func positionFeatures(height h: Int, width w: Int, std: Float) -> [Float] {
        var f = [Float](repeating: 0, count: 2 * h * w)
        f.withUnsafeMutableBufferPointer { fb in
            let f = fb.baseAddress!
            Parallel.forChunks(h, grain: 16) { rows in
                for y in rows { for x in 0..<w { f[2 * (y * w + x)] = Float(x) / std; f[2 * (y * w + x) + 1] = Float(y) / std } }
            }
        }
        return f
    }

    /// (x/σ, y/σ, r/σrgb, g/σrgb, b/σrgb) per pixel, row by row.
    static func bilateralFeatures(_ image: RGBImage, std: Float, rgbStd: Float) -> [Float] {
        let (h, w) = (image.height, image.width)
        var f = [Float](repeating: 0, count: 5 * h * w)
        f.withUnsafeMutableBufferPointer { fb in
            image.pixels.withUnsafeBufferPointer { pb in
                let (f, px) = (fb.baseAddress!, pb.baseAddress!)
                Parallel.forChunks(h, grain: 16) { rows in
                    for y in rows {
                        for x in 0..<w {
                            let i = y * w + x
                            f[5 * i] = Float(x) / std
                            f[5 * i + 1] = Float(y) / std
                            for ch in 0..<3 { f[5 * i + 2 + ch] = Float(px[3 * i + ch]) / rgbStd }
                        }
                    }
                }
            }
        }
        return f
    }
}

/// One Potts-weighted pairwise term: its lattice, its symmetric normalisation and the buffers its filter
/// needs, made per call (per image). Its message to the energy is −Potts(n⊙K̃(n⊙Q)) = w·n⊙K̃(n⊙Q).
struct PairwiseKernel {
    let lattice: PermutohedralLattice
    /// 1/√(K̃1 + 1e-20) per point, in memory of its own (read through a plain pointer in the hot loops).
    let norm: FloatMemory
    let weight: Float
    let buffers: PermutohedralLattice.Buffers

    init(features: [Float], dimension: Int, weight: Float, channels: Int) {
        let n = features.count / dimension
        let lattice = features.withUnsafeBufferPointer { PermutohedralLattice(features: $0.baseAddress!, count: n, dimension: dimension) }
        var ones = [Float](repeating: 1, count: n)
        ones.withUnsafeMutableBufferPointer { p in lattice.filter(p.baseAddress!, into: p.baseAddress!, channels: 1) }
        self.lattice = lattice
        norm = FloatMemory(ones.map { Float(1.0 / (Double($0) + 1e-20).squareRoot()) })
        self.weight = weight
        buffers = .init(lattice: lattice, channels: channels)
    }

    /// Plain pointers for the per-pixel loop (valid while the kernel lives).
    struct View {
        let slicer: PermutohedralLattice.Slicer
        let norm: UnsafePointer<Float>
        let weight: Float
    }

    var view: View { View(slicer: lattice.slicer, norm: norm.pointer, weight: weight) }
}

/// A copy of a float array in memory of its own, read through a plain pointer.
final class FloatMemory {
    let pointer: UnsafeMutablePointer<Float>
    init(_ values: [Float]) {
        pointer = .allocate(capacity: max(values.count, 1))
        pointer.initialize(from: values, count: values.count)
    }
    deinit { pointer.deallocate() }
}
