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

    /// Returns (output (B, N, C), raw logits (B, heads, N', M), or nil when `keepRaw` is false).
    ///
    /// Per head the logits are computed, pooled, softmaxed and multiplied by the values a few query rows
    /// at a time, while those rows are in cache: a pass that keeps nothing never holds the whole
    /// (N, M) map, and one that records keeps only the probabilities backward needs (written in place
    /// over the logits). The blocks follow from the shapes alone, never from the worker count, so the
    /// results are the same for any number of threads.
    public func forward(_ x: Tensor, h: Int, w: Int, _ ws: Workspace, keepRaw: Bool = true) throws -> (Tensor, Tensor?) {
        guard x.rank == 3, x.shape[1] == h * w, x.shape[2] == dim else {
            throw LayerError.badInput(layer: q.weight.name, shape: x.shape, expected: "(B, \(h * w), \(dim))")
        }
        let b = x.shape[0], n = h * w, c = dim
        let qt = try q.forward(x, ws)
        var src = x
        if let sr, let norm {
            let reduced = try sr.forward(try x.reshaped([b, h, w, c]), ws)
            src = try norm.forward(try reduced.reshaped([b, reduced.shape[1] * reduced.shape[2], c]), ws)
        }
        let m = src.shape[1]
        let kvt = try kv.forward(src, ws)
        let (hs, wg) = rawGrid(h: h, w: w)
        let probs: Tensor? = ws.recording ? Tensor(uninitialized: [b, heads, n, m]) : nil
        // Pooled cells accumulate over their query rows (zeros first); with sr = 1 the raw logits are
        // the whole map, every element written by its rows' product.
        let raw: Tensor? = !keepRaw ? nil : srRatio > 1 ? Tensor(zeros: [b, heads, hs * wg, m]) : Tensor(uninitialized: [b, heads, n, m])
        let attended = Tensor(uninitialized: [b, n, c])      // the heads' products write disjoint column blocks
        attend(AttentionRows(b: b, n: n, m: m, h: h, w: w, q: qt, kv: kvt, probs: probs, raw: raw, out: attended))
        let out = try proj.forward(attended, ws)
        if let probs { ws.save(Saved(b: b, n: n, m: m, h: h, w: w, q: qt, kv: kvt, probs: probs), for: self) }
        return (out, raw)
    }

    /// The operands of `attend`.
    private struct AttentionRows {
        var b: Int, n: Int, m: Int, h: Int, w: Int
        var q: Tensor, kv: Tensor
        var probs: Tensor?, raw: Tensor?, out: Tensor
    }

    /// Logits, pooling, softmax and the product with the values, by blocks of query rows.
    ///
    /// A task is one (image, head, band of query rows); with sr > 1 a band is the s grid rows of one
    /// row of pooled cells (its pooled logits are complete when the task ends), plus one band for the
    /// rows below the last whole cell. A task works through its band a few grid rows at a time, in
    /// `probs` when recording, else in its worker's scratch block.
    private func attend(_ a: AttentionRows) {
        let (n, m, h, w) = (a.n, a.m, a.h, a.w)
        let c = dim, hd = dim / heads, s = srRatio
        let (hs, wg) = rawGrid(h: h, w: w)
        let targetFloats = 1 << 16                          // 256 kB of logits per block: fits in L2
        let bandRows: Int, blockRows: Int, bands: Int       // in queries
        if s > 1 {
            bandRows = s * w
            blockRows = w * min(s, max(1, targetFloats / max(w * m, 1)))
            bands = hs + (hs * s < h ? 1 : 0)
        } else {
            bandRows = max(1, targetFloats / max(m, 1))
            blockRows = bandRows
            bands = (n + bandRows - 1) / bandRows
        }
        let tasks = a.b * heads * bands
        let slots = Parallel.slotCount(tasks)
        let blockFloats = min(blockRows, n) * m
        let scratch: Tensor? = a.probs == nil ? Tensor(uninitialized: [slots, blockFloats]) : nil
        Parallel.forEach(tasks, slots: slots) { slot, t in
            let bh = t / bands, band = t % bands, bi = bh / heads, hi = bh % heads
            let q0 = band * bandRows, q1 = min(q0 + bandRows, n)
            let pooledRow = s > 1 && band < hs ? band : nil
            let kBase = a.kv.data + bi * m * 2 * c + hi * hd
            var r0 = q0
            while r0 < q1 {
                let rows = min(blockRows, q1 - r0)
                let block = a.probs.map { $0.data + (bh * n + r0) * m } ?? scratch!.data + slot * blockFloats
                let logits = s == 1 ? a.raw.map { $0.data + (bh * n + r0) * m } ?? block : block
                sgemm(.none, .transposed, m: rows, n: m, k: hd, a: a.q.data + (bi * n + r0) * c + hi * hd, lda: c,
                      b: kBase, ldb: 2 * c, c: logits, ldc: m)
                if let raw = a.raw, let cy = pooledRow {
                    poolRows(logits, gridRows: rows / w, w: w, m: m, into: raw.data + (bh * hs + cy) * wg * m, cellsPerRow: wg)
                }
                Kernels.softmaxRows(logits, block, rows: rows, cols: m, scale: scale)
                sgemm(.none, .none, m: rows, n: hd, k: m, a: block, lda: m, b: kBase + c, ldb: 2 * c,
                      c: a.out.data + (bi * n + r0) * c + hi * hd, ldc: c)
                r0 += rows
            }
            if let raw = a.raw, let cy = pooledRow {
                let row = raw.data + (bh * hs + cy) * wg * m
                let inv = 1 / Float(s * s)
                for j in 0..<(wg * m) { row[j] *= inv }
            }
        }
    }

    /// Adds the logits of `gridRows` whole grid rows into their row of pooled cells, each cell summing
    /// its s×s queries row by row, left to right (cells past the last whole one are not pooled).
    private func poolRows(_ logits: UnsafePointer<Float>, gridRows: Int, w: Int, m: Int,
                          into cells: UnsafeMutablePointer<Float>, cellsPerRow wg: Int) {
        let s = srRatio
        for i in 0..<gridRows {
            for cx in 0..<wg {
                let d = cells + cx * m
                for x in (cx * s)..<(cx * s + s) {
                    let row = logits + (i * w + x) * m
                    for j in 0..<m { d[j] += row[j] }
                }
            }
        }
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
