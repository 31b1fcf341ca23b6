import Foundation
import Layers
import TensorCore

/// Pixel-Adaptive Refinement: repeated averaging of soft masks over 48 dilated neighbours, weighted
/// by how similar a neighbour's colour is (relative to the local spread of colours) plus a small
/// prior that prefers near neighbours.
///
/// For dilations d the neighbours are (−d,−d), (−d,0), (−d,+d), (0,−d), (0,+d), (+d,−d), (+d,0),
/// (+d,+d), with replicate (clamped) borders even when d exceeds the image. The kernel is
/// softmax_k(mean_rgb −(|I_k − I| / (std_k(I_k) + 1e-8) / w1)²) + w2·softmax_k(−(dist_k / (std(dist) + 1e-8) / w1)²)
/// with unbiased standard deviations over the 48 neighbours.
public struct PAR: Sendable {
    public var dilations: [Int]
    public var iterations: Int
    public var w1: Float
    public var w2: Float

    static let offsets: [(Int, Int)] = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]

    public init(dilations: [Int] = [1, 2, 4, 8, 12, 24], iterations: Int = 10, w1: Float = 0.3, w2: Float = 0.01) {
        self.dilations = dilations; self.iterations = iterations; self.w1 = w1; self.w2 = w2
    }

    public init(config: TrainConfig) {
        self.init(dilations: config.parDilations, iterations: config.parIters, w1: config.parW1, w2: config.parW2)
    }

    public var neighbourCount: Int { 8 * dilations.count }

    /// (dy, dx) of every neighbour in kernel order.
    var neighbourOffsets: [(Int, Int)] { dilations.flatMap { d in Self.offsets.map { ($0.0 * d, $0.1 * d) } } }

    /// The position prior: softmax over neighbours of −(dist / (std(dist) + 1e-8) / w1)², times w2.
    var positionPrior: [Float] {
        let dist = dilations.flatMap { d in Self.offsets.map { Float($0.0 != 0 && $0.1 != 0 ? 2.0.squareRoot() : 1.0) * Float(d) } }
        let n = Float(dist.count)
        let mean = dist.reduce(0, +) / n
        let std = (dist.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / (n - 1)).squareRoot()
        let logits = dist.map { v -> Float in let t = v / (std + 1e-8) / w1; return -t * t }
        let m = logits.max()!
        let e = logits.map { Foundation.exp($0 - m) }
        let z = e.reduce(0, +)
        return e.map { w2 * $0 / z }
    }

    /// Neighbour weights (48, H, W) for an image (3, H, W) with values in [0, 1].
    ///
    /// Sixteen neighbouring pixels of a row at a time, one per SIMD lane: each lane does the scalar
    /// sequence of operations (sums over the neighbours in kernel order, IEEE division and square root)
    /// with the exponential through `vexp` (a few ulps from libm's expf, which this ran through before),
    /// and each neighbour's weights are stored as one contiguous run of the output row.
    public func kernel(image: UnsafePointer<Float>, height h: Int, width w: Int) -> Tensor {
        let k = neighbourCount, hw = h * w
        let out = Tensor(uninitialized: [k, h, w])   // every element written below
        let offs = neighbourOffsets
        let prior = positionPrior
        let inv = 1 / w1
        let kp = out.data
        let dys = offs.map(\.0), dxs = offs.map(\.1)
        dys.withUnsafeBufferPointer { dys in dxs.withUnsafeBufferPointer { dxs in prior.withUnsafeBufferPointer { prior in
            Parallel.forEach(h) { y in
                // Per-row scratch on the stack: the 3×48 neighbour colours and the 48 logits, per lane.
                withUnsafeTemporaryAllocation(of: Vec.self, capacity: 4 * k) { scratch in
                    let nb = scratch.baseAddress!, logits = nb + 3 * k
                    var x0 = 0
                    while x0 < w {
                        let lanes = min(vecWidth, w - x0)
                        // gather the 48 neighbours of every channel (replicate borders): a plain load
                        // where all sixteen fall inside the row
                        for j in 0..<k {
                            let row = min(max(y + dys[j], 0), h - 1) * w
                            let xs = x0 + dxs[j]
                            if lanes == vecWidth && xs >= 0 && xs + vecWidth <= w {
                                for c in 0..<3 { nb[c * k + j] = load(image + c * hw + row + xs) }
                            } else {
                                for c in 0..<3 {
                                    var v = Vec(repeating: 0)
                                    for l in 0..<lanes { v[l] = image[c * hw + row + min(max(xs + l, 0), w - 1)] }
                                    nb[c * k + j] = v
                                }
                            }
                        }
                        for j in 0..<k { logits[j] = Vec(repeating: 0) }
                        for c in 0..<3 {
                            let ch = nb + c * k
                            var mean = Vec(repeating: 0)
                            for j in 0..<k { mean = mean + ch[j] }
                            mean = mean / Float(k)
                            var ss = Vec(repeating: 0)
                            for j in 0..<k { let d = ch[j] - mean; ss = ss + d * d }
                            let std = (ss / Float(k - 1)).squareRoot()
                            var centre = Vec(repeating: 0)
                            for l in 0..<lanes { centre[l] = image[c * hw + y * w + x0 + l] }
                            let scale = inv / (std + 1e-8)
                            for j in 0..<k {
                                let t = magnitude(ch[j] - centre) * scale
                                logits[j] = logits[j] - t * t
                            }
                        }
                        var m = Vec(repeating: -.infinity)
                        for j in 0..<k {
                            let v = logits[j] / 3
                            logits[j] = v
                            m = m.replacing(with: v, where: v .> m)
                        }
                        var z = Vec(repeating: 0)
                        for j in 0..<k {
                            let e = vexp(logits[j] - m)
                            logits[j] = e
                            z = z + e
                        }
                        let rz = 1 / z
                        let dst = kp + y * w + x0
                        for j in 0..<k {
                            let v = logits[j] * rz + prior[j]
                            if lanes == vecWidth { store(v, dst + j * hw) } else { for l in 0..<lanes { dst[j * hw + l] = v[l] } }
                        }
                        x0 += vecWidth
                    }
                }
            }
        } } }
        return out
    }

    /// |v| per lane (the sign bit cleared, as scalar `abs` does).
    @inline(__always) private func magnitude(_ v: Vec) -> Vec {
        unsafeBitCast(unsafeBitCast(v, to: SIMD16<UInt32>.self) & 0x7FFF_FFFF, to: Vec.self)
    }

    /// Refines masks (C, h, w) of any size against an image (3, H, W): the masks are resized to
    /// (H, W) with align_corners = true, then `iterations` rounds of mask ← Σ_k kernel_k · mask(neighbour k).
    public func refine(image: UnsafePointer<Float>, height h: Int, width w: Int, masks: Tensor) throws -> Tensor {
        let c = masks.shape[0]
        var cur = try resizeMasks(masks, h: h, w: w)
        let kern = kernel(image: image, height: h, width: w)
        try propagate(kernel: kern, masks: &cur, channels: c, height: h, width: w)
        return cur
    }

    /// Masks (C, mh, mw) → (C, h, w), bilinear with align_corners = true.
    public func resizeMasks(_ masks: Tensor, h: Int, w: Int) throws -> Tensor {
        let (c, mh, mw) = (masks.shape[0], masks.shape[1], masks.shape[2])
        if mh == h && mw == w { return masks.copy() }
        let r = BilinearResize(inH: mh, inW: mw, outH: h, outW: w, alignCorners: true)
        return try r.forwardNCHW(try masks.reshaped([1, c, mh, mw])).reshaped([c, h, w])
    }

    /// The refinement rounds with a precomputed kernel (48, H, W); masks (C, H, W) updated in place.
    public func propagate(kernel: Tensor, masks: inout Tensor, channels c: Int, height h: Int, width w: Int) throws {
        let hw = h * w, k = neighbourCount
        let offs = neighbourOffsets
        // Clamped source column of every x for every horizontal offset, built once.
        let colTable: [[Int]] = offs.map { (_, dx) in (0..<w).map { min(max($0 + dx, 0), w - 1) } }
        var next = Tensor(zeros: [c, h, w])
        let kp = kernel.data
        for _ in 0..<iterations {
            let src = masks.data, dst = next.data
            colTable.withUnsafeBufferPointer { cols in
                // One task per image row, all channels in it: the row's 48 kernel rows (48·W floats) stay
                // in cache for every channel. One task per (channel, row) read the whole kernel (48·H·W
                // floats, 19.7 MB at 320²) from memory once per channel and round.
                Parallel.forEach(h) { y in
                    for ch in 0..<c {
                        let out = dst + ch * hw + y * w
                        for x in 0..<w { out[x] = 0 }
                        for j in 0..<k {
                            let yy = min(max(y + offs[j].0, 0), h - 1)
                            let row = src + ch * hw + yy * w
                            let kr = kp + j * hw + y * w
                            let dx = offs[j].1
                            // interior: the neighbour is x + dx (a contiguous, vectorisable run); borders clamp
                            let lo = min(max(-dx, 0), w), hi = max(min(w - dx, w), lo)
                            let col = cols[j]
                            for x in 0..<lo { out[x] += kr[x] * row[col[x]] }
                            let shifted = row + dx
                            for x in lo..<hi { out[x] += kr[x] * shifted[x] }
                            for x in hi..<w { out[x] += kr[x] * row[col[x]] }
                        }
                    }
                }
            }
            swap(&masks, &next)
        }
    }
}
