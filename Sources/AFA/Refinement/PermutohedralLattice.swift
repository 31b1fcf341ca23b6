import Foundation
import TensorCore

/// Gaussian filtering of values attached to points in a d-dimensional feature space, approximated on
/// the permutohedral lattice (Adams, Baek & Davis, "Fast High-Dimensional Filtering Using the
/// Permutohedral Lattice", 2010) the way the dense CRF of Krähenbühl & Koltun (2011) uses it.
///
/// Building the lattice lifts every feature vector onto the hyperplane x·1 = 0 of d+1 dimensions,
/// finds the simplex of the lattice that encloses it (nearest remainder-0 point, then the rank of the
/// coordinates) and records the simplex's d+1 corners with their barycentric weights. Filtering then
/// splats each point's values onto those corners, blurs the lattice with (½, 1, ½) along each of its
/// d+1 directions and slices the result back with the same weights (scaled by α = 1/(1 + 2⁻ᵈ)).
/// The blur is the part that is not exactly symmetric: `filter(reverse: true)` runs the directions in
/// the opposite order and is the adjoint of the forward filter.
///
/// Work is split over workers so that results do not depend on their number: the splat (a scatter in
/// point order) by ranges of vertices, each filled by one worker, the blur by vertices, the slicing by
/// points. The three passes are also available one by one (`splat`, `blur`, `slice`) so that a caller
/// can fuse them with its own per-point work, as the dense CRF does. The lattice is immutable once
/// built and can be shared; the buffers a filter needs belong to the caller (`Buffers`).
public struct PermutohedralLattice: Sendable {
    /// Feature dimension d.
    public let dimension: Int
    /// Number of points N.
    public let pointCount: Int
    /// Number of lattice vertices M touched by the points.
    public let vertexCount: Int
    /// The lattice's tables in memory of their own (immutable after construction), so that the hot
    /// loops read them through plain pointers without reference counting.
    let memory: Memory
    /// For point i and corner r (i·(d+1) + r): the vertex, counted from 1 (0 is an always-zero slot that
    /// stands for "no neighbour" in the blur).
    var corner: UnsafePointer<Int32> { UnsafePointer(memory.corner) }
    /// The barycentric weight of that corner.
    var weight: UnsafePointer<Float> { UnsafePointer(memory.weight) }
    /// For direction j and vertex v (j·M + v−1): the neighbours one step back and forward along j,
    /// counted from 1, 0 when absent. Stored as pairs.
    let neighbour: [Int32]
    /// cornersUpTo[v] = number of point-corners on vertices 1...v (cornersUpTo[0] = 0).
    let cornersUpTo: [Int32]

    /// The scaling the reference applies after slicing: 1 / (1 + 2⁻ᵈ).
    public var alpha: Float { 1 / (1 + powf(2, -Float(dimension))) }

