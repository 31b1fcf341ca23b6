import TensorCore

/// LayerNorm over the last axis: y = (x − μ) / √(σ² + eps) · γ + β (biased variance, per-layer eps).
public final class LayerNorm: Module {
    public let weight: Parameter
    public let bias: Parameter
    public let features: Int
    public let eps: Float

    public init(name: String, features: Int, eps: Float) {
        self.features = features
        self.eps = eps
        weight = Parameter(name: key(name, "weight"), shape: [features])
        bias = Parameter(name: key(name, "bias"), shape: [features])
        weight.value.fill(1)
    }

    /// Keeps x̂ and 1/σ per row for backward (when recording; otherwise x̂ is not written at all).
    public func forward(_ x: Tensor, _ ws: Workspace) throws -> Tensor {
        try normalize(x, plus: nil, keeping: nil, ws)
    }

    /// LayerNorm of a residual sum s = x + residual, the sum formed row by row in the same pass that
    /// normalises it: a pre-norm block's `x + branch` is then read from memory once, not written by an
    /// add and read back by the norm. s is formed in the output's rows and normalised in place. Same bits
    /// as `adding` and then `forward`.
    public func forward(_ x: Tensor, plus residual: Tensor, _ ws: Workspace) throws -> Tensor {
        try normalize(x, plus: checked(residual, x), keeping: nil, ws)
    }

    /// `forward(_:plus:_:)` that returns s as well, for a later residual to add to.
    public func forwardKeepingSum(_ x: Tensor, plus residual: Tensor,
                                  _ ws: Workspace) throws -> (sum: Tensor, normalized: Tensor) {
        let sum = Tensor(uninitialized: x.shape)
        return (sum, try normalize(x, plus: checked(residual, x), keeping: sum, ws))
    }

    private func checked(_ residual: Tensor, _ x: Tensor) throws -> Tensor {
        guard residual.shape == x.shape else {
            throw LayerError.badInput(layer: weight.name + " (residual)", shape: residual.shape, expected: "\(x.shape)")
        }
        return residual
    }

    /// y = LN(x), or LN(x + residual) with the sum written into `sum` if given (else into y's rows).
    private func normalize(_ x: Tensor, plus residual: Tensor?, keeping sum: Tensor?,
                           _ ws: Workspace) throws -> Tensor {
        guard x.shape.last == features else {
            throw LayerError.badInput(layer: weight.name, shape: x.shape, expected: "(…, \(features))")
        }
        let c = features, rows = x.count / c
        let y = Tensor(uninitialized: x.shape)
        let xh = ws.recording ? Tensor(uninitialized: x.shape) : nil
        var rstd = [Float](repeating: 0, count: ws.recording ? rows : 0)
        let g = weight.value.data, b = bias.value.data
        rstd.withUnsafeMutableBufferPointer { rs in
            let rsp = rs.baseAddress   // nil when not recording
            Parallel.forChunks(rows, grain: max(1, 8192 / c)) { rr in
                for r in rr {
                    var xr = UnsafePointer(x.data + r * c)
                    let yr = y.data + r * c, hr = xh.map { $0.data + r * c }
                    let vec = c / vecWidth * vecWidth
                    // 16 float lanes of partial sums (a row is at most a few thousand values), combined in Double
                    var acc = Vec(repeating: 0)
                    var j = 0
                    if let residual {
                        // the sum's row written as it is summed, then normalised from there (still in L1);
                        // the passes below read each element before they write it, so the sum may sit in
                        // the output's row
                        let sr = sum.map { $0.data + r * c } ?? yr, br = residual.data + r * c
                        while j < vec { let v = load(xr + j) + load(br + j); store(v, sr + j); acc += v; j += vecWidth }
                        for t in vec..<c { sr[t] = xr[t] + br[t] }
                        xr = UnsafePointer(sr)
                    } else {
                        while j < vec { acc += load(xr + j); j += vecWidth }
                    }
                    var s = 0.0
                    for l in 0..<vecWidth { s += Double(acc[l]) }
                    for t in vec..<c { s += Double(xr[t]) }
                    let mean = Float(s / Double(c))
                    let mv = Vec(repeating: mean)
                    var acc2 = Vec(repeating: 0)
                    j = 0
                    while j < vec { let d = load(xr + j) - mv; acc2 += d * d; j += vecWidth }
                    var v = 0.0
                    for l in 0..<vecWidth { v += Double(acc2[l]) }
                    for t in vec..<c { let d = Double(xr[t] - mean); v += d * d }
                    let inv = 1 / (Float(v / Double(c)) + eps).squareRoot()
                    let iv = Vec(repeating: inv)
                    j = 0
                    if let hr {
                        rsp![r] = inv
                        while j < vec {
                            let h = (load(xr + j) - mv) * iv
                            store(h, hr + j)
                            store(h * load(g + j) + load(b + j), yr + j)
                            j += vecWidth
                        }
                        for t in vec..<c {
                            let h = (xr[t] - mean) * inv
                            hr[t] = h
                            yr[t] = h * g[t] + b[t]
                        }
                    } else {
                        while j < vec { store((load(xr + j) - mv) * iv * load(g + j) + load(b + j), yr + j); j += vecWidth }
                        for t in vec..<c { yr[t] = (xr[t] - mean) * inv * g[t] + b[t] }
                    }
                }
            }
        }
        if let xh { ws.save((xh, rstd), for: self) }
        return y
    }

