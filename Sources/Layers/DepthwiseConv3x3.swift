import TensorCore

/// Depthwise 3×3 convolution, stride 1, zero padding 1, with bias, on channels-last maps (B, H, W, C):
/// y[b,y,x,c] = bias[c] + Σ_{dy,dx ∈ −1…1} w[c, dy+1, dx+1] · x[b, y+dy, x+dx, c].
/// A direct loop vectorised over the contiguous channel axis (no im2col). Weight (C, 1, 3, 3).
public final class DepthwiseConv3x3: Module {
    public let weight: Parameter
    public let bias: Parameter
    public let channels: Int

    public init(name: String, channels: Int) {
        self.channels = channels
        weight = Parameter(name: key(name, "weight"), shape: [channels, 1, 3, 3])
        bias = Parameter(name: key(name, "bias"), shape: [channels])
    }

    /// Weights as 9 taps × C (channel-contiguous).
    func taps() -> [Float] {
        var t = [Float](repeating: 0, count: 9 * channels)
        for c in 0..<channels { for k in 0..<9 { t[k * channels + c] = weight.value.data[c * 9 + k] } }
        return t
    }

    /// Keeps x for backward.
    public func forward(_ x: Tensor, _ ws: Workspace) throws -> Tensor {
        try check(x)
        ws.save(x, for: self)
        let y = Tensor(uninitialized: x.shape)   // every pixel starts from the bias
        convolve(x, into: y, activated: nil)
        return y
    }

    /// GELU(conv(x)), the activation applied to each output row while it is still in cache, in place:
    /// one pass over the Mix-FFN's widest map instead of two. When recording it keeps x, as `forward`
    /// does, and nothing else: backward gets the GELU's input and output from `recomputeThenGELU(_:)`.
    public func forwardThenGELU(_ x: Tensor, _ ws: Workspace) throws -> Tensor {
        try check(x)
        ws.save(x, for: self)
        let y = Tensor(uninitialized: x.shape)
        convolve(x, into: y, activated: y)
        return y
    }

    /// conv(x) and GELU(conv(x)) again, in one pass, for the x that the most recent recorded forward
    /// kept (which stays kept for `backward`): what the GELU's backward and the next layer's weight
    /// gradient need, rebuilt instead of kept through the whole pass. Bit-identical to the forward's.
    public func recomputeThenGELU(_ ws: Workspace) throws -> (preActivation: Tensor, activated: Tensor) {
        let x = try ws.peek(Tensor.self, for: self, name: weight.name)
        let pre = Tensor(uninitialized: x.shape), activated = Tensor(uninitialized: x.shape)
        convolve(x, into: pre, activated: activated)
        return (pre, activated)
    }

    private func check(_ x: Tensor) throws {
        guard x.rank == 4, x.shape[3] == channels else {
            throw LayerError.badInput(layer: weight.name, shape: x.shape, expected: "(B, H, W, \(channels)) channels-last")
        }
    }

