import Dispatch
import Foundation
import Synchronization

/// Work splitting for the element-wise and reduction kernels.
///
/// Chunk boundaries depend only on the problem size and the grain, never on the number of workers
/// or on scheduling, so a parallel reduction that combines its per-chunk partials in chunk order is
/// bit-identical from run to run and for any worker count.
public enum Parallel {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var _workers = max(ProcessInfo.processInfo.activeProcessorCount, 1)

    /// Number of Swift worker threads a parallel loop started on this thread uses: the process-wide
    /// count (`Runtime.setThreads`), or less inside `withWorkers` (a server running several requests
    /// at once gives each a share of the cores).
    public static var workers: Int {
        if let local = pthread_getspecific(workersKey) { return min(Int(bitPattern: local), globalWorkers) }
        return globalWorkers
    }

    /// The process-wide worker count.
    public static var globalWorkers: Int {
        lock.lock(); defer { lock.unlock() }
        return _workers
    }

    /// Runs `body` with at most `n` workers for the parallel loops and products started on this thread.
    public static func withWorkers<T>(_ n: Int, _ body: () throws -> T) rethrows -> T {
        let before = pthread_getspecific(workersKey)
        pthread_setspecific(workersKey, UnsafeRawPointer(bitPattern: max(n, 1)))
        defer { pthread_setspecific(workersKey, before) }
        return try body()
    }

    private static let workersKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    static func setWorkers(_ n: Int) {
        lock.lock(); _workers = max(n, 1); lock.unlock()
    }

    /// Runs `body(i)` for i in 0..<count, spreading the indices over the workers; with one worker it
    /// runs inline. A worker takes the next index whenever it is free, so one the OS holds up (a shared
    /// machine steals cycles) does not keep the others waiting at the end of the loop. Which worker runs
    /// an index never enters a result: bodies write disjoint outputs per index.
    public static func forEach(_ count: Int, _ body: (Int) -> Void) {
        forEach(count, slots: count) { _, i in body(i) }
    }

    /// How many workers a loop of `count` indices started here would use: the number of scratch
    /// blocks to give `forEach(_:slots:_:)`.
    public static func slotCount(_ count: Int) -> Int {
        isInsideParallelRegion ? 1 : max(1, min(workers, count))
    }

    /// `forEach` for bodies that work in per-worker scratch: `body(slot, i)` also gets the slot of the
    /// worker running it, in 0..<slots, and no two indices run in the same slot at once. At most `slots`
    /// workers run (pass `slotCount(count)` to use all there are).
    public static func forEach(_ count: Int, slots: Int, _ body: (_ slot: Int, _ index: Int) -> Void) {
        let w = min(slotCount(count), max(slots, 1))
        if w <= 1 {
            for i in 0..<count { body(0, i) }
            return
        }
        let next = Atomic<Int>(0)
        withoutActuallyEscaping(body) { body in
            DispatchQueue.concurrentPerform(iterations: w) { slot in
                let outer = isInsideParallelRegion
                setInsideParallelRegion(true)
                while true {
                    let i = next.wrappingAdd(1, ordering: .relaxed).oldValue
                    if i >= count { break }
                    body(slot, i)
                }
                setInsideParallelRegion(outer)
            }
        }
    }

    /// Per-thread flag: set while a thread runs the body of a parallel loop, so that nested loops
    /// and GEMMs issued from inside run serially instead of oversubscribing the cores.
    private static let regionKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    public static var isInsideParallelRegion: Bool { pthread_getspecific(regionKey) != nil }

    static func setInsideParallelRegion(_ inside: Bool) {
        pthread_setspecific(regionKey, inside ? UnsafeRawPointer(bitPattern: 1) : nil)
    }

    /// Number of chunks of `grain` elements needed for `count` elements.
    @inline(__always) public static func chunkCount(_ count: Int, grain: Int) -> Int {
        count <= 0 ? 0 : (count + grain - 1) / grain
    }

    /// Splits 0..<count into fixed chunks of `grain` elements and runs `body` on each (in parallel).
    public static func forChunks(_ count: Int, grain: Int, _ body: (Range<Int>) -> Void) {
        let chunks = chunkCount(count, grain: grain)
        forEach(chunks) { c in
            let lo = c * grain
            body(lo..<min(lo + grain, count))
        }
    }

    /// Deterministic parallel sum: each fixed chunk returns a partial, partials are added in order.
    public static func sum(_ count: Int, grain: Int, _ partial: (Range<Int>) -> Double) -> Double {
        let chunks = chunkCount(count, grain: grain)
        if chunks == 0 { return 0 }
        var partials = [Double](repeating: 0, count: chunks)
        partials.withUnsafeMutableBufferPointer { p in
            let base = p.baseAddress!
            forEach(chunks) { c in
                let lo = c * grain
                base[c] = partial(lo..<min(lo + grain, count))
            }
        }
        var total = 0.0
        for v in partials { total += v }
        return total
    }
}
