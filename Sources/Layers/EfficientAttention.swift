import TensorCore

/// Multi-head self-attention with spatial reduction (SegFormer's "efficient self-attention").
///
/// On tokens x (B, N, C) of an h×w grid: q = Linear(x); if sr > 1 the keys and values come from
/// x' = LayerNorm(Conv(k = s = sr)(x as a map)), else x' = x; k, v = split(Linear(x')) (k first);
/// logits = q·kᵀ per head; out = Linear(softmax(logits · head_dim^−½) · v).
///
/// Besides the output it returns the raw logits q·kᵀ (no scale, no softmax) — what the AFA head
/// consumes — average-pooled over sr×sr query cells when sr > 1 so they are square (B, heads, N', N').
/// Backward accepts a gradient for those raw logits too.
public final class EfficientAttention: Module {
    public let dim: Int, heads: Int, srRatio: Int
    // Declared in state-dict order (q, kv, sr, norm, proj).
    public let q: Linear, kv: Linear
    public let sr: Conv2d?
    public let norm: LayerNorm?
    public let proj: Linear
    public let scale: Float

    /// What backward needs besides the sub-layers' own state.
    private struct Saved {
        var b: Int, n: Int, m: Int, h: Int, w: Int
        var q: Tensor, kv: Tensor, probs: Tensor
    }

    public init(name: String, dim: Int, heads: Int, srRatio: Int, normEps: Float) {
        precondition(dim % heads == 0, "dim \(dim) not divisible by \(heads) heads")
        self.dim = dim; self.heads = heads; self.srRatio = srRatio
        q = Linear(name: key(name, "q"), in: dim, out: dim)
        kv = Linear(name: key(name, "kv"), in: dim, out: 2 * dim)
        proj = Linear(name: key(name, "proj"), in: dim, out: dim)
        if srRatio > 1 {
            sr = Conv2d(name: key(name, "sr"), in: dim, out: dim, kernel: srRatio, stride: srRatio)
            norm = LayerNorm(name: key(name, "norm"), features: dim, eps: normEps)
        } else {
            sr = nil; norm = nil
        }
        scale = Float(1 / Double(dim / heads).squareRoot())
    }

    /// Side of the pooled query grid (= the key grid when sr > 1).
    public func rawGrid(h: Int, w: Int) -> (Int, Int) { srRatio > 1 ? (h / srRatio, w / srRatio) : (h, w) }

    /// Returns (output (B, N, C), raw logits (B, heads, N', M)).
    public func forward(_ x: Tensor, h: Int, w: Int, _ ws: Workspace) throws -> (Tensor, Tensor) {
        guard x.rank == 3, x.shape[1] == h * w, x.shape[2] == dim else {
            throw LayerError.badInput(layer: q.weight.name, shape: x.shape, expected: "(B, \(h * w), \(dim))")
        }
        let b = x.shape[0], n = h * w, c = dim, hd = dim / heads
        let qt = try q.forward(x, ws)
        var src = x
        if let sr, let norm {
            let reduced = try sr.forward(try x.reshaped([b, h, w, c]), ws)
            src = try norm.forward(try reduced.reshaped([b, reduced.shape[1] * reduced.shape[2], c]), ws)
        }
        let m = src.shape[1]
        let kvt = try kv.forward(src, ws)
        let logits = Tensor(uninitialized: [b, heads, n, m])   // every element written by its head's GEMM
        forEachGEMMTask(b * heads) { t in
            let bi = t / heads, hi = t % heads
            sgemm(.none, .transposed, m: n, n: m, k: hd, a: qt.data + bi * n * c + hi * hd, lda: c,
                  b: kvt.data + bi * m * 2 * c + hi * hd, ldb: 2 * c, c: logits.data + t * n * m, ldc: m)
        }
        let probs = Tensor(uninitialized: logits.shape)
        Kernels.softmaxRows(logits.data, probs.data, rows: b * heads * n, cols: m, scale: scale)
        let attended = Tensor(uninitialized: [b, n, c])      // the heads' GEMMs write disjoint column blocks
        forEachGEMMTask(b * heads) { t in
            let bi = t / heads, hi = t % heads
            sgemm(.none, .none, m: n, n: hd, k: m, a: probs.data + t * n * m, lda: m,
                  b: kvt.data + bi * m * 2 * c + c + hi * hd, ldb: 2 * c,
                  c: attended.data + bi * n * c + hi * hd, ldc: c)
        }
        let out = try proj.forward(attended, ws)
        ws.save(Saved(b: b, n: n, m: m, h: h, w: w, q: qt, kv: kvt, probs: probs), for: self)
        return (out, try poolRaw(logits, b: b, h: h, w: w, m: m))
    }

