import TensorCore

/// Bilinear resize of channels-last maps (B, H, W, C) → (B, Ho, Wo, C), PyTorch's `interpolate`
/// semantics without antialiasing. NCHW maps are resized as (B·C, H, W, 1).
///
/// align_corners = false: src = (dst + ½)·(in/out) − ½, clamped below at 0;
/// align_corners = true:  src = dst·(in − 1)/(out − 1).
public struct BilinearResize: Sendable {
    public let inH: Int, inW: Int, outH: Int, outW: Int
    public let alignCorners: Bool
    /// Per output row/column: the two source indices and the weight of the second.
    let rows: [(Int, Int, Float)]
    let cols: [(Int, Int, Float)]

    public init(inH: Int, inW: Int, outH: Int, outW: Int, alignCorners: Bool = false) {
        self.inH = inH; self.inW = inW; self.outH = outH; self.outW = outW
        self.alignCorners = alignCorners
        rows = Self.axis(inN: inH, outN: outH, alignCorners: alignCorners)
        cols = Self.axis(inN: inW, outN: outW, alignCorners: alignCorners)
    }

    /// Source taps along one axis, computed in Float as PyTorch's CPU kernel does.
    static func axis(inN: Int, outN: Int, alignCorners: Bool) -> [(Int, Int, Float)] {
        (0..<outN).map { d in
            let src: Float
            if alignCorners {
                let scale: Float = outN > 1 ? Float(inN - 1) / Float(outN - 1) : 0
                src = scale * Float(d)
            } else {
                let scale = Float(inN) / Float(outN)
                src = max(scale * (Float(d) + 0.5) - 0.5, 0)
            }
            let i0 = min(Int(src), inN - 1)
            let i1 = min(i0 + 1, inN - 1)
            let l = src - Float(i0)
            return (i0, i1, l)
        }
    }

    /// Resizes `x` (B, inH, inW, C).
    public func forward(_ x: Tensor) throws -> Tensor {
        try check(x)
        let y = Tensor(uninitialized: [x.shape[0], outH, outW, x.shape[3]])
        try forward(x, into: y.data, pixelStride: x.shape[3])
        return y
    }

    private func check(_ x: Tensor) throws {
        guard x.rank == 4, x.shape[1] == inH, x.shape[2] == inW else {
            throw LayerError.badInput(layer: "BilinearResize", shape: x.shape, expected: "(B, \(inH), \(inW), C)")
        }
    }

    /// Resizes `x` (B, inH, inW, C) into `out`, output pixel p's C values at `out + p·pixelStride`:
    /// a channel block of a wider map (the decoder's concatenation), written in place.
    ///
    /// In two passes, as the interpolation separates: each source row that some output row reads is
    /// first interpolated along x (t = w0·a + w1·b at every output column), then each output row is
    /// w0·t(y0) + w1·t(y1) — PyTorch's h0·(w0·a + w1·b) + h1·(w0·c + w1·d), the same operations in the
    /// same order, so bit-identical to the direct form. An upsampling by k interpolates each source row
    /// along x once instead of for each of its k output rows, and the second pass runs over whole
    /// contiguous rows in vector lanes, also with one channel (NCHW planes).
    public func forward(_ x: Tensor, into out: UnsafeMutablePointer<Float>, pixelStride: Int) throws {
        try check(x)
        let (b, c) = (x.shape[0], x.shape[3])
        precondition(pixelStride >= c, "BilinearResize: pixel stride \(pixelStride) below \(c) channels")
        let rows = self.rows, cols = self.cols
        let (inH, inW, outH, outW) = (self.inH, self.inW, self.outH, self.outW)
        // The source rows the output reads (all of them unless downsampling), and where each one's
        // x-interpolated row goes.
        var slot = [Int](repeating: -1, count: inH), used: [Int] = []
        for (y0, y1, _) in rows { for y in [y0, y1] where slot[y] < 0 { slot[y] = 0; used.append(y) } }
        used.sort()
        for (k, y) in used.enumerated() { slot[y] = k }
        let rowFloats = outW * c, usedCount = used.count
        let across = Tensor(uninitialized: [b, usedCount, outW, c])
        used.withUnsafeBufferPointer { usedRows in
            Parallel.forEach(b * usedCount) { task in
                let bi = task / usedCount, src = x.data + (bi * inH + usedRows[task % usedCount]) * inW * c
                let dst = across.data + task * rowFloats
                if c == 1 {                                   // NCHW planes: no channel loop
                    for ox in 0..<outW {
                        let (x0, x1, lx) = cols[ox]
                        dst[ox] = (1 - lx) * src[x0] + lx * src[x1]
                    }
                } else {
                    for ox in 0..<outW {
                        let (x0, x1, lx) = cols[ox]
                        lerp(src + x0 * c, 1 - lx, src + x1 * c, lx, into: dst + ox * c, c)
                    }
                }
            }
        }
        slot.withUnsafeBufferPointer { slot in
            Parallel.forEach(b * outH) { task in
                let bi = task / outH, oy = task % outH
                let (y0, y1, ly) = rows[oy]
                let t0 = across.data + (bi * usedCount + slot[y0]) * rowFloats
                let t1 = across.data + (bi * usedCount + slot[y1]) * rowFloats
                let rowOut = out + (bi * outH + oy) * outW * pixelStride
                if pixelStride == c {
                    lerp(t0, 1 - ly, t1, ly, into: rowOut, rowFloats)
                } else {
                    for ox in 0..<outW { lerp(t0 + ox * c, 1 - ly, t1 + ox * c, ly, into: rowOut + ox * pixelStride, c) }
                }
            }
        }
    }

