import AFA
@testable import AFAServer
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import XCTest

/// Every route and every status of the server, in process (`.router`) and once over a socket (`.live`).
final class ServerTests: XCTestCase {
    static let classNames = ["background", "disc", "square", "ring"]

    /// A tiny model with fixed random weights (what the answers are does not matter here, only that
    /// the server returns exactly what the library computes).
    static func engine(maxConcurrent: Int = 2, maxQueued: Int = 8, maxPixels: Int = 1 << 20) throws -> Segmenter {
        let recipe = try TrainRecipe.defaults(preset: "tiny", numClasses: 4, iterations: 10)
        let model = try AFAModel(config: recipe.model)
        model.initialize(seed: 1, linearStd: 0.2)
        return Segmenter(model: model, recipe: recipe, classNames: classNames, limits: InferenceLimits(maxPixels: maxPixels),
                         maxConcurrent: maxConcurrent, maxQueued: maxQueued)
    }

    static func picture(width: Int = 48, height: Int = 40) -> RGBImage {
        var img = RGBImage(width: width, height: height)
        for y in 0..<height { for x in 0..<width {
            let inside = x > width / 4 && x < width / 2 && y > height / 4 && y < 3 * height / 4
            img.pixels[(y * width + x) * 3] = inside ? 230 : UInt8(x * 4 % 256)
            img.pixels[(y * width + x) * 3 + 1] = UInt8(y * 5 % 256)
            img.pixels[(y * width + x) * 3 + 2] = inside ? 20 : 128
        } }
        return img
    }

    /// A checkpoint file of the tiny model (seed 2) in the temporary folder; the caller removes it.
    static func checkpointFile() throws -> String {
        let recipe = try TrainRecipe.defaults(preset: "tiny", numClasses: 4, iterations: 10)
        let model = try AFAModel(config: recipe.model)
        model.initialize(seed: 2)
        let data = try Checkpoint.encode(model: model, optimizer: PolyWarmupAdamW(model: model, config: recipe.train), rng: RNG(seed: 0),
                                         recipe: recipe, classNames: classNames, iteration: 0)
        let path = NSTemporaryDirectory() + "afa-server-\(UUID().uuidString).safetensors"
        try data.write(to: URL(fileURLWithPath: path))
        return path
    }

    func app(_ engine: Segmenter, config: ServerConfig = ServerConfig(checkpoint: "in-memory"), metrics: ServerMetrics = ServerMetrics()) -> some ApplicationProtocol {
        Application(router: buildRouter(engine: engine, config: config, checkpointSHA256: "0123", metrics: metrics))
    }