    /// Average of the logits over sr×sr query cells (the grid is cropped to whole cells).
    func poolRaw(_ logits: Tensor, b: Int, h: Int, w: Int, m: Int) throws -> Tensor {
        guard srRatio > 1 else { return logits }
        let s = srRatio, (hs, ws) = rawGrid(h: h, w: w)
        let out = Tensor(zeros: [b, heads, hs * ws, m])
        let inv = 1 / Float(s * s)
        for t in 0..<(b * heads) {
            let src = logits.data + t * h * w * m, dst = out.data + t * hs * ws * m
            for cy in 0..<hs {
                for cx in 0..<ws {
                    let d = dst + (cy * ws + cx) * m
                    for y in (cy * s)..<(cy * s + s) {
                        for x in (cx * s)..<(cx * s + s) {
                            let row = src + (y * w + x) * m
                            for j in 0..<m { d[j] += row[j] }
                        }
                    }
                    for j in 0..<m { d[j] *= inv }
                }
            }
        }
        return out
    }

    /// Backward from the output gradient and, optionally, the raw-logit gradient. Returns dx.
    public func backward(_ dOut: Tensor, dRaw: Tensor? = nil, _ ws: Workspace) throws -> Tensor {
        let cc = try ws.take(Saved.self, for: self, name: q.weight.name)
        let (b, n, m, h, w) = (cc.b, cc.n, cc.m, cc.h, cc.w)
        let c = dim, hd = dim / heads
        let dAttended = try proj.backward(dOut, ws)
        // dProbs = dAttended_h · v_hᵀ ; dV_h = probs_hᵀ · dAttended_h
        let dProbs = Tensor(uninitialized: [b, heads, n, m])
        let dkv = Tensor(uninitialized: [b, m, 2 * c])      // k and v halves written below, per head
        forEachGEMMTask(b * heads) { t in
            let bi = t / heads, hi = t % heads
            let dA = dAttended.data + bi * n * c + hi * hd
            sgemm(.none, .transposed, m: n, n: m, k: hd, a: dA, lda: c,
                  b: cc.kv.data + bi * m * 2 * c + c + hi * hd, ldb: 2 * c, c: dProbs.data + t * n * m, ldc: m)
            sgemm(.transposed, .none, m: m, n: hd, k: n, a: cc.probs.data + t * n * m, lda: m, b: dA, ldb: c,
                  c: dkv.data + bi * m * 2 * c + c + hi * hd, ldc: 2 * c)
        }
        // Through the scaled softmax, then add the raw-logit gradient.
        let dLogits = dProbs
        Kernels.softmaxRowsBackward(cc.probs.data, dProbs.data, dLogits.data, rows: b * heads * n, cols: m, scale: scale)
        if let dRaw {
            let (hs, ws) = rawGrid(h: h, w: w)
            guard dRaw.shape == [b, heads, hs * ws, m] else {
                throw LayerError.badInput(layer: q.weight.name + " (raw-logit gradient)", shape: dRaw.shape,
                                          expected: "\([b, heads, hs * ws, m])")
            }
            try unpoolRawGradient(dRaw, into: dLogits, b: b, h: h, w: w, m: m)
        }
        // dQ_h = dLogits · k_h ; dK_h = dLogitsᵀ · q_h
        let dq = Tensor(uninitialized: [b, n, c])
        forEachGEMMTask(b * heads) { t in
            let bi = t / heads, hi = t % heads
            sgemm(.none, .none, m: n, n: hd, k: m, a: dLogits.data + t * n * m, lda: m,
                  b: cc.kv.data + bi * m * 2 * c + hi * hd, ldb: 2 * c, c: dq.data + bi * n * c + hi * hd, ldc: c)
            sgemm(.transposed, .none, m: m, n: hd, k: n, a: dLogits.data + t * n * m, lda: m,
                  b: cc.q.data + bi * n * c + hi * hd, ldb: c, c: dkv.data + bi * m * 2 * c + hi * hd, ldc: 2 * c)
        }
        let dx = try q.backward(dq, ws)
        var dSrc = try kv.backward(dkv, ws)
        if let sr, let norm {
            dSrc = try norm.backward(dSrc, ws)
            let dMap = try sr.backward(try dSrc.reshaped([b, h / srRatio, w / srRatio, c]), ws)
            try dx.addScaled(try dMap.reshaped([b, n, c]))
        } else {
            try dx.addScaled(dSrc)
        }
        return dx
    }

    func unpoolRawGradient(_ dRaw: Tensor, into dLogits: Tensor, b: Int, h: Int, w: Int, m: Int) throws {
        guard srRatio > 1 else { try dLogits.addScaled(dRaw); return }
        let s = srRatio, (hs, ws) = rawGrid(h: h, w: w)
        let inv = 1 / Float(s * s)
        for t in 0..<(b * heads) {
            let src = dRaw.data + t * hs * ws * m, dst = dLogits.data + t * h * w * m
            for cy in 0..<hs {
                for cx in 0..<ws {
                    let g = src + (cy * ws + cx) * m
                    for y in (cy * s)..<(cy * s + s) {
                        for x in (cx * s)..<(cx * s + s) {
                            let row = dst + (y * w + x) * m
                            for j in 0..<m { row[j] += g[j] * inv }
                        }
                    }
                }
            }
        }
    }
}
