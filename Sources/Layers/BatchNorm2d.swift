import TensorCore

/// BatchNorm2d on channels-last maps (…, C).
///
/// Train mode (the workspace's) normalises with the batch statistics (biased variance) and updates
/// the running statistics with `momentum` (unbiased variance), as PyTorch does; eval mode uses the
/// running ones and changes nothing.
public final class BatchNorm2d: Module {
    public let weight: Parameter
    public let bias: Parameter
    public let runningMean: Buffer
    public let runningVar: Buffer
    /// `num_batches_tracked` of the state dict.
    public let numBatchesTracked: Counter
    public let channels: Int
    public let eps: Float
    public let momentum: Float

    public init(name: String, channels: Int, eps: Float = 1e-5, momentum: Float = 0.1) {
        numBatchesTracked = Counter(name: key(name, "num_batches_tracked"))
        self.channels = channels; self.eps = eps; self.momentum = momentum
        weight = Parameter(name: key(name, "weight"), shape: [channels])
        bias = Parameter(name: key(name, "bias"), shape: [channels])
        runningMean = Buffer(name: key(name, "running_mean"), shape: [channels])
        runningVar = Buffer(name: key(name, "running_var"), shape: [channels])
        weight.value.fill(1)
        runningVar.value.fill(1)
    }

    /// Keeps x̂, 1/σ and the mode for backward (when recording). With `thenReLU` it returns ReLU(BN(x))
    /// from the same pass (the SegFormer head's fuse block) and keeps nothing more: the ReLU's mask,
    /// x̂·γ + β > 0, is computed again from x̂ in backward, bit for bit as the forward computed it. With
    /// `overwritingInput` the result is written over x, which the caller no longer needs.
    ///
    /// The statistics are Double sums per channel over the rows in order (`Kernels.columnBlockSums`),
    /// so they are the same bits for any number of workers.
    public func forward(_ x: Tensor, _ ws: Workspace, thenReLU: Bool = false, overwritingInput: Bool = false) throws -> Tensor {
        guard x.shape.last == channels else {
            throw LayerError.badInput(layer: weight.name, shape: x.shape, expected: "(…, \(channels)) channels-last")
        }
        let c = channels, n = x.count / c, xp = x.data
        var mean = [Float](repeating: 0, count: c), inv = [Float](repeating: 0, count: c)
        let training = ws.isTraining
        if training {
            guard n > 1 else {
                throw LayerError.badInput(layer: weight.name, shape: x.shape, expected: "more than one value per channel in train mode")
            }
            // s: Σx, then the mean; s2: Σ(x − mean)². s has 8 spare entries so the mean loads as 8 lanes.
            var s = [Double](repeating: 0, count: c + 8), s2 = [Double](repeating: 0, count: c)
            s.withUnsafeMutableBufferPointer { s in
                s2.withUnsafeMutableBufferPointer { s2 in
                    let (sp, s2p) = (s.baseAddress!, s2.baseAddress!)
                    channelBlocks { js in
                        let (j0, w) = (js.lowerBound, js.count)
                        Kernels.columnBlockSums(rows: n, j0, width: w, into: sp + j0) { r, j, k in Kernels.loadWidened(xp + r * c + j, k) }
                        for j in js { sp[j] /= Double(n) }
                        Kernels.columnBlockSums(rows: n, j0, width: w, into: s2p + j0) { r, j, k in
                            let d = Kernels.loadWidened(xp + r * c + j, k) - UnsafeRawPointer(sp + j).loadUnaligned(as: SIMD8<Double>.self)
                            return d * d
                        }
                    }
                }
            }
            for j in 0..<c {
                let varB = s2[j] / Double(n)
                mean[j] = Float(s[j])
                inv[j] = 1 / (Float(varB) + eps).squareRoot()
                let unbiased = s2[j] / Double(n - 1)
                runningMean.value.data[j] = (1 - momentum) * runningMean.value.data[j] + momentum * Float(s[j])
                runningVar.value.data[j] = (1 - momentum) * runningVar.value.data[j] + momentum * Float(unbiased)
            }
            numBatchesTracked.increment()
        } else {
            for j in 0..<c {
                mean[j] = runningMean.value.data[j]
                inv[j] = 1 / (runningVar.value.data[j] + eps).squareRoot()
            }
        }
        let y = overwritingInput ? x : Tensor(uninitialized: x.shape)
        let xh = ws.recording ? Tensor(uninitialized: x.shape) : nil
        let g = weight.value.data, b = bias.value.data, xhp = xh?.data, yp = y.data
        mean.withUnsafeBufferPointer { mp in
            inv.withUnsafeBufferPointer { ip in
                let (mp, ip) = (mp.baseAddress!, ip.baseAddress!)
                Parallel.forChunks(n, grain: max(1, 16384 / c)) { rr in
                    for r in rr {
                        let (xr, yr, hr) = (xp + r * c, yp + r * c, xhp.map { $0 + r * c })
                        var j = 0
                        while j + vecWidth <= c {
                            let h = (load(xr + j) - load(mp + j)) * load(ip + j)
                            if let hr { store(h, hr + j) }
                            let v = h * load(g + j) + load(b + j)
                            store(thenReLU ? v.replacing(with: 0, where: v .< 0) : v, yr + j)
                            j += vecWidth
                        }
                        while j < c {
                            let h = (xr[j] - mp[j]) * ip[j]
                            if let hr { hr[j] = h }
                            let v = h * g[j] + b[j]
                            yr[j] = thenReLU && v < 0 ? 0 : v
                            j += 1
                        }
                    }
                }
            }
        }
        if let xh { ws.save(Saved(xh: xh, invStd: inv, training: training, thenReLU: thenReLU), for: self) }
        return y
    }