    func testHealthAndModel() async throws {
        try await app(try Self.engine()).test(.router) { client in
            try await client.execute(uri: "/health", method: .get) { r in
                XCTAssertEqual(r.status, .ok)
                XCTAssertEqual(String(buffer: r.body), #"{"status":"ok"}"#)
            }
            try await client.execute(uri: "/v1/model", method: .get) { r in
                XCTAssertEqual(r.status, .ok)
                let obj = try JSONSerialization.jsonObject(with: Data(r.body.readableBytesView)) as! [String: Any]
                XCTAssertEqual(obj["preset"] as? String, "tiny")
                XCTAssertEqual(obj["class_names"] as? [String], Self.classNames)
                XCTAssertEqual(obj["checkpoint_sha256"] as? String, "0123")
                let limits = obj["limits"] as! [String: Any]
                XCTAssertEqual(limits["max_pixels"] as? Int, InferenceLimits().maxPixels)
                XCTAssertEqual(limits["max_concurrency"] as? Int, 2)
                XCTAssertEqual(limits["content_types"] as? [String], ["image/jpeg", "image/jpg", "image/png"])
            }
            try await client.execute(uri: "/nowhere", method: .get) { XCTAssertEqual($0.status, .notFound) }
        }
    }

    func testSegmentReturnsTheLibrarysLabelPNGAndJSON() async throws {
        let engine = try Self.engine()
        let img = Self.picture()
        let png = try ImageCodec.encodePNG(img), jpg = try ImageCodec.encodeJPEG(img, quality: 95)
        let expected = try await engine.segment(img, options: SegmentationOptions(scales: [1, 0.75]))
        let expectedJPEG = try await engine.segment(try ImageCodec.decodeRGB(jpg))
        let expectedCRF = try await engine.segment(img, options: SegmentationOptions(scales: [1, 0.5, 0.75], crf: .authors))
        let dir = NSTemporaryDirectory() + "afa-server-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await app(engine).test(.router) { client in
            try await client.execute(uri: "/v1/segment?scales=1,0.75&flip=1", method: .post, headers: [.contentType: "image/png"],
                                     body: ByteBuffer(bytes: png)) { r in
                XCTAssertEqual(r.status, .ok)
                XCTAssertEqual(r.headers[.contentType], "image/png")
                try Data(r.body.readableBytesView).write(to: URL(fileURLWithPath: dir + "/label.png"))
                XCTAssertEqual(try ImageCodec.readLabels(dir + "/label.png"), expected.labels)
            }
            try await client.execute(uri: "/v1/segment?scales=authors&crf=1", method: .post, headers: [.contentType: "image/png"],
                                     body: ByteBuffer(bytes: png)) { r in
                XCTAssertEqual(r.status, .ok)
                try Data(r.body.readableBytesView).write(to: URL(fileURLWithPath: dir + "/label-crf.png"))
                XCTAssertEqual(try ImageCodec.readLabels(dir + "/label-crf.png"), expectedCRF.labels)
            }
            try await client.execute(uri: "/v1/segment?format=json", method: .post, headers: [.contentType: "image/jpeg"],
                                     body: ByteBuffer(bytes: jpg)) { r in
                XCTAssertEqual(r.status, .ok)
                XCTAssertEqual(r.headers[.contentType], "application/json")
                let obj = try JSONSerialization.jsonObject(with: Data(r.body.readableBytesView)) as! [String: Any]
                XCTAssertEqual(obj["width"] as? Int, 48)
                XCTAssertEqual(obj["height"] as? Int, 40)
                let classes = obj["classes"] as! [[String: Any]]
                XCTAssertEqual(classes.map { $0["index"] as! Int }, expectedJPEG.classShares.map(\.classIndex))
                XCTAssertEqual(classes.map { $0["share"] as! Double }.reduce(0, +), 1, accuracy: 1e-9)
                let probs = obj["class_probabilities"] as! [String: Double]
                XCTAssertEqual(Set(probs.keys), ["disc", "square", "ring"])
                XCTAssertEqual(probs["disc"]!, Double(expectedJPEG.classProbabilities[0]), accuracy: 1e-6)
            }
        }
    }

    func testBadInputGetsTheRightStatusAndSaysWhy() async throws {
        var config = ServerConfig(checkpoint: "in-memory")
        config.maxBodyBytes = 4000
        config.maxPixels = 1000
        let img = Self.picture()   // 48×40 = 1920 pixels
        let png = try ImageCodec.encodePNG(img)
        let small = try ImageCodec.encodePNG(Self.picture(width: 30, height: 20))
        try await app(try Self.engine(), config: config).test(.router) { client in
            func expect(_ status: HTTPResponse.Status, _ needle: String, uri: String = "/v1/segment", type: String = "image/png",
                        body: [UInt8], line: UInt = #line) async throws {
                try await client.execute(uri: uri, method: .post, headers: [.contentType: type], body: ByteBuffer(bytes: body)) { r in
                    XCTAssertEqual(r.status, status, line: line)
                    guard status != .ok else { return }
                    // Hummingbird's error body: {"error": {"message": …}}
                    let obj = try JSONSerialization.jsonObject(with: Data(r.body.readableBytesView)) as? [String: [String: String]]
                    let message = obj?["error"]?["message"] ?? ""
                    XCTAssertTrue(message.contains(needle), "'\(message)' lacks '\(needle)'", line: line)
                }
            }
            try await expect(.unsupportedMediaType, "image/jpeg or image/png", type: "text/plain", body: Array("hello".utf8))
            try await expect(.contentTooLarge, "over the limit of 4000 bytes", body: [UInt8](repeating: 1, count: 5000))
            try await expect(.contentTooLarge, "over the limit of 1000 pixels", body: [UInt8](png))
            try await expect(.badRequest, "corrupt or truncated PNG", body: [UInt8](small.prefix(small.count / 2)))
            try await expect(.badRequest, "neither PNG nor JPEG", body: Array("not an image at all".utf8))
            try await expect(.badRequest, "scales", uri: "/v1/segment?scales=abc", body: [UInt8](small))
            try await expect(.badRequest, "scales", uri: "/v1/segment?scales=0", body: [UInt8](small))
            try await expect(.badRequest, "scales", uri: "/v1/segment?scales=1,,2", body: [UInt8](small))
            try await expect(.badRequest, "format", uri: "/v1/segment?format=gif", body: [UInt8](small))
            try await expect(.badRequest, "flip", uri: "/v1/segment?flip=maybe", body: [UInt8](small))
            try await expect(.badRequest, "crf", uri: "/v1/segment?crf=2", body: [UInt8](small))
            try await expect(.ok, "", body: [UInt8](small))
        }
    }

