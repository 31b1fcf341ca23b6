import Foundation
import TensorCore

/// A loss value with the gradient of that value with respect to the loss's input.
public struct LossResult {
    /// Accumulated in Double; finite differences through the network need more than float32 resolution.
    public var value: Double
    public var gradient: Tensor
}

/// The three AFA losses, each a forward (value) and backward (gradient) pair.
public enum Losses {
    /// Multi-label soft margin: mean over images and classes of
    /// −[t·log σ(x) + (1 − t)·log σ(−x)]. `logits`, `target`: (B, K).
    public static func multilabelSoftMargin(logits: Tensor, target: Tensor) throws -> LossResult {
        try target.expectShape(logits.shape, "multilabelSoftMargin target")
        let n = logits.count
        let grad = Tensor(zeros: logits.shape)
        var total = 0.0
        let inv = 1 / Float(n)
        for i in 0..<n {
            let x = logits.data[i], t = target.data[i]
            // log σ(x) = −softplus(−x), computed stably.
            let lsPos = -softplus(-x), lsNeg = -softplus(x)
            total -= Double(t * lsPos + (1 - t) * lsNeg)
            let s = 1 / (1 + Foundation.exp(-x))
            grad.data[i] = (s - t) * inv
        }
        return LossResult(value: total / Double(n), gradient: grad)
    }

    @inline(__always) static func softplus(_ x: Float) -> Float {
        x > 0 ? x + Foundation.log1p(Foundation.exp(-x)) : Foundation.log1p(Foundation.exp(x))
    }

    /// The segmentation loss split in two halves: cross entropy averaged over background pixels
    /// (label 0) and over foreground pixels (label ∉ {0, ignore}); loss = ½(bg + fg). A half without a
    /// valid pixel contributes 0 (the original gives NaN there). `logits`: (B, C, H, W) NCHW at label
    /// resolution; `label`: B·H·W class ids.
    public static func segmentation(logits: Tensor, label: [Int32], ignoreIndex: Int32)
        throws -> (loss: LossResult, bg: Double, fg: Double)
    {
        let (b, c, h, w) = (logits.shape[0], logits.shape[1], logits.shape[2], logits.shape[3])
        guard label.count == b * h * w else {
            throw TensorError.shapeMismatch(operation: "segmentation loss label (B·H·W values)", lhs: [b, h, w], rhs: [label.count])
        }
        let hw = h * w
        for v in label where v != ignoreIndex && (v < 0 || Int(v) >= c) {
            throw AFAError.invalidInput("segmentation label value \(v) outside 0..<\(c) (ignore \(ignoreIndex))")
        }
        let nBg = label.reduce(0) { $0 + ($1 == 0 ? 1 : 0) }
        let nFg = label.reduce(0) { $0 + ($1 != 0 && $1 != ignoreIndex ? 1 : 0) }
        let grad = Tensor(zeros: logits.shape)
        let wBg: Float = nBg > 0 ? 0.5 / Float(nBg) : 0
        let wFg: Float = nFg > 0 ? 0.5 / Float(nFg) : 0
        // Per pixel: −log softmax at the target; gradient (softmax − onehot)·weight.
        let rows = b * h
        var bgSums = [Double](repeating: 0, count: rows), fgSums = [Double](repeating: 0, count: rows)
        bgSums.withUnsafeMutableBufferPointer { bgp in
            fgSums.withUnsafeMutableBufferPointer { fgp in
                label.withUnsafeBufferPointer { lab in
                    let (bgs, fgs) = (bgp.baseAddress!, fgp.baseAddress!)
                    Parallel.forEach(rows) { row in
                        let bi = row / h, y = row % h
                        let base = logits.data + bi * c * hw + y * w
                        let gbase = grad.data + bi * c * hw + y * w
                        var sb = 0.0, sf = 0.0
                        for x in 0..<w {
                            let t = lab[row * w + x]
                            if t == ignoreIndex { continue }
                            var m = -Float.infinity
                            for k in 0..<c { m = max(m, base[k * hw + x]) }
                            var z: Float = 0
                            for k in 0..<c { z += Foundation.exp(base[k * hw + x] - m) }
                            let logZ = m + Foundation.log(z)
                            let nll = Double(logZ - base[Int(t) * hw + x])
                            let wt = t == 0 ? wBg : wFg
                            if t == 0 { sb += nll } else { sf += nll }
                            for k in 0..<c { gbase[k * hw + x] = Foundation.exp(base[k * hw + x] - logZ) * wt }
                            gbase[Int(t) * hw + x] -= wt
                        }
                        bgs[row] = sb; fgs[row] = sf
                    }
                }
            }
        }
        let bg = nBg > 0 ? bgSums.reduce(0, +) / Double(nBg) : 0
        let fg = nFg > 0 ? fgSums.reduce(0, +) / Double(nFg) : 0
        return (LossResult(value: 0.5 * (bg + fg), gradient: grad), bg, fg)
    }

    /// The affinity loss: ½·Σ_{t=1}(1 − p)/(n₁ + 1) + ½·Σ_{t=0} p/(n₀ + 1), targets 255 ignored.
    /// Returns the loss and the two denominators (counts plus one).
    public static func affinity(prediction: Tensor, target: [Int32])
        throws -> (loss: LossResult, posCount: Int, negCount: Int)
    {
        guard target.count == prediction.count else {
            throw TensorError.shapeMismatch(operation: "affinity loss target", lhs: prediction.shape, rhs: [target.count])
        }
        let pos = target.reduce(0) { $0 + ($1 == 1 ? 1 : 0) } + 1
        let neg = target.reduce(0) { $0 + ($1 == 0 ? 1 : 0) } + 1
        var sPos = 0.0, sNeg = 0.0
        let grad = Tensor(zeros: prediction.shape)
        let gp = Float(-0.5) / Float(pos), gn = Float(0.5) / Float(neg)
        for i in 0..<target.count {
            let p = prediction.data[i]
            switch target[i] {
            case 1: sPos += Double(1 - p); grad.data[i] = gp
            case 0: sNeg += Double(p); grad.data[i] = gn
            default: break
            }
        }
        let value = 0.5 * sPos / Double(pos) + 0.5 * sNeg / Double(neg)
        return (LossResult(value: value, gradient: grad), pos, neg)
    }
}
