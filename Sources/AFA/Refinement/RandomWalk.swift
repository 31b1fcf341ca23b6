import Foundation
import TensorCore

/// Random-walk propagation of CAMs with the predicted affinity (no gradients).
public enum RandomWalk {
    /// (N, N) 0/1 window on an h×w grid: 1 where two cells are within `radius` in both axes.
    public static func radiusMask(height h: Int, width w: Int, radius: Int) -> [Int32] {
        let n = h * w
        var m = [Int32](repeating: 0, count: n * n)
        for i in 0..<n {
            let (yi, xi) = (i / w, i % w)
            for j in 0..<n where abs(yi - j / w) <= radius && abs(xi - j % w) <= radius { m[i * n + j] = 1 }
        }
        return m
    }

    /// The transition matrix of image `i`: A masked to the window (nil = no mask), squared, every
    /// column divided by (its sum + eps). `aff`: (≥ B, N, N).
    public static func transition(aff: Tensor, image i: Int, mask: [Int32]?, normEps: Float) -> Tensor {
        let n = aff.shape[1]
        let a = Tensor(zeros: [n, n])
        let src = aff.data + i * n * n
        for r in 0..<(n * n) {
            let v = (mask == nil || mask![r] != 0) ? src[r] : 0
            a.data[r] = v * v
        }
        var colSum = [Float](repeating: 0, count: n)
        for r in 0..<n { for c in 0..<n { colSum[c] += a.data[r * n + c] } }
        for r in 0..<n { for c in 0..<n { a.data[r * n + c] /= colSum[c] + normEps } }
        return a
    }

    /// Propagates CAMs (B, C−1, h, w) with a constant background score: for each image, the rows
    /// [background; present classes] are softmaxed over classes and multiplied by its transition
    /// matrix. Returns (B, C, h, w) with channel 0 = background and absent classes 0.
    public static func propagate(cams: Tensor, aff: Tensor, mask: [Int32]?, clsLabel: Tensor,
                                 backgroundScore: Float, normEps: Float) throws -> Tensor {
        let (b, k, h, w) = (cams.shape[0], cams.shape[1], cams.shape[2], cams.shape[3])
        let n = h * w
        guard aff.rank == 3, aff.shape[0] >= b, aff.shape[1] == n, aff.shape[2] == n else {
            throw TensorError.shapeMismatch(operation: "random walk: affinity (≥B, N, N) for CAMs \(cams.shape)", lhs: aff.shape, rhs: [b, n, n])
        }
        if let mask, mask.count != n * n {
            throw TensorError.shapeMismatch(operation: "random walk: window mask", lhs: [mask.count], rhs: [n * n])
        }
        let out = Tensor(zeros: [b, k + 1, h, w])
        for i in 0..<b {
            let keys = [0] + (0..<k).filter { clsLabel.data[i * k + $0] != 0 }.map { $0 + 1 }
            let probs = Tensor(zeros: [keys.count, n])
            for p in 0..<n {
                var m = -Float.infinity
                var vals = [Float](repeating: 0, count: keys.count)
                for (r, key) in keys.enumerated() {
                    vals[r] = key == 0 ? backgroundScore : cams.data[(i * k + key - 1) * n + p]
                    m = max(m, vals[r])
                }
                var z: Float = 0
                for r in 0..<vals.count { vals[r] = Foundation.exp(vals[r] - m); z += vals[r] }
                for r in 0..<vals.count { probs.data[r * n + p] = vals[r] / z }
            }
            let a = transition(aff: aff, image: i, mask: mask, normEps: normEps)
            let res = Tensor(zeros: [keys.count, n])
            sgemm(.none, .none, m: keys.count, n: n, k: n, a: probs.data, lda: n, b: a.data, ldb: n, c: res.data, ldc: n)
            for (r, key) in keys.enumerated() { (out.data + (i * (k + 1) + key) * n).update(from: res.data + r * n, count: n) }
        }
        return out
    }

    /// Affinity labels (B, N, N), N = grid.h · grid.w, from a label map (B, H, W): the map is sampled on
    /// the token grid of the attention the labels supervise (`ImageOps.stage4Grid` of the crop; H/16 ×
    /// W/16 for the method's strides and a crop divisible by 16), by default nearest, as the method does
    /// (see `AffinityLabelSampling`); 1 where two tokens share a label, 0 where they differ, `ignore`
    /// where either is `ignore` or the window mask is 0.
    public static func affinityLabel(labels: [Int32], batch b: Int, height h: Int, width w: Int,
                                     grid: (h: Int, w: Int), mask: [Int32]?, ignore: Int32 = 255,
                                     sampling: AffinityLabelSampling = .nearest) -> [Int32] {
        let (gh, gw) = grid
        precondition(gh >= 1 && gw >= 1 && gh <= h && gw <= w, "grid \(gh)×\(gw) for a \(h)×\(w) label map")
        let n = gh * gw
        let rows = nearestSource(inN: h, outN: gh), cols = nearestSource(inN: w, outN: gw)
        var out = [Int32](repeating: ignore, count: b * n * n)
        var tally = sampling == .majority ? [Int](repeating: 0, count: 256) : []
        for i in 0..<b {
            let small = (0..<n).map { p -> Int32 in
                let (gy, gx) = (p / gw, p % gw)
                let nearest = labels[(i * h + rows[gy]) * w + cols[gx]]
                guard sampling == .majority else { return nearest }
                // the cell: from this grid point's source pixel up to the next one's (or the map's edge)
                let (y1, x1) = (gy + 1 < gh ? rows[gy + 1] : h, gx + 1 < gw ? cols[gx + 1] : w)
                for y in rows[gy]..<y1 {
                    for x in cols[gx]..<x1 {
                        let l = Int(labels[(i * h + y) * w + x])
                        precondition((0..<256).contains(l), "labels and ignore must be in 0...255, got \(l)")
                        tally[l] += 1
                    }
                }
                let top = tally.max()!
                let winner = tally[Int(nearest)] == top ? nearest : Int32(tally.firstIndex(of: top)!)
                tally.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
                return winner
            }
            for p in 0..<n {
                for q in 0..<n {
                    if small[p] == ignore || small[q] == ignore { continue }
                    if let mask, mask[p * n + q] == 0 { continue }
                    out[(i * n + p) * n + q] = small[p] == small[q] ? 1 : 0
                }
            }
        }
        return out
    }

    /// PyTorch's `nearest` source index: floor(dst · in/out), computed in Float.
    static func nearestSource(inN: Int, outN: Int) -> [Int] {
        let scale = Float(inN) / Float(outN)
        return (0..<outN).map { min(Int((Float($0) * scale).rounded(.down)), inN - 1) }
    }
}

/// How the affinity label's grid point takes its value from the label map's cell (16×16 pixels for the
/// method's strides at crop sizes divisible by 16).
public enum AffinityLabelSampling: String, Codable, Sendable, CaseIterable {
    /// The pixel at the grid point's nearest-neighbour source (PyTorch's `nearest`): the method's. A
    /// small object may hold no grid point at all.
    case nearest
    /// The most frequent label among the cell's pixels, `ignore` counted as a label; a tie goes to the
    /// nearest pixel's label when it is among the most frequent, else to the smallest label. Not the
    /// method's; the tiny recipe's default, chosen on the quality harness's six datasets (docs/training.md).
    case majority

    /// A misspelt value names the choices (in a recipe file the error also names the key).
    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        let text = try c.decode(String.self)
        guard let value = Self(rawValue: text) else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription:
                "'\(text)' is not one of \(Self.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        self = value
    }
}