    /// Builds the lattice for `count` points whose `dimension` features are stored one point after
    /// another (`features[i·d + k]`), already divided by their standard deviations.
    public init(features: UnsafePointer<Float>, count n: Int, dimension d: Int) {
        precondition(d >= 1 && n >= 0)
        dimension = d
        pointCount = n
        let d1 = d + 1
        // The canonical simplex: corner r of the simplex at the origin has coordinate r where the
        // rank is at most d − r, and r − (d+1) otherwise.
        var canonical = [Int32](repeating: 0, count: d1 * d1)
        for r in 0...d {
            for j in 0...(d - r) { canonical[r * d1 + j] = Int32(r) }
            if r > 0 { for j in (d - r + 1)...d { canonical[r * d1 + j] = Int32(r - d1) } }
        }
        // The diagonal of the elevation matrix E, scaled to the filter's expected standard deviation
        // (Adams et al. 2010, pp. 5–6): sqrt(2/3)·(d+1) / sqrt((i+1)(i+2)).
        let invStdDev = Float(sqrt(2.0 / 3.0) * Double(d1))
        let scale = (0..<d).map { i in Float(1.0 / sqrt(Double((i + 2) * (i + 1))) * Double(invStdDev)) }
        let down = 1 / Float(d1), up = Float(d1)

        // Per point, in parallel: the d+1 corners' keys (d coordinates each; the last is implied by the
        // zero sum) and barycentric weights. Then, in point order, the keys get vertex numbers.
        var keys = [Int32](repeating: 0, count: n * d1 * d)
        var weight = [Float](repeating: 0, count: n * d1)
        keys.withUnsafeMutableBufferPointer { kb in
            weight.withUnsafeMutableBufferPointer { wb in
                let (keyOut, weightOut) = (kb.baseAddress!, wb.baseAddress!)
                Parallel.forChunks(n, grain: 2048) { range in
                    var elevated = [Float](repeating: 0, count: d1), rem0 = [Float](repeating: 0, count: d1)
                    var rank = [Int](repeating: 0, count: d1), bary = [Float](repeating: 0, count: d1 + 1)
                    for i in range {
                        let f = features + i * d
                        // y = E·f (the running sum keeps it O(d))
                        var sm: Float = 0
                        for j in stride(from: d, to: 0, by: -1) {
                            let cf = f[j - 1] * scale[j - 1]
                            elevated[j] = sm - Float(j) * cf
                            sm += cf
                        }
                        elevated[0] = sm
                        // the nearest remainder-0 lattice point, coordinate by coordinate
                        var sum: Float = 0
                        for k in 0...d {
                            let v = (down * elevated[k]).rounded(.toNearestOrEven)
                            rem0[k] = v * up
                            sum += v
                        }
                        // rank of each coordinate's residual among all of them
                        for k in 0...d { rank[k] = 0 }
                        for a in 0..<d {
                            let da = elevated[a] - rem0[a]
                            for b in (a + 1)...d {
                                if da < elevated[b] - rem0[b] { rank[a] += 1 } else { rank[b] += 1 }
                            }
                        }
                        // back onto the hyperplane when the rounded point is off it
                        let shift = Int(sum)
                        for k in 0...d {
                            rank[k] += shift
                            if rank[k] < 0 { rank[k] += d1; rem0[k] += up } else if rank[k] > d { rank[k] -= d1; rem0[k] -= up }
                        }
                        // barycentric coordinates (Adams et al. 2010, p. 10)
                        for k in 0...(d + 1) { bary[k] = 0 }
                        for k in 0...d {
                            let v = (elevated[k] - rem0[k]) * down
                            bary[d - rank[k]] += v
                            bary[d - rank[k] + 1] -= v
                        }
                        bary[0] += 1 + bary[d + 1]
                        for r in 0...d {
                            let key = keyOut + (i * d1 + r) * d
                            for k in 0..<d { key[k] = Int32(rem0[k]) + canonical[r * d1 + rank[k]] }
                            weightOut[i * d1 + r] = bary[r]
                        }
                    }
                }
            }
        }
        var table = LatticeHashTable(keySize: d, expected: max(16, n))
        var corner = [Int32](repeating: 0, count: n * d1)
        keys.withUnsafeBufferPointer { kb in
            let k = kb.baseAddress!
            for pc in 0..<(n * d1) {
                // Neighbouring points mostly lie in the same simplex: a corner whose key equals the
                // previous point's same corner has its vertex already (the table would return it too).
                if pc >= d1 {
                    var same = true
                    for c in 0..<d where k[pc * d + c] != k[(pc - d1) * d + c] { same = false; break }
                    if same { corner[pc] = corner[pc - d1]; continue }
                }
                corner[pc] = table.find(k + pc * d, create: true) + 1
            }
        }
        let m = table.count
        vertexCount = m

        // Neighbours along each direction j: all coordinates −1 except j at +d (back), the opposite
        // (forward). For j = d the implicit last coordinate is the one that moves. Lookups only, so in parallel.
        var neighbour = [Int32](repeating: 0, count: 2 * d1 * m)
        neighbour.withUnsafeMutableBufferPointer { nb in
            let out = nb.baseAddress!
            Parallel.forChunks(m, grain: 4096) { range in
                var n1 = [Int32](repeating: 0, count: d), n2 = [Int32](repeating: 0, count: d)
                for v in range {
                    for j in 0...d {
                        table.withKey(Int32(v)) { k in
                            for c in 0..<d { n1[c] = k[c] - 1; n2[c] = k[c] + 1 }
                            if j < d { n1[j] = k[j] + Int32(d); n2[j] = k[j] - Int32(d) }
                        }
                        out[2 * (j * m + v)] = n1.withUnsafeBufferPointer { table.lookup($0.baseAddress!) } + 1
                        out[2 * (j * m + v) + 1] = n2.withUnsafeBufferPointer { table.lookup($0.baseAddress!) } + 1
                    }
                }
            }
        }
        // corners per vertex, cumulated, to split the splat into ranges of equal work
        var cumulative = [Int32](repeating: 0, count: m + 1)
        for c in corner { cumulative[Int(c)] += 1 }
        for v in 0..<m { cumulative[v + 1] += cumulative[v] }
        memory = Memory(corner: corner, weight: weight)
        self.neighbour = neighbour
        cornersUpTo = cumulative
    }

