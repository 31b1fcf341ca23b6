import AFA
import Foundation
import Hummingbird
import HummingbirdCore

/// `POST /v1/segment`, `GET /v1/model` and `GET /health`.
///
/// Every input is checked before it reaches the model: the content type (415), the body size (413,
/// from Content-Length first, then while reading), the query (400), the image header's declared size
/// (413, before decoding), the image itself (400 with the decoder's message); a full inference queue
/// answers 503 with Retry-After.
struct SegmentController: Sendable {
    typealias Context = AFARequestContext
    static let imageTypes: Set<String> = ["image/jpeg", "image/jpg", "image/png"]

    let engine: Segmenter
    let config: ServerConfig
    let model: ModelInfo

    func addRoutes(to router: Router<Context>) {
        router.post("/v1/segment", use: segment)
        router.get("/v1/model") { _, _ in model }
        router.get("/health") { _, _ in Health(status: "ok") }
    }

    @Sendable func segment(request: Request, context: Context) async throws -> Response {
        let type = request.headers[.contentType]?.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        guard let type, Self.imageTypes.contains(type) else {
            throw HTTPError(.unsupportedMediaType,
                            message: "Content-Type '\(type ?? "none")' is not supported: send the image as image/jpeg or image/png")
        }
        let (options, format) = try Self.parseQuery(request.uri.queryParameters)
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > config.maxBodyBytes {
            throw bodyTooLarge()
        }
        var request = request
        let body: ByteBuffer
        do { body = try await request.collectBody(upTo: config.maxBodyBytes) } catch let e as any HTTPResponseError where e.status == .contentTooLarge {
            throw bodyTooLarge()
        }
        let image: RGBImage
        do {
            image = try ImageCodec.decodeRGB(Data(body.readableBytesView), path: "request body", maxPixels: config.maxPixels)
        } catch let ImageIOError.tooLarge(_, w, h, limit) {
            throw HTTPError(.contentTooLarge, message: "image of \(w)×\(h) pixels is over the limit of \(limit) pixels (--max-pixels)")
        } catch let e as ImageIOError {
            throw HTTPError(.badRequest, message: e.description)
        }
        let result: Segmentation
        do {
            result = try await engine.segment(image, options: options)
        } catch SegmenterError.busy(let queued) {
            throw HTTPError(.serviceUnavailable, headers: [.retryAfter: "1"],
                            message: "busy: every inference slot is taken and \(queued) requests are queued; retry later")
        } catch SegmenterError.invalidArgument(let m) {
            throw HTTPError(.badRequest, message: m)
        } catch let e as SegmenterError {   // imageTooLarge: a pass at one of the scales is over the limit
            throw HTTPError(.contentTooLarge, message: e.description + " (--max-pixels)")
        }
        switch format {
        case .png:
            let png = try ImageCodec.encodeLabelPNG(result.labels)
            return Response(status: .ok, headers: [.contentType: "image/png"], body: .init(byteBuffer: ByteBuffer(bytes: png)))
        case .json:
            let names = engine.classNames
            let summary = SegmentSummary(
                width: result.labels.width, height: result.labels.height,
                classes: result.classShares.map { .init(index: $0.classIndex, name: names[$0.classIndex], share: $0.share) },
                classProbabilities: Dictionary(uniqueKeysWithValues: result.classProbabilities.enumerated().map { (names[$0.offset + 1], Double($0.element)) }))
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            return Response(status: .ok, headers: [.contentType: "application/json"],
                            body: .init(byteBuffer: ByteBuffer(bytes: try encoder.encode(summary))))
        }
    }

    func bodyTooLarge() -> HTTPError {
        HTTPError(.contentTooLarge, message: "request body is over the limit of \(config.maxBodyBytes) bytes (--max-body-mb)")
    }

    enum Format: String { case png, json }

    /// `scales` (comma-separated, or `authors` for 1,0.5,0.75), `flip` and `crf` (1/0, true/false; `crf`
    /// refines the labels with the dense CRF at the authors' parameters), `format` (png/json).
    static func parseQuery(_ q: FlatDictionary<Substring, Substring>) throws -> (SegmentationOptions, Format) {
        var options = SegmentationOptions()
        if q["scales"] == "authors" {
            options.scales = SegmentationOptions.authors.scales
        } else if let s = q["scales"] {
            let parts = s.split(separator: ",", omittingEmptySubsequences: false).map { Double($0.trimmingCharacters(in: .whitespaces)) }
            guard !parts.isEmpty, parts.allSatisfy({ $0 != nil }) else {
                throw HTTPError(.badRequest, message: "scales: expected numbers separated by commas, got '\(s)'")
            }
            options.scales = parts.map { $0! }
        }
        if let f = q["flip"] { options.flip = try flag("flip", f) }
        if let c = q["crf"] { options.crf = try flag("crf", c) ? .authors : nil }
        var format = Format.png
        if let f = q["format"] {
            guard let v = Format(rawValue: String(f).lowercased()) else {
                throw HTTPError(.badRequest, message: "format: expected png or json, got '\(f)'")
            }
            format = v
        }
        do { try options.validate() } catch let e as SegmenterError { throw HTTPError(.badRequest, message: e.description) }
        return (options, format)
    }

    static func flag(_ name: String, _ v: Substring) throws -> Bool {
        switch v.lowercased() {
        case "1", "true", "yes": return true
        case "0", "false", "no": return false
        default: throw HTTPError(.badRequest, message: "\(name): expected 1 or 0, got '\(v)'")
        }
    }
}

struct Health: ResponseCodable { var status: String }

/// The JSON answer of `POST /v1/segment?format=json`.
struct SegmentSummary: Codable {
    struct ClassShare: Codable { var index: Int; var name: String; var share: Double }
    var width: Int
    var height: Int
    /// The classes present in the label map, with their share of the pixels.
    var classes: [ClassShare]
    /// The classifier's probability of each foreground class being in the image.
    var classProbabilities: [String: Double]

    enum CodingKeys: String, CodingKey { case width, height, classes, classProbabilities = "class_probabilities" }
}

/// `GET /v1/model`.
public struct ModelInfo: ResponseCodable, Sendable {
    public struct Limits: Codable, Sendable {
        var maxPixels: Int, maxBodyBytes: Int, maxConcurrency: Int, maxQueue: Int
        var contentTypes: [String]
        enum CodingKeys: String, CodingKey {
            case maxPixels = "max_pixels", maxBodyBytes = "max_body_bytes", maxConcurrency = "max_concurrency",
                 maxQueue = "max_queue", contentTypes = "content_types"
        }
    }
    var preset: String
    var classNames: [String]
    var limits: Limits
    var checkpointSHA256: String
    var afaVersion: String

    enum CodingKeys: String, CodingKey {
        case preset, classNames = "class_names", limits, checkpointSHA256 = "checkpoint_sha256", afaVersion = "afa_version"
    }
}
