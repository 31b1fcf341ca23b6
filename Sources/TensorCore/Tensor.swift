import Foundation

/// Errors raised by tensor operations. Messages name every shape involved.
public enum TensorError: Error, CustomStringConvertible, Equatable {
    /// Two operands whose shapes do not fit together.
    case shapeMismatch(operation: String, lhs: [Int], rhs: [Int])
    /// A shape that cannot hold the given number of elements, or a bad axis/range.
    case invalidShape(operation: String, shape: [Int], reason: String)

    public var description: String {
        switch self {
        case let .shapeMismatch(op, lhs, rhs):
            return "\(op): shape \(lhs) does not match shape \(rhs)"
        case let .invalidShape(op, shape, reason):
            return "\(op): invalid shape \(shape): \(reason)"
        }
    }
}

extension TensorError: LocalizedError {
    public var errorDescription: String? { description }
}

/// Owns one 64-byte-aligned block of Float32 memory.
///
/// The block comes from plain `malloc` with 64 bytes to spare and is aligned inside it. Asking the
/// allocator for 64-byte alignment instead (`posix_memalign`) made glibc split a sliver off the front of
/// every block; small allocations then settled in those slivers, between the large blocks, and pinned
/// the holes that freed activations left: the heap's high-water at 1×512² inference with flip was
/// 750–960 MB for a live peak of 268 MB, and 303 MB with plain `malloc`.
public final class TensorStorage: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<Float>
    public let capacity: Int
    /// The start of the allocation; `pointer` is its first 64-byte boundary (malloc's blocks are 16-byte
    /// aligned, so at most 48 bytes in).
    private let block: UnsafeMutableRawPointer

    static let alignment = 64

    /// Bytes requested for `capacity` floats: the floats plus room to align them.
    private static func blockBytes(_ capacity: Int) -> Int { max(capacity, 1) * MemoryLayout<Float>.stride + alignment }

    public init(capacity: Int) {
        _ = Self.allocatorTuned
        self.capacity = capacity
        let bytes = Self.blockBytes(capacity)
        // Alignment 16 is malloc's own: no aligned-allocation path, no split-off sliver.
        block = BlockPool.take(bytes) ?? UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 16)
        let aligned = block.alignedUp(toMultipleOf: Self.alignment)
        pointer = aligned.bindMemory(to: Float.self, capacity: max(capacity, 1))
    }

    deinit {
        if !BlockPool.give(block, Self.blockBytes(capacity)) { block.deallocate() }
    }

    /// Activations are allocated and freed every step, in the same sizes. By default glibc gives each
    /// block above 128 KiB (a threshold that adapts up to 32 MiB) its own mapping and unmaps it on free,
    /// so every step faulted in freshly zeroed pages again: about 420 MB per mit_b1 iteration, 9% of its
    /// time in the kernel's page clearing. With no per-block mappings and the heap trimmed only above
    /// 1 GiB of free top, freed memory stays mapped for the next step and coalesces, so the main heap's
    /// peak is the peak of what is live at once.
    static let allocatorTuned: Void = {
        #if os(Linux)
        _ = glibcMallopt(-4, 0)          // M_MMAP_MAX: no block gets a mapping of its own
        _ = glibcMallopt(-1, 1 << 30)    // M_TRIM_THRESHOLD
        #endif
    }()
}

/// Keeps freed blocks of 32 MiB and more that threads other than the main one use, for reuse by the
/// next tensor of exactly that size. glibc serves such threads (a server's request handlers) from heaps
/// of at most 64 MiB and gives a block that does not fit one of them a mapping of its own whatever
/// `M_MMAP_MAX` says, so without this each large request would fault its biggest activations in afresh.
/// The main thread's heap holds any size and coalesces freed blocks; keeping its blocks out of it would
/// only raise the peak (an exact-size cache for every thread held 1.7 GB where the heap alone peaks at
/// 1.2 GB on the mit_b1 iteration). Bounded in total size.
enum BlockPool {
    static let minimumBytes = 32 << 20
    static let capacityBytes = 1 << 30
    private static let lock = NSLock()
    nonisolated(unsafe) private static var free: [Int: [UnsafeMutableRawPointer]] = [:]
    nonisolated(unsafe) private static var pooled = 0

    static func take(_ bytes: Int) -> UnsafeMutableRawPointer? {
        guard bytes >= minimumBytes, !Thread.isMainThread else { return nil }
        lock.lock(); defer { lock.unlock() }
        guard let p = free[bytes]?.popLast() else { return nil }
        pooled -= bytes
        return p
    }