    final class Memory: @unchecked Sendable {
        let corner: UnsafeMutablePointer<Int32>
        let weight: UnsafeMutablePointer<Float>
        init(corner: [Int32], weight: [Float]) {
            self.corner = .allocate(capacity: max(corner.count, 1))
            self.corner.initialize(from: corner, count: corner.count)
            self.weight = .allocate(capacity: max(weight.count, 1))
            self.weight.initialize(from: weight, count: weight.count)
        }
        deinit { corner.deallocate(); weight.deallocate() }
    }

    /// Slicing without reference counting: plain pointers into the lattice's tables, valid while the
    /// lattice lives.
    public struct Slicer {
        let corner: UnsafePointer<Int32>, weight: UnsafePointer<Float>
        let d1: Int
        public let alpha: Float

        /// Point i's row from blurred `values` (rows of `channels`, a multiple of 8): Σᵣ (wᵣ·α)·vertexᵣ.
        @inline(__always)
        public func slice(_ values: UnsafePointer<Float>, point i: Int, channels c: Int, into out: UnsafeMutablePointer<Float>) {
            let cs = corner + i * d1, ws = weight + i * d1
            // up to four blocks of 8 channels at a time (21 classes are three), summed over the corners
            // in registers, so that each corner's vertex and weight are read once per group
            var k = 0
            while k < c {
                let blocks = Swift.min(4, (c - k + 7) / 8)
                var a0 = SIMD8<Float>(), a1 = a0, a2 = a0, a3 = a0
                for r in 0..<d1 {
                    let wr = ws[r] * alpha, src = values + Int(cs[r]) * c + k
                    a0 += wr * PermutohedralLattice.load(src)
                    if blocks > 1 { a1 += wr * PermutohedralLattice.load(src + 8) }
                    if blocks > 2 { a2 += wr * PermutohedralLattice.load(src + 16) }
                    if blocks > 3 { a3 += wr * PermutohedralLattice.load(src + 24) }
                }
                PermutohedralLattice.store(a0, out + k)
                if blocks > 1 { PermutohedralLattice.store(a1, out + k + 8) }
                if blocks > 2 { PermutohedralLattice.store(a2, out + k + 16) }
                if blocks > 3 { PermutohedralLattice.store(a3, out + k + 24) }
                k += 8 * blocks
            }
        }
    }

    public var slicer: Slicer { Slicer(corner: corner, weight: weight, d1: dimension + 1, alpha: alpha) }

    /// Scratch memory for filtering `channels` values per point, reused across calls: two lattice-value
    /// buffers (the blur ping-pongs between them) with rows of `channels` rounded up to a multiple of 8
    /// (SIMD blocks), and a padded copy of the points' values when `channels` is not such a multiple.
    /// Raw memory, so that workers can fill disjoint parts of it at once.
    public final class Buffers {
        public let channels: Int
        /// `channels` rounded up to a multiple of 8.
        public let stride: Int
        let values: UnsafeMutablePointer<Float>
        let next: UnsafeMutablePointer<Float>
        let padded: UnsafeMutablePointer<Float>?
        let rows: Int, points: Int

        public init(lattice: PermutohedralLattice, channels: Int) {
            self.channels = channels
            stride = (channels + 7) / 8 * 8
            rows = lattice.vertexCount + 1
            points = lattice.pointCount
            values = .allocate(capacity: rows * stride)
            next = .allocate(capacity: rows * stride)
            values.initialize(repeating: 0, count: rows * stride)
            next.initialize(repeating: 0, count: rows * stride)
            if stride != channels {
                padded = .allocate(capacity: points * stride)
                padded!.initialize(repeating: 0, count: points * stride)
            } else {
                padded = nil
            }
        }

        deinit {
            values.deallocate()
            next.deallocate()
            padded?.deallocate()
        }
    }

    /// What a filter does with its result r (per point and channel).
    public enum Output: Sendable {
        /// output = r
        case store
        /// output += w·r (the Potts message of a CRF kernel with weight w, added to an energy)
        case add(weight: Float)
    }