    private struct Saved { var xh: Tensor; var invStd: [Float]; var training: Bool; var thenReLU: Bool }

    /// Train mode: dx = γ·rstd/N · (N·dy − Σdy − x̂·Σ(dy·x̂)); eval mode: dx = γ·rstd·dy. After a forward
    /// with `thenReLU`, dy is the gradient of the ReLU's output and is masked first. dx is written over
    /// the kept x̂, element by element after its last read.
    public func backward(_ dy: Tensor, _ ws: Workspace) throws -> Tensor {
        let saved = try ws.take(Saved.self, for: self, name: weight.name)
        let (xh, invStd, training) = (saved.xh, saved.invStd, saved.training)
        guard dy.count == xh.count else {
            throw LayerError.badInput(layer: weight.name + " (backward)", shape: dy.shape, expected: "\(xh.shape)")
        }
        let c = channels, n = xh.count / c
        let gamma = weight.value.data, beta = bias.value.data, relu = saved.thenReLU
        let (dyp, xhp) = (UnsafePointer(dy.data), UnsafePointer(xh.data))
        /// dy at row r, columns j..<j+k (k ≤ 8 lanes, the rest zero), through the ReLU when there was one
        /// (its input recomputed as in forward).
        @inline(__always) func grad8(_ r: Int, _ j: Int, _ k: Int) -> SIMD8<Float> {
            let d = Kernels.load8(dyp + r * c + j, k)
            guard relu else { return d }
            let v = Kernels.load8(xhp + r * c + j, k) * Kernels.load8(gamma + j, k) + Kernels.load8(beta + j, k)
            return d.replacing(with: 0, where: .!(v .> 0))
        }
        var sdy = [Double](repeating: 0, count: c), sdyx = [Double](repeating: 0, count: c)
        sdy.withUnsafeMutableBufferPointer { sdy in
            sdyx.withUnsafeMutableBufferPointer { sdyx in
                let (sp, sxp) = (sdy.baseAddress!, sdyx.baseAddress!)
                channelBlocks { js in
                    let (j0, w) = (js.lowerBound, js.count)
                    Kernels.columnBlockSums(rows: n, j0, width: w, into: sp + j0) { r, j, k in SIMD8<Double>(grad8(r, j, k)) }
                    Kernels.columnBlockSums(rows: n, j0, width: w, into: sxp + j0) { r, j, k in
                        SIMD8<Double>(grad8(r, j, k)) * Kernels.loadWidened(xhp + r * c + j, k)
                    }
                }
            }
        }
        let gw = try ws.gradient(weight).data, gb = try ws.gradient(bias).data
        for j in 0..<c {
            gw[j] += Float(sdyx[j])
            gb[j] += Float(sdy[j])
        }
        let dx = xh
        var a = [Float](repeating: 0, count: c), m1 = [Float](repeating: 0, count: c), m2 = [Float](repeating: 0, count: c)
        for j in 0..<c {
            a[j] = weight.value.data[j] * invStd[j]
            if training { m1[j] = Float(sdy[j] / Double(n)); m2[j] = Float(sdyx[j] / Double(n)) }
        }
        a.withUnsafeBufferPointer { a in
            m1.withUnsafeBufferPointer { m1 in
                m2.withUnsafeBufferPointer { m2 in
                    let (ap, m1p, m2p, dxp) = (a.baseAddress!, m1.baseAddress!, m2.baseAddress!, dx.data)
                    Parallel.forChunks(n, grain: max(1, 16384 / c)) { rows in
                        for r in rows {
                            // 8 lanes at a time (grad8's width); dx overwrites x̂ after both are read.
                            var j = 0
                            while j < c {
                                let k = min(8, c - j)
                                let v = Kernels.load8(ap + j, k)
                                    * (grad8(r, j, k) - Kernels.load8(m1p + j, k) - Kernels.load8(xhp + r * c + j, k) * Kernels.load8(m2p + j, k))
                                if k == 8 {
                                    UnsafeMutableRawPointer(dxp + r * c + j).storeBytes(of: v, as: SIMD8<Float>.self)
                                } else {
                                    for l in 0..<k { dxp[r * c + j + l] = v[l] }
                                }
                                j += k
                            }
                        }
                    }
                }
            }
        }
        return dx
    }

    /// Runs `body` on blocks of 32 channels on the workers. Each channel's sums still run over the rows
    /// in order, so the statistics are the same bits for any number of workers.
    private func channelBlocks(_ body: (Range<Int>) -> Void) {
        Parallel.forChunks(channels, grain: 32, body)
    }
}
