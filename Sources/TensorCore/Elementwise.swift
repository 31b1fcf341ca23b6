import Foundation

/// Element-wise and row-wise kernels on raw Float buffers: SIMD16 bodies, scalar tails, split over
/// the workers in fixed chunks for large inputs.
public enum Kernels {
    /// Elements per parallel chunk: large enough to amortise dispatch, small enough to balance.
    public static let grain = 1 << 15

    /// Applies `body(range)` over 0..<n: inline when small, otherwise in parallel fixed chunks.
    @inline(__always)
    static func split(_ n: Int, _ body: (Range<Int>) -> Void) {
        if n <= grain { body(0..<n) } else { Parallel.forChunks(n, grain: grain, body) }
    }

    /// Lane-wise map over a range: SIMD16 body, the tail through a padded vector.
    ///
    /// Pass `f` as a local `@inline(__always)` function, not a closure literal: a closure that is called
    /// from two places (loop and tail) and has a large body (erf, exp) is compiled out of line, where its
    /// SIMD16 argument and result travel as four 128-bit registers, and identical kernels that differ only
    /// in the closure are merged into one that calls it through a pointer, once per 16 elements.
    @inline(__always)
    static func map1(_ r: Range<Int>, _ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>,
                     _ f: (Vec) -> Vec) {
        var i = r.lowerBound
        while i + vecWidth <= r.upperBound { store(f(load(x + i)), out + i); i += vecWidth }
        if i < r.upperBound {
            var v = Vec(repeating: 0)
            for j in 0..<(r.upperBound - i) { v[j] = x[i + j] }
            let y = f(v)
            for j in 0..<(r.upperBound - i) { out[i + j] = y[j] }
        }
    }

    @inline(__always)
    static func map2(_ r: Range<Int>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                     _ out: UnsafeMutablePointer<Float>, _ f: (Vec, Vec) -> Vec) {
        var i = r.lowerBound
        while i + vecWidth <= r.upperBound { store(f(load(a + i), load(b + i)), out + i); i += vecWidth }
        if i < r.upperBound {
            var va = Vec(repeating: 0), vb = Vec(repeating: 0)
            for j in 0..<(r.upperBound - i) { va[j] = a[i + j]; vb[j] = b[i + j] }
            let y = f(va, vb)
            for j in 0..<(r.upperBound - i) { out[i + j] = y[j] }
        }
    }

    /// Every row of out (rows × cols, rows `rowStride` apart) set to `row`: a bias seeded before a
    /// product that adds to it.
    public static func broadcastRows(_ row: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>,
                                     rows: Int, cols: Int, rowStride: Int? = nil) {
        if rows <= 0 || cols <= 0 { return }
        let stride = rowStride ?? cols
        let rowsPerChunk = max(1, grain / cols)
        Parallel.forChunks(rows, grain: rowsPerChunk) { r in for i in r { (out + i * stride).update(from: row, count: cols) } }
    }

    /// out = a + b
    public static func add(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int) {
        @inline(__always) func f(_ a: Vec, _ b: Vec) -> Vec { a + b }
        split(n) { map2($0, a, b, out, f) }
    }

    /// out = max(a, b)
    public static func maximum(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int) {
        @inline(__always) func f(_ a: Vec, _ b: Vec) -> Vec { a.replacing(with: b, where: b .> a) }
        split(n) { map2($0, a, b, out, f) }
    }

    /// out = a · b
    public static func mul(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int) {
        @inline(__always) func f(_ a: Vec, _ b: Vec) -> Vec { a * b }
        split(n) { map2($0, a, b, out, f) }
    }

    /// out = s · x
    public static func scale(_ x: UnsafePointer<Float>, _ s: Float, _ out: UnsafeMutablePointer<Float>, _ n: Int) {
        @inline(__always) func f(_ v: Vec) -> Vec { v * s }
        split(n) { map1($0, x, out, f) }
    }

    /// y += alpha · x
    public static func axpy(_ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        @inline(__always) func f(_ xv: Vec, _ yv: Vec) -> Vec { yv + alpha * xv }
        split(n) { map2($0, x, y, y, f) }
    }

    /// out = Σₖ wₖ·mapsₖ over maps of n elements, added in the order k = 0, 1, … to a zero start: the same
    /// sums, to the bit, as zero-filling `out` and adding one map at a time with `axpy`, but in one pass
    /// that writes each element once.
    public static func weightedSum(_ maps: [UnsafePointer<Float>], weights: [Float], into out: UnsafeMutablePointer<Float>, _ n: Int) {
        precondition(maps.count == weights.count, "weightedSum: \(maps.count) maps, \(weights.count) weights")
        if maps.isEmpty { out.update(repeating: 0, count: n); return }
        maps.withUnsafeBufferPointer { mp in
            weights.withUnsafeBufferPointer { wp in
                let (m, w, k) = (mp.baseAddress!, wp.baseAddress!, mp.count)
                split(n) { r in
                    var i = r.lowerBound
                    while i + vecWidth <= r.upperBound {
                        var acc = Vec(repeating: 0)
                        for c in 0..<k { acc = acc + w[c] * load(m[c] + i) }
                        store(acc, out + i)
                        i += vecWidth
                    }
                    while i < r.upperBound {
                        var acc: Float = 0
                        for c in 0..<k { acc = acc + w[c] * m[c][i] }
                        out[i] = acc
                        i += 1
                    }
                }
            }
        }
    }