    static func give(_ p: UnsafeMutableRawPointer, _ bytes: Int) -> Bool {
        guard bytes >= minimumBytes, !Thread.isMainThread else { return false }
        lock.lock(); defer { lock.unlock() }
        guard pooled + bytes <= capacityBytes else { return false }
        free[bytes, default: []].append(p)
        pooled += bytes
        return true
    }
}

#if os(Linux)
/// glibc's `mallopt` (declared in <malloc.h>, which the Glibc module does not export).
@_silgen_name("mallopt") private func glibcMallopt(_ param: Int32, _ value: Int32) -> Int32
#endif

/// A contiguous, row-major Float32 tensor (NCHW for images and feature maps, (B, N, C) for tokens).
///
/// `Tensor` has reference semantics: layers write into tensors in place. `reshaped` and `slice(batch:)`
/// return views that share storage; `permuted` and `copy()` allocate.
public final class Tensor: @unchecked Sendable, CustomStringConvertible {
    public let storage: TensorStorage
    /// Offset of element 0 inside `storage`, in elements.
    public let offset: Int
    public let shape: [Int]
    public let count: Int

    /// Pointer to element 0.
    @inline(__always) public var data: UnsafeMutablePointer<Float> { storage.pointer + offset }

    /// A zero-filled tensor.
    public convenience init(zeros shape: [Int]) {
        self.init(uninitialized: shape)
        storage.pointer.initialize(repeating: 0, count: max(count, 1))
    }

    /// A tensor whose contents are unspecified: for outputs that the caller overwrites completely
    /// (GEMM results with beta = 0, element-wise results), saving a zero-fill pass over memory.
    public init(uninitialized shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.shape = shape
        self.count = shape.reduce(1, *)
        self.storage = TensorStorage(capacity: count)
        self.offset = 0
    }

    /// A tensor filled with `value`.
    public convenience init(shape: [Int], repeating value: Float) {
        self.init(zeros: shape)
        if value != 0 { data.update(repeating: value, count: count) }
    }

    /// A tensor holding `values` (row-major). Throws when the element count does not fit the shape.
    public convenience init(shape: [Int], values: [Float]) throws {
        let n = shape.reduce(1, *)
        guard n == values.count else {
            throw TensorError.invalidShape(operation: "Tensor(shape:values:)", shape: shape,
                                           reason: "needs \(n) values, got \(values.count)")
        }
        self.init(zeros: shape)
        values.withUnsafeBufferPointer { data.update(from: $0.baseAddress!, count: n) }
    }

    /// A view on existing storage.
    public init(storage: TensorStorage, offset: Int, shape: [Int]) {
        let n = shape.reduce(1, *)
        precondition(offset >= 0 && offset + n <= storage.capacity, "view out of bounds")
        self.storage = storage
        self.offset = offset
        self.shape = shape
        self.count = n
    }

    public var rank: Int { shape.count }

    /// Size of dimension `axis` (negative axes count from the end).
    public func dim(_ axis: Int) -> Int { shape[axis < 0 ? shape.count + axis : axis] }