    /// dγ += Σ dy·x̂, dβ += Σ dy, dx = rstd · (g − mean(g) − x̂ · mean(g·x̂)) with g = dy·γ.
    public func backward(_ dy: Tensor, _ ws: Workspace) throws -> Tensor {
        let (xh, rstd) = try ws.take((Tensor, [Float]).self, for: self, name: weight.name)
        let dx = Tensor(uninitialized: xh.shape)   // every row written below
        try gradients(dy, xh, rstd, dx: dx, addingToDx: false, ws)
        return dx
    }

    /// Backward of a norm whose input also feeds a residual branch: adds this norm's input gradient into
    /// `dx`, which holds the gradient that reached the input by the other path (the fused form of
    /// `dx += backward(dy)`, same bits, with no tensor of its own).
    public func backward(_ dy: Tensor, accumulatingInto dx: Tensor, _ ws: Workspace) throws {
        let (xh, rstd) = try ws.take((Tensor, [Float]).self, for: self, name: weight.name)
        guard dx.shape == xh.shape else {
            throw LayerError.badInput(layer: weight.name + " (input gradient)", shape: dx.shape, expected: "\(xh.shape)")
        }
        try gradients(dy, xh, rstd, dx: dx, addingToDx: true, ws)
    }

    /// Parameter gradients into the store, the input gradient written into (or added to) `dx`.
    private func gradients(_ dy: Tensor, _ xh: Tensor, _ rstd: [Float], dx: Tensor, addingToDx: Bool,
                           _ ws: Workspace) throws {
        let c = features, rows = xh.count / c
        let g = weight.value.data
        let grain = max(1, 8192 / c)
        let chunks = Parallel.chunkCount(rows, grain: grain)
        // Per-chunk partial parameter gradients, added in chunk order (deterministic).
        var partial = [Double](repeating: 0, count: chunks * 2 * c)
        rstd.withUnsafeBufferPointer { rs in
            partial.withUnsafeMutableBufferPointer { pp in
                let rsp = rs.baseAddress!, ppp = pp.baseAddress!
                Parallel.forEach(chunks) { ch in
                    let pg = ppp + ch * 2 * c, pb = pg + c
                    let (lo, hi) = (ch * grain, min(rows, (ch + 1) * grain))
                    var r = lo
                    while r < hi {
                        // mean(g) and mean(g·x̂) of up to four rows at once, one lane per row: each lane is
                        // that row's serial sum in column order (a single row's two running sums are one
                        // dependent chain each, four cycles per element).
                        let k = min(4, hi - r)
                        let (d0, d1, d2, d3) = (dy.data + r * c, dy.data + (r + min(1, k - 1)) * c,
                                                dy.data + (r + min(2, k - 1)) * c, dy.data + (r + min(3, k - 1)) * c)
                        let (h0, h1, h2, h3) = (xh.data + r * c, xh.data + (r + min(1, k - 1)) * c,
                                                xh.data + (r + min(2, k - 1)) * c, xh.data + (r + min(3, k - 1)) * c)
                        var m1 = SIMD4<Float>(), m2 = SIMD4<Float>()
                        for j in 0..<c {
                            let gj = SIMD4(d0[j], d1[j], d2[j], d3[j]) * g[j]
                            m1 += gj
                            m2 += gj * SIMD4(h0[j], h1[j], h2[j], h3[j])
                        }
                        m1 /= Float(c); m2 /= Float(c)
                        for i in 0..<k {
                            let row = r + i
                            let dyr = dy.data + row * c, hr = xh.data + row * c, dxr = dx.data + row * c
                            // parameter-gradient partials in column lanes, still added row after row
                            var j = 0
                            while j + 8 <= c {
                                let d8 = UnsafeRawPointer(dyr + j).loadUnaligned(as: SIMD8<Float>.self)
                                let h8 = UnsafeRawPointer(hr + j).loadUnaligned(as: SIMD8<Float>.self)
                                let (gp, bp) = (UnsafeMutableRawPointer(pg + j), UnsafeMutableRawPointer(pb + j))
                                gp.storeBytes(of: gp.loadUnaligned(as: SIMD8<Double>.self) + SIMD8<Double>(d8 * h8), as: SIMD8<Double>.self)
                                bp.storeBytes(of: bp.loadUnaligned(as: SIMD8<Double>.self) + SIMD8<Double>(d8), as: SIMD8<Double>.self)
                                j += 8
                            }
                            while j < c { pg[j] += Double(dyr[j] * hr[j]); pb[j] += Double(dyr[j]); j += 1 }
                            let (a, b, inv) = (m1[i], m2[i], rsp[row])
                            if addingToDx {
                                for j in 0..<c { dxr[j] += inv * (dyr[j] * g[j] - a - hr[j] * b) }
                            } else {
                                for j in 0..<c { dxr[j] = inv * (dyr[j] * g[j] - a - hr[j] * b) }
                            }
                        }
                        r += k
                    }
                }
            }
        }
        let gw = try ws.gradient(weight).data, gb = try ws.gradient(bias).data
        for j in 0..<c {
            var sg = 0.0, sb = 0.0
            for ch in 0..<chunks { sg += partial[ch * 2 * c + j]; sb += partial[ch * 2 * c + c + j] }
            gw[j] += Float(sg)
            gb[j] += Float(sb)
        }
    }
}
