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
    public func forward(_ x: Tensor, _ ws: Workspace, thenReLU: Bool = false, overwritingInput: Bool = false) throws -> Tensor {
        guard x.shape.last == channels else {
            throw LayerError.badInput(layer: weight.name, shape: x.shape, expected: "(…, \(channels)) channels-last")
        }
        let c = channels, n = x.count / c
        var mean = [Float](repeating: 0, count: c), inv = [Float](repeating: 0, count: c)
        let training = ws.isTraining
        if training {
            guard n > 1 else {
                throw LayerError.badInput(layer: weight.name, shape: x.shape, expected: "more than one value per channel in train mode")
            }
            var s = [Double](repeating: 0, count: c), s2 = [Double](repeating: 0, count: c)
            s.withUnsafeMutableBufferPointer { s in
                s2.withUnsafeMutableBufferPointer { s2 in
                    channelBlocks { js in
                        for r in 0..<n { let row = x.data + r * c; for j in js { s[j] += Double(row[j]) } }
                        for j in js { s[j] /= Double(n) }
                        for r in 0..<n { let row = x.data + r * c; for j in js { let d = Double(row[j]) - s[j]; s2[j] += d * d } }
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
        let g = weight.value.data, b = bias.value.data, xhp = xh?.data
        mean.withUnsafeBufferPointer { mp in
            inv.withUnsafeBufferPointer { ip in
                Parallel.forChunks(n, grain: max(1, 16384 / c)) { rr in
                    for r in rr {
                        for j in 0..<c {
                            let h = (x.data[r * c + j] - mp[j]) * ip[j]
                            if let xhp { xhp[r * c + j] = h }
                            let v = h * g[j] + b[j]
                            y.data[r * c + j] = thenReLU && v < 0 ? 0 : v
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
        /// dy at (r, j), through the ReLU when there was one (its input recomputed as in forward).
        func grad(_ r: Int, _ j: Int) -> Float {
            let d = dy.data[r * c + j]
            return relu && !(xh.data[r * c + j] * gamma[j] + beta[j] > 0) ? 0 : d
        }
        var sdy = [Double](repeating: 0, count: c), sdyx = [Double](repeating: 0, count: c)
        sdy.withUnsafeMutableBufferPointer { sdy in
            sdyx.withUnsafeMutableBufferPointer { sdyx in
                channelBlocks { js in
                    for r in 0..<n {
                        for j in js {
                            let g = Double(grad(r, j))
                            sdy[j] += g
                            sdyx[j] += g * Double(xh.data[r * c + j])
                        }
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
                    Parallel.forChunks(n, grain: max(1, 16384 / c)) { rows in
                        for r in rows {
                            for j in 0..<c {
                                dx.data[r * c + j] = a[j] * (grad(r, j) - m1[j] - xh.data[r * c + j] * m2[j])
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
