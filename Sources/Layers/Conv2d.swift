import TensorCore

/// 2-D convolution on channels-last maps (B, H, W, Cin) → (B, Ho, Wo, Cout), by im2col + GEMM.
///
/// The weight keeps PyTorch's layout (Cout, Cin/groups, kh, kw). For the GEMM it is reordered to
/// (Cout, kh, kw, Cin/groups) so each im2col row — one output pixel — is gathered as kh runs of
/// kw·Cin contiguous input values; when stride equals the kernel and there is no padding this is a
/// plain patchify. Zero padding.
public final class Conv2d: Module {
    public let weight: Parameter
    public let bias: Parameter?
    public let inChannels: Int, outChannels: Int
    public let kernel: Int, stride: Int, padding: Int, groups: Int

    public init(name: String, in inChannels: Int, out outChannels: Int, kernel: Int, stride: Int = 1,
                padding: Int = 0, groups: Int = 1, bias: Bool = true) {
        precondition(inChannels % groups == 0 && outChannels % groups == 0, "channels not divisible by groups")
        self.inChannels = inChannels; self.outChannels = outChannels
        self.kernel = kernel; self.stride = stride; self.padding = padding; self.groups = groups
        weight = Parameter(name: key(name, "weight"), shape: [outChannels, inChannels / groups, kernel, kernel])
        self.bias = bias ? Parameter(name: key(name, "bias"), shape: [outChannels]) : nil
    }

    /// Output size along one axis.
    public func outputSize(_ n: Int) -> Int { (n + 2 * padding - kernel) / stride + 1 }

    var cinG: Int { inChannels / groups }
    var coutG: Int { outChannels / groups }
    var patch: Int { kernel * kernel * cinG }

    /// The weight of group g reordered to (Cout/g, kh, kw, Cin/g).
    func reorderedWeight() -> Tensor {
        let w = Tensor(uninitialized: [outChannels, kernel, kernel, cinG])   // every element written below
        let src = weight.value.data, dst = w.data
        let k2 = kernel * kernel, cinG = self.cinG
        // One output channel's (Cin/g, k²) block per task: the weights are re-laid out on every call
        // (they change with every optimiser step), up to 1.5 M values for stage 4's patch embedding.
        Parallel.forEach(outChannels) { o in
            let from = src + o * cinG * k2, to = dst + o * k2 * cinG
            for t in 0..<k2 { Self.gather(from + t, stride: k2, into: to + t * cinG, count: cinG) }
        }
        return w
    }

    /// to[i] = from[i·stride], i < count: one row of a transposed (count, stride) block. Stepped by
    /// pointer: with checked index arithmetic this loop ran at a dozen instructions per value.
    @inline(__always)
    static func gather(_ from: UnsafePointer<Float>, stride: Int, into to: UnsafeMutablePointer<Float>, count: Int) {
        var p = from
        for i in 0..<count { to[i] = p.pointee; p = p.advanced(by: stride) }
    }

    /// Keeps x for backward, which gathers the im2col matrix again: x is smaller (by kernel²/stride²
    /// for a 3×3 stride-2 patch embedding) and often kept anyway (the attention's spatial reduction
    /// reads the same normalised tokens as its query projection). x is kept by reference, not copied:
    /// the caller must not write into it before this layer's backward has run.
    public func forward(_ x: Tensor, _ ws: Workspace) throws -> Tensor {
        guard x.rank == 4, x.shape[3] == inChannels else {
            throw LayerError.badInput(layer: weight.name, shape: x.shape, expected: "(B, H, W, \(inChannels)) channels-last")
        }
        let (b, h, w) = (x.shape[0], x.shape[1], x.shape[2])
        let ho = outputSize(h), wo = outputSize(w)
        guard ho > 0, wo > 0 else {
            throw LayerError.badInput(layer: weight.name, shape: x.shape, expected: "a map of at least \(kernel - 2 * padding) pixels per side")
        }
        let rows = b * ho * wo
        let wr = reorderedWeight()
        let y = Tensor(uninitialized: [b, ho, wo, outChannels])
        if let bs = bias { Kernels.broadcastRows(bs.value.data, into: y.data, rows: rows, cols: outChannels) }
        // cols: (groups, rows, patch)
        let cols = Tensor(uninitialized: [groups, rows, patch])
        im2col(x, cols: cols, ho: ho, wo: wo)
        for g in 0..<groups {
            sgemm(.none, .transposed, m: rows, n: coutG, k: patch, a: cols.data + g * rows * patch, lda: patch,
                  b: wr.data + g * coutG * patch, ldb: patch, beta: bias == nil ? 0 : 1,
                  c: y.data + g * coutG, ldc: outChannels)
        }
        ws.save(x, for: self)
        return y
    }

