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
    private func convolve(_ x: Tensor, into y: Tensor, activated: Tensor?) {
        let (b, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], channels)
        let t = taps()
        t.withUnsafeBufferPointer { tp in
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
    /// Channel blocks of 8 lanes outside, the row's pixels inside: a block's nine weights and its start
    /// stay in registers across the row and each output is summed in a register and stored once (with
    /// the pixels outside, every output reloaded the nine weights — two loads per product).
    private static func sumOverNeighbourhood(of row: Int, in map: UnsafePointer<Float>, height h: Int, width w: Int,
                                             channels c: Int, taps: UnsafePointer<Float>, start: UnsafePointer<Float>?,
                                             into out: UnsafeMutablePointer<Float>) {
        typealias V = SIMD8<Float>
        @inline(__always) func ld(_ p: UnsafePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }
        // the input rows above, at and below, nil outside the map
        let up = row > 0 ? map + (row - 1) * w * c : nil
        let mid = map + row * w * c
        let down = row + 1 < h ? map + (row + 1) * w * c : nil
        var j = 0
        while j + 8 <= c {
            let (w0, w1, w2) = (ld(taps + j), ld(taps + c + j), ld(taps + 2 * c + j))
            let (w3, w4, w5) = (ld(taps + 3 * c + j), ld(taps + 4 * c + j), ld(taps + 5 * c + j))
            let (w6, w7, w8) = (ld(taps + 6 * c + j), ld(taps + 7 * c + j), ld(taps + 8 * c + j))
            let s = start.map { ld($0 + j) } ?? V(repeating: 0)
            for xx in 0..<w {
                let (left, right) = (xx > 0, xx + 1 < w)
                var acc = s
                // one input row's three taps, left to right, those inside the map
                @inline(__always) func add(_ r: UnsafePointer<Float>, _ wl: V, _ wm: V, _ wr: V) {
                    let p = r + xx * c + j
                    if left { acc = acc + wl * ld(p - c) }
                    acc = acc + wm * ld(p)
                    if right { acc = acc + wr * ld(p + c) }
                }
                if let up { add(up, w0, w1, w2) }
                add(mid, w3, w4, w5)
                if let down { add(down, w6, w7, w8) }
                UnsafeMutableRawPointer(out + xx * c + j).storeBytes(of: acc, as: V.self)
            }
            j += 8
        }
        guard j < c else { return }
        // the last c mod 8 channels, one at a time, in the same order
        for xx in 0..<w {
            for ch in j..<c {
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
        let t = taps()
        var turned = t
        for k in 0..<9 { turned[(k * c)..<((k + 1) * c)] = t[((8 - k) * c)..<((9 - k) * c)] }
        turned.withUnsafeBufferPointer { tp in
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
    /// come in the outputs' raster order. A channel block's ten sums stay in registers across the row.
    private static func addTapProducts(of row: Int, in map: UnsafePointer<Float>, _ grad: UnsafePointer<Float>,
                                       height h: Int, width w: Int, channels c: Int,
                                       into sums: UnsafeMutablePointer<Float>) {
        typealias V = SIMD8<Float>
        @inline(__always) func ld(_ p: UnsafePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }
        @inline(__always) func st(_ v: V, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: V.self) }
        let up = row > 0 ? map + (row - 1) * w * c : nil
        let mid = map + row * w * c
        let down = row + 1 < h ? map + (row + 1) * w * c : nil
        let g = grad + row * w * c
        var j = 0
        while j + 8 <= c {
            var (s0, s1, s2) = (ld(sums + j), ld(sums + c + j), ld(sums + 2 * c + j))
            var (s3, s4, s5) = (ld(sums + 3 * c + j), ld(sums + 4 * c + j), ld(sums + 5 * c + j))
            var (s6, s7, s8) = (ld(sums + 6 * c + j), ld(sums + 7 * c + j), ld(sums + 8 * c + j))
            var sb = ld(sums + 9 * c + j)
            for xx in 0..<w {
                let (left, right) = (xx > 0, xx + 1 < w)
                let gv = ld(g + xx * c + j)
                sb = sb + gv
                @inline(__always) func add(_ r: UnsafePointer<Float>, _ sl: inout V, _ sm: inout V, _ sr: inout V) {
                    let p = r + xx * c + j
                    if left { sl = sl + ld(p - c) * gv }
                    sm = sm + ld(p) * gv
                    if right { sr = sr + ld(p + c) * gv }
                }
                if let up { add(up, &s0, &s1, &s2) }
                add(mid, &s3, &s4, &s5)
                if let down { add(down, &s6, &s7, &s8) }
            }
            st(s0, sums + j); st(s1, sums + c + j); st(s2, sums + 2 * c + j)
            st(s3, sums + 3 * c + j); st(s4, sums + 4 * c + j); st(s5, sums + 5 * c + j)
            st(s6, sums + 6 * c + j); st(s7, sums + 7 * c + j); st(s8, sums + 8 * c + j)
            st(sb, sums + 9 * c + j)
            j += 8
        }
        guard j < c else { return }
        for xx in 0..<w {
            for ch in j..<c {
                let gv = g[xx * c + ch]
                sums[9 * c + ch] += gv
                for ky in 0..<3 {
                    guard let r = ky == 0 ? up : ky == 1 ? mid : down else { continue }
                    for kx in 0..<3 where xx + kx >= 1 && xx + kx <= w {
                        sums[(ky * 3 + kx) * c + ch] += r[(xx + kx - 1) * c + ch] * gv
                    }
                }
            }
        }
    }
}