    func testFullQueueAnswers503WithRetryAfter() async throws {
        let engine = try Self.engine(maxConcurrent: 1, maxQueued: 0)
        let gate = DispatchSemaphore(value: 0), started = DispatchSemaphore(value: 0)
        let blocker = Task { try await engine.queue.run { started.signal(); gate.wait() } }
        started.wait()
        let png = try ImageCodec.encodePNG(Self.picture())
        try await app(engine).test(.router) { client in
            try await client.execute(uri: "/v1/segment", method: .post, headers: [.contentType: "image/png"], body: ByteBuffer(bytes: png)) { r in
                XCTAssertEqual(r.status, .serviceUnavailable)
                XCTAssertEqual(r.headers[.retryAfter], "1")
                XCTAssertTrue(String(buffer: r.body).contains("busy"), String(buffer: r.body))
            }
            gate.signal()
            try await blocker.value
            try await client.execute(uri: "/v1/segment", method: .post, headers: [.contentType: "image/png"], body: ByteBuffer(bytes: png)) { r in
                XCTAssertEqual(r.status, .ok)
            }
        }
    }

    func testMetricsCountRequestsByStatusWithLatencyAndQueue() async throws {
        let metrics = ServerMetrics()
        let png = try ImageCodec.encodePNG(Self.picture())
        try await app(try Self.engine(), metrics: metrics).test(.router) { client in
            for _ in 0..<2 {
                try await client.execute(uri: "/v1/segment", method: .post, headers: [.contentType: "image/png"], body: ByteBuffer(bytes: png))
            }
            try await client.execute(uri: "/v1/segment", method: .post, headers: [.contentType: "text/plain"], body: ByteBuffer(string: "x"))
            try await client.execute(uri: "/metrics", method: .get) { r in
                XCTAssertEqual(r.status, .ok)
                let text = String(buffer: r.body)
                for line in [#"afa_http_requests_total{route="/v1/segment",method="POST",status="200"} 2"#,
                             #"afa_http_requests_total{route="/v1/segment",method="POST",status="415"} 1"#,
                             #"afa_http_request_duration_seconds_count{route="/v1/segment"} 3"#,
                             "afa_inference_in_flight 0", "afa_inference_queue_length 0"] {
                    XCTAssertTrue(text.contains(line), "metrics lack \(line):\n\(text)")
                }
                XCTAssertTrue(text.contains("afa_http_request_duration_seconds_bucket"), text)
            }
        }
    }

    /// The real application, loaded from a checkpoint file, over a socket.
    func testLiveServerFromACheckpointFile() async throws {
        let path = try Self.checkpointFile()
        defer { try? FileManager.default.removeItem(atPath: path) }
        var config = ServerConfig(checkpoint: path)
        config.port = 0
        let app = try buildApplication(config: config, logger: Logger(label: "test"))
        let png = try ImageCodec.encodePNG(Self.picture())
        let expected = try await Segmenter(checkpoint: path).segment(Self.picture())
        try await app.test(.live) { client in
            try await client.execute(uri: "/v1/segment?format=json", method: .post, headers: [.contentType: "image/png"],
                                     body: ByteBuffer(bytes: png)) { r in
                XCTAssertEqual(r.status, .ok)
                let obj = try JSONSerialization.jsonObject(with: Data(r.body.readableBytesView)) as! [String: Any]
                XCTAssertEqual((obj["classes"] as! [[String: Any]]).map { $0["index"] as! Int }, expected.classShares.map(\.classIndex))
            }
            try await client.execute(uri: "/v1/model", method: .get) { r in
                let obj = try JSONSerialization.jsonObject(with: Data(r.body.readableBytesView)) as! [String: Any]
                XCTAssertEqual((obj["checkpoint_sha256"] as? String)?.count, 64)
            }
        }
    }
}