    /// Filters `channels` values per point (`input[i·channels + c]`) into `output` (may alias `input`).
    /// With `normalization` n (one value per point) the result is n ⊙ K̃(n ⊙ input), the symmetric
    /// normalisation of the dense CRF. `reverse` runs the blur directions in the opposite order (the
    /// adjoint filter). The passes work on blocks of 8 channels; other channel counts go through a
    /// zero-padded copy.
    public func filter(_ input: UnsafePointer<Float>, into output: UnsafeMutablePointer<Float>, channels c: Int,
                       normalization: UnsafePointer<Float>? = nil, reverse: Bool = false, output mode: Output = .store,
                       buffers: Buffers? = nil) {
        let buf = buffers ?? Buffers(lattice: self, channels: c)
        precondition(buf.channels == c, "lattice buffers made for \(buf.channels) channels, used with \(c)")
        let stride = buf.stride
        guard stride != c, let p = buf.padded else {
            run(input, output, stride: c, normalization: normalization, reverse: reverse, mode: mode, buf)
            return
        }
        for i in 0..<pointCount { for k in 0..<c { p[i * stride + k] = input[i * c + k] } }
        run(p, p, stride: stride, normalization: normalization, reverse: reverse, mode: .store, buf)
        for i in 0..<pointCount {
            for k in 0..<c {
                switch mode {
                case .store: output[i * c + k] = p[i * stride + k]
                case let .add(w): output[i * c + k] += w * p[i * stride + k]
                }
            }
        }
    }

    private func run(_ input: UnsafePointer<Float>, _ output: UnsafeMutablePointer<Float>, stride c: Int,
                     normalization: UnsafePointer<Float>?, reverse: Bool, mode: Output, _ buf: Buffers) {
        let parts = splatRanges(parts: Parallel.workers)
        Parallel.forEach(parts.count) { p in splat(input, scale: normalization, channels: c, into: buf, vertices: parts[p]) }
        let values = blur(buf, reverse: reverse)
        let slicer = self.slicer
        Parallel.forChunks(pointCount, grain: max(64, 16_384 / c)) { range in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: c) { tmp in
                let sliced = tmp.baseAddress!
                for i in range {
                    slicer.slice(values, point: i, channels: c, into: sliced)
                    let s = normalization?[i]
                    for k in Swift.stride(from: 0, to: c, by: 8) {
                        var r = Self.load(sliced + k)
                        if let s { r = r * s }
                        switch mode {
                        case .store: Self.store(r, output + i * c + k)
                        case let .add(w): Self.store(Self.load(output + i * c + k) + w * r, output + i * c + k)
                        }
                    }
                }
            }
        }
    }

    /// Splits the vertices into at most `parts` ranges (counted from 1) with about equal numbers of
    /// point-corners, for `splat`.
    public func splatRanges(parts: Int) -> [Range<Int>] {
        let total = Int(cornersUpTo[vertexCount]), p = max(1, min(parts, vertexCount))
        var bounds = [1]
        for q in 1..<p {
            let target = Int32(total * q / p)
            // first v with cornersUpTo[v] ≥ target
            var lo = bounds.last!, hi = vertexCount
            while lo < hi { let mid = (lo + hi) / 2; if cornersUpTo[mid] < target { lo = mid + 1 } else { hi = mid } }
            bounds.append(lo)
        }
        bounds.append(vertexCount + 1)
        return (0..<p).map { bounds[$0]..<max(bounds[$0], bounds[$0 + 1]) }
    }

    /// Splat in point order onto the vertices of `range` (counted from 1): vertex += w·(s·input), s the
    /// point's `scale` (1 without). The lattice values are few and stay in cache while the input streams
    /// through; a worker per range keeps every sum in point order whatever the number of workers.
    /// `channels` must be the buffers' row stride (a multiple of 8).
    public func splat(_ input: UnsafePointer<Float>, scale: UnsafePointer<Float>?, channels c: Int,
                      into buffers: Buffers, vertices range: Range<Int>) {
        precondition(c == buffers.stride && c % 8 == 0)
        let d1 = dimension + 1
        let (lo, hi) = (Int32(range.lowerBound), Int32(range.upperBound))
        let (values, cp, wp) = (buffers.values, corner, weight)
        if range.lowerBound == 1 { values.update(repeating: 0, count: c) }   // the "no neighbour" slot
        (values + range.lowerBound * c).update(repeating: 0, count: range.count * c)
        withUnsafeTemporaryAllocation(of: Float.self, capacity: c) { tmp in
            let row = tmp.baseAddress!
            for i in 0..<pointCount {
                // the point's (scaled) values, made once when one of its corners is in range
                var ready = false
                for r in 0..<d1 {
                    let o = cp[i * d1 + r]
                    guard o >= lo && o < hi else { continue }
                    if !ready {
                        let src = input + i * c
                        if let scale {
                            let s = scale[i]
                            for k in Swift.stride(from: 0, to: c, by: 8) { Self.store(Self.load(src + k) * s, row + k) }
                        } else {
                            row.update(from: src, count: c)
                        }
                        ready = true
                    }
                    let w = wp[i * d1 + r], dst = values + Int(o) * c
                    for k in Swift.stride(from: 0, to: c, by: 8) { Self.store(Self.load(dst + k) + w * Self.load(row + k), dst + k) }
                }
            }
        }
    }

    /// Blurs the splatted values with (½, 1, ½) along each lattice direction (in reverse order with
    /// `reverse`), in parallel over vertices; returns the buffer that holds the result.
    public func blur(_ buffers: Buffers, reverse: Bool = false) -> UnsafePointer<Float> {
        let c = buffers.stride, m = vertexCount, d1 = dimension + 1
        let grain = max(64, 16_384 / c)
        return neighbour.withUnsafeBufferPointer { np in
            var values = buffers.values, next = buffers.next
            next.update(repeating: 0, count: c)   // the "no neighbour" slot
            for step in 0..<d1 {
                let j = reverse ? d1 - 1 - step : step
                let (old, new) = (values, next)
                Parallel.forChunks(m, grain: grain) { range in
                    for v in range {
                        let a = old + Int(np[2 * (j * m + v)]) * c, b = old + Int(np[2 * (j * m + v) + 1]) * c
                        let o = old + (v + 1) * c, dst = new + (v + 1) * c
                        let half: Float = 0.5
                        for k in Swift.stride(from: 0, to: c, by: 8) {
                            Self.store(Self.load(o + k) + half * (Self.load(a + k) + Self.load(b + k)), dst + k)
                        }
                    }
                }
                swap(&values, &next)
            }
            return UnsafePointer(values)
        }
    }

    @inline(__always) static func load(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
        UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
    }

    @inline(__always) static func store(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
    }
}