    /// y = conv(x); with `activated`, also GELU(y) row by row (it may be y itself).
    ///
    /// Each 16-channel block of an output pixel is summed in a register over the taps (bias first, then
    /// the taps in row-major order, as accumulating into y would) and stored once: accumulating in
    /// memory read and wrote every output nine times.
    private func convolve(_ x: Tensor, into y: Tensor, activated: Tensor?) {
        let (b, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], channels)
        let t = taps()
        t.withUnsafeBufferPointer { tp in
            let taps = tp.baseAddress!, bs = bias.value.data
            Parallel.forEach(b * h) { row in
                let bi = row / h, yy = row % h
                let rowOut = y.data + (bi * h + yy) * w * c
                withUnsafeTemporaryAllocation(of: UnsafePointer<Float>.self, capacity: 18) { tapPointers in
                    let inputs = tapPointers.baseAddress!, weights = inputs + 9
                    for xx in 0..<w {
                        // The taps inside the image, in row-major order: input pixel and weight row.
                        var n = 0
                        for dy in -1...1 {
                            let iy = yy + dy
                            if iy < 0 || iy >= h { continue }
                            for dx in -1...1 {
                                let ix = xx + dx
                                if ix < 0 || ix >= w { continue }
                                inputs[n] = UnsafePointer(x.data + ((bi * h + iy) * w + ix) * c)
                                weights[n] = taps + ((dy + 1) * 3 + (dx + 1)) * c
                                n += 1
                            }
                        }
                        Self.sumOfTapProducts(start: bs, inputs, weights, taps: n, into: rowOut + xx * c, channels: c)
                    }
                }
                if let activated { Kernels.geluSerial(rowOut, activated.data + (bi * h + yy) * w * c, w * c) }
            }
        }
    }

    /// out[j] = start[j] (zero without one) + Σ_k weights[k][j] · values[k][j] over the n taps in the order
    /// given: the forward's sum over an output's taps and the backward's gather of dx share it. Each
    /// 16-channel block is summed in a register and stored once.
    @inline(__always)
    private static func sumOfTapProducts(start: UnsafePointer<Float>?, _ values: UnsafePointer<UnsafePointer<Float>>,
                                         _ weights: UnsafePointer<UnsafePointer<Float>>, taps n: Int,
                                         into out: UnsafeMutablePointer<Float>, channels c: Int) {
        var j = 0
        while j + vecWidth <= c {
            var acc = start.map { load($0 + j) } ?? Vec(repeating: 0)
            for k in 0..<n { acc = acc + load(weights[k] + j) * load(values[k] + j) }
            store(acc, out + j)
            j += vecWidth
        }
        while j < c {
            var acc = start?[j] ?? 0
            for k in 0..<n { acc += weights[k][j] * values[k][j] }
            out[j] = acc
            j += 1
        }
    }

    public func backward(_ dy: Tensor, _ ws: Workspace) throws -> Tensor {
        let x = try ws.take(Tensor.self, for: self, name: weight.name)
        guard dy.shape == x.shape else {
            throw LayerError.badInput(layer: weight.name + " (backward)", shape: dy.shape, expected: "\(x.shape)")
        }
        let (b, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], channels)
        let dx = Tensor(uninitialized: x.shape)   // every element written by the gather below
        let t = taps()
        var partial = [Float](repeating: 0, count: b * 10 * c)
        t.withUnsafeBufferPointer { tp in
            let taps = tp.baseAddress!
            // dx: each input pixel gathers w·dy from the outputs it fed, summed in a register in the
            // order those outputs come in raster order (taps from (+1, +1) down to (−1, −1)), starting
            // from zero: the same sums, to the bit, as scattering every output's w·dy into a zeroed dx.
            Parallel.forEach(b * h) { row in
                let bi = row / h, iy = row % h
                withUnsafeTemporaryAllocation(of: UnsafePointer<Float>.self, capacity: 18) { tapPointers in
                    let grads = tapPointers.baseAddress!, weights = grads + 9
                    for ix in 0..<w {
                        var n = 0
                        for ddy in stride(from: 1, through: -1, by: -1) {
                            let oy = iy - ddy
                            if oy < 0 || oy >= h { continue }
                            for ddx in stride(from: 1, through: -1, by: -1) {
                                let ox = ix - ddx
                                if ox < 0 || ox >= w { continue }
                                grads[n] = UnsafePointer(dy.data + ((bi * h + oy) * w + ox) * c)
                                weights[n] = taps + ((ddy + 1) * 3 + (ddx + 1)) * c
                                n += 1
                            }
                        }
                        Self.sumOfTapProducts(start: nil, grads, weights, taps: n, into: dx.data + ((bi * h + iy) * w + ix) * c, channels: c)
                    }
                }
            }
        }
        // dw, db: per-image partials over the outputs in raster order, added in image order.
        partial.withUnsafeMutableBufferPointer { pp in
            let pbase = pp.baseAddress!
            Parallel.forEach(b) { bi in
                let pw = pbase + bi * 10 * c, pb = pw + 9 * c
                for yy in 0..<h {
                    for xx in 0..<w {
                        let g = dy.data + ((bi * h + yy) * w + xx) * c
                        var j = 0
                        while j + vecWidth <= c { store(load(pb + j) + load(g + j), pb + j); j += vecWidth }
                        while j < c { pb[j] += g[j]; j += 1 }
                        for ddy in -1...1 {
                            let iy = yy + ddy
                            if iy < 0 || iy >= h { continue }
                            for ddx in -1...1 {
                                let ix = xx + ddx
                                if ix < 0 || ix >= w { continue }
                                let k = (ddy + 1) * 3 + (ddx + 1)
                                let inp = x.data + ((bi * h + iy) * w + ix) * c
                                let acc = pw + k * c
                                var j = 0
                                while j + vecWidth <= c {
                                    store(load(acc + j) + load(inp + j) * load(g + j), acc + j)
                                    j += vecWidth
                                }
                                while j < c { acc[j] += inp[j] * g[j]; j += 1 }
                            }
                        }
                    }
                }
            }
        }
        let gw = try ws.gradient(weight).data, gb = try ws.gradient(bias).data
        for bi in 0..<b {
            for c0 in 0..<c {
                for k in 0..<9 { gw[c0 * 9 + k] += partial[bi * 10 * c + k * c + c0] }
                gb[c0] += partial[bi * 10 * c + 9 * c + c0]
            }
        }
        return dx
    }
}