    /// out = x + xᵀ + c for an n×n row-major matrix (out must not alias x). Tiles of 32×32, so the
    /// transposed reads stay in cache; parallel over row bands, each element written by one worker.
    public static func addTransposed(_ x: UnsafePointer<Float>, plus c: Float, into out: UnsafeMutablePointer<Float>, n: Int) {
        let tile = 32
        let bands = (n + tile - 1) / tile
        Parallel.forChunks(bands, grain: max(1, 4096 / max(n, 1))) { r in
            for bi in r {
                let i0 = bi * tile, i1 = min(i0 + tile, n)
                for j0 in stride(from: 0, to: n, by: tile) {
                    let j1 = min(j0 + tile, n)
                    for i in i0..<i1 {
                        let row = x + i * n, o = out + i * n
                        for j in j0..<j1 { o[j] = row[j] + x[j * n + i] + c }
                    }
                }
            }
        }
    }

    /// out = max(x, 0)
    public static func relu(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int) {
        @inline(__always) func f(_ v: Vec) -> Vec { v.replacing(with: 0, where: v .< 0) }
        split(n) { map1($0, x, out, f) }
    }

    /// out = e^x
    public static func exp(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int) {
        @inline(__always) func f(_ v: Vec) -> Vec { vexp(v) }
        split(n) { map1($0, x, out, f) }
    }

    /// out = 1 / (1 + e^-x)
    public static func sigmoid(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int) {
        @inline(__always) func f(_ v: Vec) -> Vec { 1 / (1 + vexp(-v)) }
        split(n) { map1($0, x, out, f) }
    }

    /// ReLU backward from its output: dx = dy where y > 0, 0 elsewhere.
    public static func reluBackward(_ y: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
                                    _ dx: UnsafeMutablePointer<Float>, _ n: Int) {
        @inline(__always) func f(_ v: Vec, _ g: Vec) -> Vec { g.replacing(with: 0, where: .!(v .> 0)) }
        split(n) { map2($0, y, dy, dx, f) }
    }

    /// Sigmoid backward from its output: dx = dy · y · (1 − y).
    public static func sigmoidBackward(_ y: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
                                       _ dx: UnsafeMutablePointer<Float>, _ n: Int) {
        @inline(__always) func f(_ v: Vec, _ g: Vec) -> Vec { g * v * (1 - v) }
        split(n) { map2($0, y, dy, dx, f) }
    }

    /// Exact GELU: out = x · Φ(x) = ½ x (1 + erf(x / √2)).
    public static func gelu(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int) {
        split(n) { geluSerial(x + $0.lowerBound, out + $0.lowerBound, $0.count) }
    }

    /// GELU on the calling thread only: for a kernel that applies it to a block it has just written,
    /// from inside its own parallel loop. Same values as `gelu`, element for element.
    public static func geluSerial(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int) {
        @inline(__always) func f(_ v: Vec) -> Vec { 0.5 * v * (1 + verf(v * 0.70710678118654752)) }
        map1(0..<n, x, out, f)
    }

    /// GELU backward: dx = dy · (Φ(x) + x · φ(x)).
    public static func geluBackward(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
                                    _ dx: UnsafeMutablePointer<Float>, _ n: Int) {
        @inline(__always) func f(_ v: Vec, _ g: Vec) -> Vec {
            let cdf = 0.5 * (1 + verf(v * 0.70710678118654752))
            let pdf = vexp(-0.5 * v * v) * 0.39894228040143268
            return g * (cdf + v * pdf)
        }
        split(n) { map2($0, x, dy, dx, f) }
    }

