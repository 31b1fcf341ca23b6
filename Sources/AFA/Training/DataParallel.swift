import Foundation
import Layers
import TensorCore

/// The collectives data-parallel training needs from a group of processes (one per rank). The
/// product's implementation is Open MPI's (`AFADistributed.MPICommunicator`, in `afa-mpi`); the
/// library itself links no transport.
///
/// Every rank calls the same collectives in the same order; a call returns when all ranks made it.
public protocol Communicator: AnyObject {
    /// This process's rank, 0..<size.
    var rank: Int { get }
    /// Number of ranks.
    var size: Int { get }
    /// Sums `count` values over all ranks, in place, on every rank.
    func allreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws
    func allreduceSum(_ buffer: UnsafeMutablePointer<Double>, count: Int) throws
    /// Every rank's `values` (the same count on each), concatenated in rank order.
    func allgather(_ values: [UInt64]) throws -> [UInt64]
    /// Rank 0's bytes, on every rank (the argument is ignored elsewhere).
    func broadcast(_ data: Data) throws -> Data
}

/// Thrown when the ranks of a data-parallel run disagree (their weights or their configuration).
public struct DivergedRanksError: Error, CustomStringConvertible {
    public let description: String
}

/// How a training step splits its global batch (DESIGN.md §10).
///
/// `shards` is the number of data-parallel ranks: the global batch is cut into that many equal,
/// consecutive shards, each shard runs the whole step (CAM passes, labels, forward, backward) with its
/// own BatchNorm statistics and its own dropout stream, and the shards' gradients and losses are
/// averaged — what PyTorch DDP does across GPUs. With a communicator, this process computes the
/// shard of its rank and the average is an allreduce; without one it computes every shard in turn,
/// which reproduces an N-rank run in one process (tests, and checking a cluster against one machine).
public struct DataParallel {
    public let shards: Int
    public let communicator: Communicator?

    public init(shards: Int = 1, communicator: Communicator? = nil) throws {
        guard shards >= 1 else { throw AFAError.invalidInput("data-parallel shards must be at least 1, got \(shards)") }
        if let c = communicator, c.size != shards {
            throw AFAError.invalidInput("the recipe has \(shards) shard(s) but \(c.size) ranks run it")
        }
        self.shards = shards; self.communicator = communicator
    }

    public static let single = try! DataParallel()

    /// The shards this process computes.
    public var localShards: Range<Int> { communicator.map { $0.rank..<($0.rank + 1) } ?? 0..<shards }

    /// Whether this process writes the run's files (rank 0, or the only process).
    public var isWriter: Bool { (communicator?.rank ?? 0) == 0 }

    /// Images of each shard of a global batch of `batchSize`.
    public func shardSize(batchSize: Int) throws -> Int {
        guard batchSize % shards == 0 else {
            throw AFAError.invalidInput("the global batch (\(batchSize)) must divide by the number of ranks (\(shards))")
        }
        return batchSize / shards
    }

    /// The random stream of shard `s`: shard 0's is the single-process stream, so one shard is the
    /// plain run.
    public static func stream(seed: UInt64, shard s: Int) -> RNG {
        RNG(seed: (seed &+ 101) &+ UInt64(s) &* 0x9E37_79B9_7F4A_7C15)
    }

    /// A cheap fingerprint of every parameter's bits (FNV-1a over 64-bit words), equal on ranks whose
    /// weights are bit-identical.
    public static func checksum(_ parameters: [Parameter]) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for p in parameters {
            let words = p.value.count / 2
            let raw = UnsafeRawPointer(p.value.data)
            for i in 0..<words {
                h = (h ^ raw.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self)) &* 0x100_0000_01b3
            }
            if p.value.count % 2 == 1 { h = (h ^ UInt64(p.value.data[p.value.count - 1].bitPattern)) &* 0x100_0000_01b3 }
        }
        return h
    }

    /// Stops with an error naming the ranks whose weights differ from rank 0's.
    public func verifyIdenticalWeights(_ parameters: [Parameter], iteration: Int) throws -> UInt64 {
        let mine = Self.checksum(parameters)
        guard let c = communicator else { return mine }
        let all = try c.allgather([mine])
        let off = all.indices.filter { all[$0] != all[0] }
        guard off.isEmpty else {
            throw DivergedRanksError(description: "after iteration \(iteration) the weights of rank(s) \(off.map(String.init).joined(separator: ", ")) "
                                     + "differ from rank 0's (checksums \(all.map { String($0, radix: 16) }.joined(separator: " "))); "
                                     + "the ranks must run the same build, recipe, data and OpenBLAS kernel")
        }
        return mine
    }
}

extension TrainingBatch {
    /// Images `s·n ..< (s+1)·n` of this batch, sharing its memory.
    public func shard(_ s: Int, size n: Int) -> TrainingBatch {
        let (c, h, w) = (images.shape[1], images.shape[2], images.shape[3])
        let k = clsLabel.shape[1]
        return TrainingBatch(images: Tensor(storage: images.storage, offset: images.offset + s * n * c * h * w, shape: [n, c, h, w]),
                             clsLabel: Tensor(storage: clsLabel.storage, offset: clsLabel.offset + s * n * k, shape: [n, k]),
                             boxes: Array(boxes[(s * n)..<((s + 1) * n)]))
    }
}

/// The BatchNorm running statistics and counters of every shard a process computes, kept apart so
/// that each shard updates its own as its rank would (one process emulating N ranks).
final class ShardStatistics {
    let buffers: [Buffer]
    let counters: [Counter]
    private var values: [[Float]]
    private var counts: [[Int64]]

    init(model: AFAModel, shards: Int) {
        buffers = model.buffers; counters = model.counters
        let v = buffers.flatMap { Array(UnsafeBufferPointer(start: $0.value.data, count: $0.value.count)) }
        values = Array(repeating: v, count: shards)
        counts = Array(repeating: counters.map(\.value), count: shards)
    }

    /// Puts shard s's statistics into the model.
    func load(_ s: Int) {
        var o = 0
        for b in buffers { b.value.data.update(from: values[s], offset: o, count: b.value.count); o += b.value.count }
        for (c, v) in zip(counters, counts[s]) { c.value = v }
    }

    /// Keeps the model's statistics as shard s's.
    func store(_ s: Int) {
        var o = 0
        for b in buffers {
            for i in 0..<b.value.count { values[s][o + i] = b.value.data[i] }
            o += b.value.count
        }
        counts[s] = counters.map(\.value)
    }

    /// Every shard's statistics become their mean (also put into the model): what the ranks hold
    /// after averaging their buffers.
    func average() {
        let n = values.count
        var mean = [Float](repeating: 0, count: values[0].count)
        for v in values { for i in mean.indices { mean[i] += v[i] } }
        for i in mean.indices { mean[i] /= Float(n) }
        for s in 0..<n { values[s] = mean }
        load(0)
    }

    /// Replaces every shard's statistics with the model's (after a checkpoint is loaded).
    func reset() {
        for s in 0..<values.count { store(s) }
    }
}

extension UnsafeMutablePointer where Pointee == Float {
    fileprivate func update(from array: [Float], offset: Int, count: Int) {
        array.withUnsafeBufferPointer { self.update(from: $0.baseAddress! + offset, count: count) }
    }
}