    /// Row-major strides in elements.
    public var strides: [Int] {
        var s = [Int](repeating: 1, count: shape.count)
        var acc = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) { s[i] = acc; acc *= shape[i] }
        return s
    }

    public var description: String { "Tensor\(shape)" }

    /// The elements as an array (row-major).
    public var array: [Float] { Array(UnsafeBufferPointer(start: data, count: count)) }

    /// Element access by full index.
    public subscript(_ index: Int...) -> Float {
        get { data[flatIndex(index)] }
        set { data[flatIndex(index)] = newValue }
    }

    @inline(__always) func flatIndex(_ index: [Int]) -> Int {
        precondition(index.count == shape.count, "index \(index) for shape \(shape)")
        var flat = 0
        for (i, (ix, n)) in zip(index, shape).enumerated() {
            precondition(ix >= 0 && ix < n, "index \(index) out of bounds for shape \(shape) at axis \(i)")
            flat = flat * n + ix
        }
        return flat
    }

    /// A deep copy.
    public func copy() -> Tensor {
        let t = Tensor(uninitialized: shape)
        t.data.update(from: data, count: count)
        return t
    }

    /// Copies `other`'s elements into this tensor; the element counts must agree.
    public func assign(from other: Tensor) throws {
        guard other.count == count else {
            throw TensorError.shapeMismatch(operation: "assign", lhs: shape, rhs: other.shape)
        }
        data.update(from: other.data, count: count)
    }

    public func fill(_ value: Float) { data.update(repeating: value, count: count) }

    /// A view with another shape of the same element count. One dimension may be -1 (inferred).
    public func reshaped(_ newShape: [Int]) throws -> Tensor {
        var s = newShape
        let unknown = s.indices.filter { s[$0] == -1 }
        guard unknown.count <= 1 else {
            throw TensorError.invalidShape(operation: "reshape", shape: newShape, reason: "more than one -1")
        }
        if let u = unknown.first {
            let known = s.enumerated().filter { $0.offset != u }.map(\.element).reduce(1, *)
            guard known > 0, count % known == 0 else {
                throw TensorError.shapeMismatch(operation: "reshape", lhs: shape, rhs: newShape)
            }
            s[u] = count / known
        }
        guard s.reduce(1, *) == count, s.allSatisfy({ $0 >= 0 }) else {
            throw TensorError.shapeMismatch(operation: "reshape", lhs: shape, rhs: newShape)
        }
        return Tensor(storage: storage, offset: offset, shape: s)
    }

    /// A view of items `range` along the first axis.
    public func slice(_ range: Range<Int>) throws -> Tensor {
        guard rank >= 1, range.lowerBound >= 0, range.upperBound <= shape[0] else {
            throw TensorError.invalidShape(operation: "slice", shape: shape,
                                           reason: "range \(range) outside axis 0")
        }
        let inner = count / max(shape[0], 1)
        var s = shape
        s[0] = range.count
        return Tensor(storage: storage, offset: offset + range.lowerBound * inner, shape: s)
    }

    /// A view of item `i` along the first axis, with that axis removed.
    public func item(_ i: Int) throws -> Tensor {
        let v = try slice(i..<(i + 1))
        return Tensor(storage: v.storage, offset: v.offset, shape: Array(shape.dropFirst()))
    }

    /// A contiguous copy with the axes reordered: result axis i is input axis `order[i]`.
    public func permuted(_ order: [Int]) throws -> Tensor {
        guard order.count == rank, Set(order) == Set(0..<rank) else {
            throw TensorError.invalidShape(operation: "permute", shape: shape, reason: "bad axis order \(order)")
        }
        let outShape = order.map { shape[$0] }
        let out = Tensor(uninitialized: outShape)   // every element written below, in order
        // Channels-last ↔ channels-first (the model's two layouts): per image a 2-D transpose, done by tiles.
        if rank == 4 && (order == [0, 3, 1, 2] || order == [0, 2, 3, 1]) {
            let rows = order == [0, 3, 1, 2] ? shape[1] * shape[2] : shape[1]
            let cols = order == [0, 3, 1, 2] ? shape[3] : shape[2] * shape[3]
            for b in 0..<shape[0] {
                Self.transpose(data + b * rows * cols, rows: rows, cols: cols, into: out.data + b * rows * cols)
            }
            return out
        }
        let inStrides = strides
        let srcStrides = order.map { inStrides[$0] }
        let src = data, dst = out.data
        // Iterate the output in order; the innermost axis is a strided gather.
        let inner = outShape.last ?? 1
        let innerStride = srcStrides.last ?? 1
        let outer = inner == 0 ? 0 : count / inner
        var idx = [Int](repeating: 0, count: max(rank - 1, 0))
        for o in 0..<outer {
            var base = 0
            for a in 0..<idx.count { base += idx[a] * srcStrides[a] }
            let d = dst + o * inner
            for j in 0..<inner { d[j] = src[base + j * innerStride] }
            var a = idx.count - 1
            while a >= 0 {
                idx[a] += 1
                if idx[a] < outShape[a] { break }
                idx[a] = 0
                a -= 1
            }
        }
        return out
    }

    /// dst (cols × rows) = srcᵀ for a row-major rows × cols src, by 32×32 tiles (both sides stay in cache),
    /// bands of source rows on the workers.
    static func transpose(_ src: UnsafePointer<Float>, rows: Int, cols: Int, into dst: UnsafeMutablePointer<Float>) {
        let tile = 32
        let bands = (rows + tile - 1) / tile
        Parallel.forChunks(bands, grain: max(1, 4096 / max(cols * tile, 1))) { r in
            for band in r {
                let r0 = band * tile, r1 = min(r0 + tile, rows)
                for c0 in stride(from: 0, to: cols, by: tile) {
                    let c1 = min(c0 + tile, cols)
                    for c in c0..<c1 {
                        let d = dst + c * rows
                        for i in r0..<r1 { d[i] = src[i * cols + c] }
                    }
                }
            }
        }
    }

    /// Throws unless this tensor has exactly `expected` shape.
    public func expectShape(_ expected: [Int], _ operation: String) throws {
        guard shape == expected else {
            throw TensorError.shapeMismatch(operation: operation, lhs: shape, rhs: expected)
        }
    }
}