    /// Row-wise softmax of scale·x over `cols` columns, for `rows` rows (max-subtracted, so stable
    /// for any finite input). x and out may alias.
    public static func softmaxRows(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>,
                                   rows: Int, cols: Int, scale: Float = 1) {
        let grainRows = max(1, grain / max(cols, 1))
        Parallel.forChunks(rows, grain: grainRows) { rr in
            for r in rr {
                let xr = x + r * cols, orow = out + r * cols
                // Max and sum in 16 lanes, then across them: a scalar running max or sum is one
                // dependent chain per row (it was two thirds of the kernel's time).
                var j = 0
                var mv = Vec(repeating: -.infinity)
                while j + vecWidth <= cols { let v = load(xr + j); mv = mv.replacing(with: v, where: v .> mv); j += vecWidth }
                var m = vmax(mv)
                while j < cols { m = Swift.max(m, xr[j]); j += 1 }
                let shift = m * scale
                // e^(scale·x − shift) written and summed in one pass (written out rather than through
                // `map1`: its function, capturing the shift, stayed out of line), the tail through a
                // padded vector and added after the lanes, as a separate summing pass would.
                j = 0
                var sv = Vec(repeating: 0)
                while j + vecWidth <= cols {
                    let e = vexp(load(xr + j) * scale - shift)
                    store(e, orow + j)
                    sv += e
                    j += vecWidth
                }
                var s = vsum(sv)
                if j < cols {
                    var v = Vec(repeating: 0)
                    for t in 0..<(cols - j) { v[t] = xr[j + t] }
                    let e = vexp(v * scale - shift)
                    for t in 0..<(cols - j) { orow[j + t] = e[t]; s += e[t] }
                }
                let inv = 1 / s
                j = 0
                while j + vecWidth <= cols { store(load(orow + j) * inv, orow + j); j += vecWidth }
                while j < cols { orow[j] *= inv; j += 1 }
            }
        }
    }

    /// Backward of `softmaxRows`: dx = scale · y ⊙ (dy − Σ_j y_j dy_j) per row. dx may alias dy.
    public static func softmaxRowsBackward(_ y: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
                                           _ dx: UnsafeMutablePointer<Float>, rows: Int, cols: Int, scale: Float = 1) {
        let grainRows = max(1, grain / max(cols, 1))
        Parallel.forChunks(rows, grain: grainRows) { rr in
            for r in rr {
                let yr = y + r * cols, gr = dy + r * cols, dr = dx + r * cols
                var j = 0, dv = Vec(repeating: 0)
                while j + vecWidth <= cols { dv += load(yr + j) * load(gr + j); j += vecWidth }
                var dot = vsum(dv)
                while j < cols { dot += yr[j] * gr[j]; j += 1 }
                @inline(__always) func f(_ yv: Vec, _ gv: Vec) -> Vec { scale * yv * (gv - dot) }
                map2(0..<cols, yr, gr, dr, f)
            }
        }
    }

    /// Column sums of a block of at most 32 adjacent columns: sums[k] = Σ_r terms(r, j0 + k) in Double,
    /// every column's terms added in row order — the same bits as a scalar loop per column, for any
    /// number of workers — with the block's partial sums in four 8-lane registers across the rows (a
    /// row's 32 floats are two cache lines; a sum kept in memory is a store-to-load chain per row).
    /// `terms(r, j, n)` gives the terms of row r for the columns j..<j+n (n ≤ 8; lanes from n on are
    /// ignored); read its floats with `loadWidened`. `@inlinable`: other modules' loops must get the body
    /// and their closure inlined into it, not a call per row.
    @inlinable @inline(__always)
    public static func columnBlockSums(rows: Int, _ j0: Int, width: Int, into sums: UnsafeMutablePointer<Double>,
                                       _ terms: (_ r: Int, _ j: Int, _ n: Int) -> SIMD8<Double>) {
        precondition(width <= 32, "columnBlockSums: at most 32 columns")
        if width == 32 {
            var a0 = SIMD8<Double>(), a1 = SIMD8<Double>(), a2 = SIMD8<Double>(), a3 = SIMD8<Double>()
            for r in 0..<rows {
                a0 += terms(r, j0, 8); a1 += terms(r, j0 + 8, 8); a2 += terms(r, j0 + 16, 8); a3 += terms(r, j0 + 24, 8)
            }
            let out = UnsafeMutableRawPointer(sums)
            out.storeBytes(of: a0, as: SIMD8<Double>.self); out.storeBytes(of: a1, toByteOffset: 64, as: SIMD8<Double>.self)
            out.storeBytes(of: a2, toByteOffset: 128, as: SIMD8<Double>.self); out.storeBytes(of: a3, toByteOffset: 192, as: SIMD8<Double>.self)
            return
        }
        var j = 0
        while j < width {
            let n = Swift.min(8, width - j)
            var a = SIMD8<Double>()
            for r in 0..<rows { a += terms(r, j0 + j, n) }
            for l in 0..<n { sums[j + l] = a[l] }
            j += n
        }
    }

