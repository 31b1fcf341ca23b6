import AFA
import Dispatch
import Foundation

/// The work of one segmentation request without the network: decode the JPEG/PNG bytes, segment
/// through the `Segmenter`'s bounded queue, encode the label PNG. `concurrency` callers keep requests
/// going (as a load generator's connections would) until `requests` are done. The figure the example
/// server's throughput is compared with (`make bench-server`).
public enum SegmentBenchmark {
    public struct Result: Codable, Sendable {
        public var requests: Int
        public var concurrency: Int
        public var seconds: Double
        public var requestsPerSecond: Double
        public var p50Ms: Double
        public var p99Ms: Double
        enum CodingKeys: String, CodingKey {
            case requests, concurrency, seconds, requestsPerSecond = "requests_per_s", p50Ms = "p50_ms", p99Ms = "p99_ms"
        }
    }

    final class Latencies: @unchecked Sendable {
        private let lock = NSLock()
        private var values: [Double] = []
        private var next = 0
        func take(limit: Int) -> Bool { lock.lock(); defer { lock.unlock() }; next += 1; return next <= limit }
        func add(_ v: Double) { lock.lock(); values.append(v); lock.unlock() }
        var sorted: [Double] { lock.lock(); defer { lock.unlock() }; return values.sorted() }
    }

    public static func run(segmenter: Segmenter, images: [Data], options: SegmentationOptions, concurrency: Int,
                           requests: Int, warmup: Int = 10) async throws -> Result {
        func one(_ data: Data) throws {
            let img = try ImageCodec.decodeRGB(data, maxPixels: segmenter.limits.maxPixels)
            _ = try ImageCodec.encodeLabelPNG(try segmenter.segment(img, options: options).labels)
        }
        for i in 0..<warmup { try one(images[i % images.count]) }
        let lat = Latencies()
        let start = DispatchTime.now().uptimeNanoseconds
        try await withThrowingTaskGroup(of: Void.self) { group in
            for c in 0..<concurrency {
                group.addTask {
                    var n = c
                    while lat.take(limit: requests) {
                        let t0 = DispatchTime.now().uptimeNanoseconds
                        let img = try ImageCodec.decodeRGB(images[n % images.count], maxPixels: segmenter.limits.maxPixels)
                        let r = try await segmenter.segment(img, options: options)
                        _ = try ImageCodec.encodeLabelPNG(r.labels)
                        lat.add(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
                        n += concurrency
                    }
                }
            }
            try await group.waitForAll()
        }
        let secs = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        let s = lat.sorted
        func pct(_ p: Double) -> Double { s.isEmpty ? 0 : s[min(s.count - 1, Int(p * Double(s.count)))] }
        return Result(requests: s.count, concurrency: concurrency, seconds: secs, requestsPerSecond: Double(s.count) / secs,
                      p50Ms: pct(0.5), p99Ms: pct(0.99))
    }
}