/// Open-addressing hash table from integer lattice keys (d coordinates; the (d+1)-th is implied by the
/// zero sum) to dense vertex indices in order of first insertion.
struct LatticeHashTable {
    let keySize: Int
    private(set) var count = 0
    private var keys: [Int32] = []
    private var slots: [Int32]
    private var mask: Int

    init(keySize: Int, expected: Int) {
        self.keySize = keySize
        var cap = 16
        while cap < 2 * expected { cap <<= 1 }
        slots = [Int32](repeating: -1, count: cap)
        mask = cap - 1
        keys.reserveCapacity(expected * keySize)
    }

    private func hash(_ k: UnsafePointer<Int32>) -> Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for i in 0..<keySize { h = (h ^ UInt64(UInt32(bitPattern: k[i]))) &* 0x0000_0100_0000_01b3 }
        h ^= h >> 29
        return Int(truncatingIfNeeded: h)
    }

    /// The index of `key`, or −1 when absent (read-only, so several threads may look up at once).
    func lookup(_ key: UnsafePointer<Int32>) -> Int32 {
        keys.withUnsafeBufferPointer { kp in
            slots.withUnsafeBufferPointer { sp in
                var s = hash(key) & mask
                while true {
                    let e = sp[s]
                    if e < 0 { return -1 }
                    let base = Int(e) * keySize
                    var same = true
                    for i in 0..<keySize where kp[base + i] != key[i] { same = false; break }
                    if same { return e }
                    s = (s + 1) & mask
                }
            }
        }
    }

    /// The index of `key`; with `create`, inserts it when absent, otherwise returns −1 for an absent key.
    mutating func find(_ key: UnsafePointer<Int32>, create: Bool) -> Int32 {
        if create && 2 * (count + 1) > slots.count { grow() }
        var s = hash(key) & mask
        while true {
            let e = slots[s]
            if e < 0 {
                guard create else { return -1 }
                for i in 0..<keySize { keys.append(key[i]) }
                slots[s] = Int32(count)
                count += 1
                return Int32(count - 1)
            }
            var same = true
            let base = Int(e) * keySize
            for i in 0..<keySize where keys[base + i] != key[i] { same = false; break }
            if same { return e }
            s = (s + 1) & mask
        }
    }

    func withKey<T>(_ index: Int32, _ body: (UnsafePointer<Int32>) -> T) -> T {
        keys.withUnsafeBufferPointer { body($0.baseAddress! + Int(index) * keySize) }
    }

    private mutating func grow() {
        slots = [Int32](repeating: -1, count: slots.count * 2)
        mask = slots.count - 1
        keys.withUnsafeBufferPointer { kp in
            for e in 0..<count {
                var s = hash(kp.baseAddress! + e * keySize) & mask
                while slots[s] >= 0 { s = (s + 1) & mask }
                slots[s] = Int32(e)
            }
        }
    }
}