    /// n ≤ 8 floats from p (lanes from n on zero; nothing past p + n is read).
    @inlinable @inline(__always)
    public static func load8(_ p: UnsafePointer<Float>, _ n: Int) -> SIMD8<Float> {
        if n == 8 { return UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self) }
        var v = SIMD8<Float>()
        for l in 0..<n { v[l] = p[l] }
        return v
    }

    /// `load8` widened to Double.
    @inlinable @inline(__always)
    public static func loadWidened(_ p: UnsafePointer<Float>, _ n: Int) -> SIMD8<Double> { SIMD8<Double>(load8(p, n)) }

    // The Double reductions below sum the terms of 16 elements at a time in two 8-lane registers and
    // add the lanes in a fixed order at the end (`foldLanes`), then the chunk's tail one by one: a single
    // running sum is one chain of dependent additions, four cycles per element. Chunks are fixed by the
    // length (`Parallel.sum`), so the result does not depend on the number of workers.

    /// Σ x in Double, deterministic (fixed chunks, partials added in order).
    public static func sum(_ x: UnsafePointer<Float>, _ n: Int) -> Double {
        Parallel.sum(n, grain: grain) { r in
            var s0 = SIMD8<Double>(), s1 = SIMD8<Double>()
            var i = r.lowerBound
            while i + 16 <= r.upperBound { s0 += loadWidened(x + i, 8); s1 += loadWidened(x + i + 8, 8); i += 16 }
            var s = foldLanes(s0, s1)
            while i < r.upperBound { s += Double(x[i]); i += 1 }
            return s
        }
    }

    /// Σ x² in Double, deterministic.
    public static func sumOfSquares(_ x: UnsafePointer<Float>, _ n: Int) -> Double {
        Parallel.sum(n, grain: grain) { r in
            var s0 = SIMD8<Double>(), s1 = SIMD8<Double>()
            var i = r.lowerBound
            while i + 16 <= r.upperBound {
                let u = loadWidened(x + i, 8), v = loadWidened(x + i + 8, 8)
                s0 += u * u; s1 += v * v; i += 16
            }
            var s = foldLanes(s0, s1)
            while i < r.upperBound { let v = Double(x[i]); s += v * v; i += 1 }
            return s
        }
    }

    /// Σ a·b in Double, deterministic. (A product of two floats is exact in Double; only the order of
    /// the additions is chosen.)
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Double {
        Parallel.sum(n, grain: grain) { r in
            var s0 = SIMD8<Double>(), s1 = SIMD8<Double>()
            var i = r.lowerBound
            while i + 16 <= r.upperBound {
                s0 += loadWidened(a + i, 8) * loadWidened(b + i, 8)
                s1 += loadWidened(a + i + 8, 8) * loadWidened(b + i + 8, 8)
                i += 16
            }
            var s = foldLanes(s0, s1)
            while i < r.upperBound { s += Double(a[i]) * Double(b[i]); i += 1 }
            return s
        }
    }

    /// The 16 lanes of two partial-sum registers added in a fixed order.
    @inline(__always)
    static func foldLanes(_ s0: SIMD8<Double>, _ s1: SIMD8<Double>) -> Double {
        let s = s0 + s1, h = s.lowHalf + s.highHalf
        return (h[0] + h[2]) + (h[1] + h[3])
    }

    /// Largest element (−∞ for an empty buffer; NaN is ignored).
    public static func maxValue(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        var m = -Float.infinity
        for i in 0..<n where x[i] > m { m = x[i] }
        return m
    }
}

extension Tensor {
    private func checkSameShape(_ other: Tensor, _ op: String) throws {
        guard shape == other.shape else { throw TensorError.shapeMismatch(operation: op, lhs: shape, rhs: other.shape) }
    }

    /// Element-wise sum (shapes must match).
    public func adding(_ other: Tensor) throws -> Tensor {
        try checkSameShape(other, "add")
        let out = Tensor(uninitialized: shape)
        Kernels.add(data, other.data, out.data, count)
        return out
    }

    /// Element-wise product (shapes must match).
    public func multiplying(_ other: Tensor) throws -> Tensor {
        try checkSameShape(other, "mul")
        let out = Tensor(uninitialized: shape)
        Kernels.mul(data, other.data, out.data, count)
        return out
    }

    /// self += alpha · other (shapes must match).
    public func addScaled(_ other: Tensor, alpha: Float = 1) throws {
        try checkSameShape(other, "addScaled")
        Kernels.axpy(alpha, other.data, data, count)
    }

    /// s · self
    public func scaled(_ s: Float) -> Tensor {
        let out = Tensor(uninitialized: shape)
        Kernels.scale(data, s, out.data, count)
        return out
    }

    /// Σ elements (Double accumulation).
    public func sum() -> Double { Kernels.sum(data, count) }

    /// Mean of the elements (Double accumulation).
    public func mean() -> Double { count == 0 ? .nan : sum() / Double(count) }

    /// True when no element is NaN or infinite.
    public var isFinite: Bool {
        for i in 0..<count where !data[i].isFinite { return false }
        return true
    }

    /// Largest |element|.
    public func maxAbs() -> Float {
        var m: Float = 0
        for i in 0..<count { m = Swift.max(m, abs(data[i])) }
        return m
    }
}
