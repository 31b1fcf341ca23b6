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

    /// Weights as 9 taps × C (channel-contiguous), in row-major tap order or, `turned`, in reverse: the
    /// 3×3 kernel turned half a circle, tap k ↔ 8 − k.
    func taps(turned: Bool = false) -> [Float] {
        var t = [Float](repeating: 0, count: 9 * channels)
        for c in 0..<channels { for k in 0..<9 { t[(turned ? 8 - k : k) * channels + c] = weight.value.data[c * 9 + k] } }
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
    private func convolve(_ x: Tensor, into y: Tensor, activated: Tensor?) {
        let (b, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], channels)
        taps().withUnsafeBufferPointer { tp in
            let taps = tp.baseAddress!, bs = UnsafePointer(bias.value.data)
            Parallel.forEach(b * h) { row in
                let yy = row % h, image = x.data + (row - yy) * w * c
                let rowOut = y.data + row * w * c
                Self.sumOverNeighbourhood(of: yy, in: UnsafePointer(image), height: h, width: w, channels: c, taps: taps,
                                          start: bs, into: rowOut)
                if let activated { Kernels.geluSerial(rowOut, activated.data + row * w * c, w * c) }
            }
        }
    }

    /// One output row of a 3×3 depthwise sum over a (H, W, C) map:
    /// out[x, ch] = start[ch] (zero without one) + Σ taps[(ky·3 + kx)·C + ch] · map[row + ky − 1, x + kx − 1, ch]
    /// over the taps inside the map, in row-major tap order. The forward's convolution and, with the taps
    /// turned half a circle, the backward's input gradient (see `backward`) share it.
    ///
    /// Pixels outside, channel blocks of 8 lanes inside, so the three input rows are read as the streams
    /// they are in memory. Inside the row, four outputs at a time: they share the block's nine weights and
    /// six input columns, 7 vector loads per output instead of 19 one at a time. (Blocks outside and a
    /// row's pixels inside, to keep the weights in registers, read the rows with a stride of C floats and
    /// waited on the cache.)
    private static func sumOverNeighbourhood(of row: Int, in map: UnsafePointer<Float>, height h: Int, width w: Int,
                                             channels c: Int, taps: UnsafePointer<Float>, start: UnsafePointer<Float>?,
                                             into out: UnsafeMutablePointer<Float>) {
        typealias V = SIMD8<Float>
        @inline(__always) func ld(_ p: UnsafePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }
        @inline(__always) func st(_ v: V, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: V.self) }
        // the input rows above, at and below, nil outside the map
        let up = row > 0 ? map + (row - 1) * w * c : nil
        let mid = map + row * w * c
        let down = row + 1 < h ? map + (row + 1) * w * c : nil
        let vectorEnd = c / 8 * 8

        // The last c mod 8 channels of output xx, one at a time, in the same order.
        func tail(_ xx: Int) {
            for ch in vectorEnd..<c {
                var acc = start?[ch] ?? 0
                for ky in 0..<3 {
                    guard let r = ky == 0 ? up : ky == 1 ? mid : down else { continue }
                    for kx in 0..<3 where xx + kx >= 1 && xx + kx <= w {
                        acc += taps[(ky * 3 + kx) * c + ch] * r[(xx + kx - 1) * c + ch]
                    }
                }
                out[xx * c + ch] = acc
            }
        }

        // One output, the taps inside the map.
        func single(_ xx: Int) {
            let (left, right) = (xx > 0, xx + 1 < w)
            var j = 0
            while j < vectorEnd {
                var acc = start.map { ld($0 + j) } ?? V(repeating: 0)
                @inline(__always) func add(_ r: UnsafePointer<Float>, _ k: Int) {
                    let p = r + xx * c + j, t = taps + k * c + j
                    if left { acc = acc + ld(t) * ld(p - c) }
                    acc = acc + ld(t + c) * ld(p)
                    if right { acc = acc + ld(t + 2 * c) * ld(p + c) }
                }
                if let up { add(up, 0) }
                add(mid, 3)
                if let down { add(down, 6) }
                st(acc, out + xx * c + j)
                j += 8
            }
            tail(xx)
        }

        // Outputs xx to xx + 3, all with their three columns inside the map.
        func four(_ xx: Int) {
            var j = 0
            while j < vectorEnd {
                var a0 = start.map { ld($0 + j) } ?? V(repeating: 0)
                var (a1, a2, a3) = (a0, a0, a0)
                @inline(__always) func add(_ r: UnsafePointer<Float>, _ k: Int) {
                    let p = r + xx * c + j, t = taps + k * c + j
                    let (wl, wm, wr) = (ld(t), ld(t + c), ld(t + 2 * c))
                    let (v0, v1, v2) = (ld(p - c), ld(p), ld(p + c))
                    a0 = a0 + wl * v0; a0 = a0 + wm * v1; a0 = a0 + wr * v2
                    let v3 = ld(p + 2 * c)
                    a1 = a1 + wl * v1; a1 = a1 + wm * v2; a1 = a1 + wr * v3
                    let v4 = ld(p + 3 * c)
                    a2 = a2 + wl * v2; a2 = a2 + wm * v3; a2 = a2 + wr * v4
                    let v5 = ld(p + 4 * c)
                    a3 = a3 + wl * v3; a3 = a3 + wm * v4; a3 = a3 + wr * v5
                }
                if let up { add(up, 0) }
                add(mid, 3)
                if let down { add(down, 6) }
                st(a0, out + xx * c + j); st(a1, out + (xx + 1) * c + j)
                st(a2, out + (xx + 2) * c + j); st(a3, out + (xx + 3) * c + j)
                j += 8
            }
            for i in 0..<4 { tail(xx + i) }
        }

        single(0)
        var xx = 1
        while xx + 4 < w { four(xx); xx += 4 }
        while xx < w { single(xx); xx += 1 }
    }

    /// dx from the taps turned half a circle; dw, db as per-image sums over the outputs in raster order,
    /// added to the store image after image.
    public func backward(_ dy: Tensor, _ ws: Workspace) throws -> Tensor {
        let x = try ws.take(Tensor.self, for: self, name: weight.name)
        guard dy.shape == x.shape else {
            throw LayerError.badInput(layer: weight.name + " (backward)", shape: dy.shape, expected: "\(x.shape)")
        }
        let (b, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], channels)
        let dx = Tensor(uninitialized: x.shape)   // every element written below
        // dx[i] = Σ over the outputs o that input pixel i fed of w[tap that took i into o] · dy[o]. The
        // output at offset (u, v) ∈ −1…1 from i took it with tap (1 − u, 1 − v): a 3×3 sum over dy's
        // neighbourhood of i with the taps turned half a circle, starting from zero. Its row-major order
        // is the outputs' raster order: the same sums, to the bit, as scattering every output's w·dy into
        // a zeroed dx.
        taps(turned: true).withUnsafeBufferPointer { tp in
            let taps = tp.baseAddress!
            Parallel.forEach(b * h) { row in
                let iy = row % h, image = dy.data + (row - iy) * w * c
                Self.sumOverNeighbourhood(of: iy, in: UnsafePointer(image), height: h, width: w, channels: c, taps: taps,
                                          start: nil, into: dx.data + row * w * c)
            }
        }
        var partial = [Float](repeating: 0, count: b * 10 * c)
        partial.withUnsafeMutableBufferPointer { pp in
            let pbase = pp.baseAddress!
            Parallel.forEach(b) { bi in
                let (image, grad) = (UnsafePointer(x.data + bi * h * w * c), UnsafePointer(dy.data + bi * h * w * c))
                for yy in 0..<h {
                    Self.addTapProducts(of: yy, in: image, grad, height: h, width: w, channels: c, into: pbase + bi * 10 * c)
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

    /// One output row's terms of dw and db, added into sums (10 × C: the nine taps, then the bias):
    /// sums[(ky·3 + kx)·C + ch] += map[row + ky − 1, x + kx − 1, ch] · grad[row, x, ch] for the taps
    /// inside the map and sums[9·C + ch] += grad[row, x, ch], x in order. Row after row, every sum's terms
    /// come in the outputs' raster order. The sums (10·C floats) stay in the level-1 cache; the rows are
    /// read as streams, as in `sumOverNeighbourhood`.
    private static func addTapProducts(of row: Int, in map: UnsafePointer<Float>, _ grad: UnsafePointer<Float>,
                                       height h: Int, width w: Int, channels c: Int,
                                       into sums: UnsafeMutablePointer<Float>) {
        let bias = sums + 9 * c
        for xx in 0..<w {
            let g = grad + (row * w + xx) * c
            var j = 0
            while j + vecWidth <= c { store(load(bias + j) + load(g + j), bias + j); j += vecWidth }
            while j < c { bias[j] += g[j]; j += 1 }
            for ky in 0..<3 where row + ky >= 1 && row + ky <= h {
                for kx in 0..<3 where xx + kx >= 1 && xx + kx <= w {
                    let inp = map + ((row + ky - 1) * w + xx + kx - 1) * c, acc = sums + (ky * 3 + kx) * c
                    var j = 0
                    while j + vecWidth <= c { store(load(acc + j) + load(inp + j) * load(g + j), acc + j); j += vecWidth }
                    while j < c { acc[j] += inp[j] * g[j]; j += 1 }
                }
            }
        }
    }
}