    /// The adjoint: scatter-adds dy (B, outH, outW, C) to (B, inH, inW, C).
    public func backward(_ dy: Tensor) throws -> Tensor {
        guard dy.rank == 4, dy.shape[1] == outH, dy.shape[2] == outW else {
            throw LayerError.badInput(layer: "BilinearResize (backward)", shape: dy.shape, expected: "(B, \(outH), \(outW), C)")
        }
        let (b, c) = (dy.shape[0], dy.shape[3])
        let dx = Tensor(zeros: [b, inH, inW, c])
        let rows = self.rows, cols = self.cols
        let (inH, inW, outH, outW) = (self.inH, self.inW, self.outH, self.outW)
        Parallel.forEach(b) { bi in
            for oy in 0..<outH {
                let (y0, y1, ly) = rows[oy]
                let hy = 1 - ly
                let r0 = dx.data + (bi * inH + y0) * inW * c, r1 = dx.data + (bi * inH + y1) * inW * c
                let g = dy.data + (bi * outH + oy) * outW * c
                for ox in 0..<outW {
                    let (x0, x1, lx) = cols[ox]
                    let hx = 1 - lx
                    // The four corner weights, (hy·hx)·v as written out element by element. In lanes the
                    // four updates still run one after the other (at an edge two corners are one pixel),
                    // so every dx element gets the same additions in the same order.
                    let (w00, w01, w10, w11) = (hy * hx, hy * lx, ly * hx, ly * lx)
                    let (a00, a01, a10, a11) = (r0 + x0 * c, r0 + x1 * c, r1 + x0 * c, r1 + x1 * c)
                    let gp = g + ox * c
                    var j = 0
                    while j + vecWidth <= c {
                        let v = load(gp + j)
                        store(load(a00 + j) + w00 * v, a00 + j)
                        store(load(a01 + j) + w01 * v, a01 + j)
                        store(load(a10 + j) + w10 * v, a10 + j)
                        store(load(a11 + j) + w11 * v, a11 + j)
                        j += vecWidth
                    }
                    while j < c {
                        let v = gp[j]
                        a00[j] += w00 * v
                        a01[j] += w01 * v
                        a10[j] += w10 * v
                        a11[j] += w11 * v
                        j += 1
                    }
                }
            }
        }
        return dx
    }

    /// Resizes an NCHW tensor (B, C, H, W) by treating each plane as a one-channel map.
    public func forwardNCHW(_ x: Tensor) throws -> Tensor {
        guard x.rank == 4 else { throw LayerError.badInput(layer: "BilinearResize", shape: x.shape, expected: "(B, C, H, W)") }
        let y = try forward(try x.reshaped([x.shape[0] * x.shape[1], x.shape[2], x.shape[3], 1]))
        return try y.reshaped([x.shape[0], x.shape[1], outH, outW])
    }

    /// Backward of `forwardNCHW`.
    public func backwardNCHW(_ dy: Tensor) throws -> Tensor {
        guard dy.rank == 4 else { throw LayerError.badInput(layer: "BilinearResize", shape: dy.shape, expected: "(B, C, H, W)") }
        let dx = try backward(try dy.reshaped([dy.shape[0] * dy.shape[1], dy.shape[2], dy.shape[3], 1]))
        return try dx.reshaped([dy.shape[0], dy.shape[1], inH, inW])
    }
}

/// out[j] = wa·a[j] + wb·b[j], j < n.
@inline(__always)
private func lerp(_ a: UnsafePointer<Float>, _ wa: Float, _ b: UnsafePointer<Float>, _ wb: Float,
                  into out: UnsafeMutablePointer<Float>, _ n: Int) {
    let va = Vec(repeating: wa), vb = Vec(repeating: wb)
    var j = 0
    while j + vecWidth <= n { store(va * load(a + j) + vb * load(b + j), out + j); j += vecWidth }
    while j < n { out[j] = wa * a[j] + wb * b[j]; j += 1 }
}