    public func backward(_ dy: Tensor, _ ws: Workspace) throws -> Tensor {
        let x = try ws.take(Tensor.self, for: self, name: weight.name)
        let inShape = x.shape, ho = outputSize(inShape[1]), wo = outputSize(inShape[2])
        let rows = inShape[0] * ho * wo
        guard dy.shape == [inShape[0], ho, wo, outChannels] else {
            throw LayerError.badInput(layer: weight.name + " (backward)", shape: dy.shape,
                                      expected: "\([inShape[0], ho, wo, outChannels])")
        }
        if let bs = bias { columnSums(dy.data, rows: rows, cols: outChannels, into: try ws.gradient(bs).data) }
        let wr = reorderedWeight()
        let cols = Tensor(uninitialized: [groups, rows, patch])
        im2col(x, cols: cols, ho: ho, wo: wo)
        // Both written whole by the products below (beta = 0), group by group; dcols overwrites group g's
        // columns once its weight gradient has read them.
        let dwr = Tensor(uninitialized: wr.shape)
        let dcols = cols
        for g in 0..<groups {
            // dWr_g = dy_gᵀ · cols_g ; dcols_g = dy_g · Wr_g
            sgemm(.transposed, .none, m: coutG, n: patch, k: rows, a: dy.data + g * coutG, lda: outChannels,
                  b: cols.data + g * rows * patch, ldb: patch, c: dwr.data + g * coutG * patch, ldc: patch)
            sgemm(.none, .none, m: rows, n: patch, k: coutG, a: dy.data + g * coutG, lda: outChannels,
                  b: wr.data + g * coutG * patch, ldb: patch, c: dcols.data + g * rows * patch, ldc: patch)
        }
        // Back to PyTorch's weight layout, accumulating.
        let k2 = kernel * kernel
        let gw = try ws.gradient(weight).data, src = dwr.data, cinG = self.cinG
        Parallel.forEach(outChannels) { o in
            let from = src + o * k2 * cinG, to = gw + o * cinG * k2
            for ci in 0..<cinG {
                var p = from + ci
                let row = to + ci * k2
                for t in 0..<k2 { row[t] += p.pointee; p = p.advanced(by: cinG) }
            }
        }
        let dx = Tensor(zeros: inShape)
        col2im(dcols, into: dx, ho: ho, wo: wo)
        return dx
    }

    /// cols[g, (b, oy, ox), (ky, kx, ci)] = x[b, oy·s − p + ky, ox·s − p + kx, g·Cin/g + ci] (0 outside).
    func im2col(_ x: Tensor, cols: Tensor, ho: Int, wo: Int) {
        let (b, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], inChannels)
        let rows = b * ho * wo, cg = cinG, p = patch, k = kernel
        let src = x.data, dst = cols.data
        Parallel.forEach(b * ho) { bo in
            let bi = bo / ho, oy = bo % ho
            for ox in 0..<wo {
                let r = (bi * ho + oy) * wo + ox
                for g in 0..<groups {
                    let row = dst + g * rows * p + r * p
                    for ky in 0..<k {
                        let iy = oy * stride - padding + ky
                        let seg = row + ky * k * cg
                        if iy < 0 || iy >= h { seg.update(repeating: 0, count: k * cg); continue }
                        let ix0 = ox * stride - padding
                        let base = src + ((bi * h + iy) * w) * c + g * cg
                        if groups == 1 && ix0 >= 0 && ix0 + k <= w {
                            seg.update(from: base + ix0 * c, count: k * c)   // one contiguous run
                        } else {
                            for kx in 0..<k {
                                let ix = ix0 + kx
                                if ix < 0 || ix >= w { (seg + kx * cg).update(repeating: 0, count: cg) }
                                else { (seg + kx * cg).update(from: base + ix * c, count: cg) }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Adjoint of `im2col`: scatter-adds the columns back into the input gradient.
    func col2im(_ cols: Tensor, into dx: Tensor, ho: Int, wo: Int) {
        let (b, h, w, c) = (dx.shape[0], dx.shape[1], dx.shape[2], inChannels)
        let rows = b * ho * wo, cg = cinG, p = patch, k = kernel
        let src = cols.data, dst = dx.data
        // One image per task: windows overlap only within an image.
        Parallel.forEach(b) { bi in
            for oy in 0..<ho {
                for ox in 0..<wo {
                    let r = (bi * ho + oy) * wo + ox
                    for g in 0..<groups {
                        let row = src + g * rows * p + r * p
                        for ky in 0..<k {
                            let iy = oy * stride - padding + ky
                            if iy < 0 || iy >= h { continue }
                            for kx in 0..<k {
                                let ix = ox * stride - padding + kx
                                if ix < 0 || ix >= w { continue }
                                let d = dst + ((bi * h + iy) * w + ix) * c + g * cg
                                let s = row + (ky * k + kx) * cg
                                for ci in 0..<cg { d[ci] += s[ci] }
                            }
                        }
                    }
                }
            }
        }
    }
}
